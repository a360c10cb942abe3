#include "rpc_util.h"

#include <random>

#include "kvtier/common/crc32c.h"

namespace kvtier::rpc {

void Prepare(grpc::ClientContext* ctx, const CallSettings& call) {
  if (!call.token.empty()) ctx->AddMetadata("authorization", "Bearer " + call.token);
  if (call.timeout) ctx->set_deadline(std::chrono::system_clock::now() + *call.timeout);
}

v1::Layout MhaLayout(uint32_t layers, uint32_t kv_heads, uint32_t query_heads, uint32_t head_dim,
                     v1::DType dtype) {
  v1::Layout l;
  l.set_kind(v1::Layout::KIND_MHA);
  l.set_dtype(dtype);
  l.set_num_layers(layers);
  l.set_num_kv_heads(kv_heads);
  l.set_num_query_heads(query_heads);
  l.set_head_dim(head_dim);
  return l;
}

uint64_t TensorBytes(const v1::Layout& l, uint32_t tokens) {
  uint64_t elem = l.dtype() == v1::DTYPE_FP32 ? 4 : 2;
  uint64_t per_token = l.kind() == v1::Layout::KIND_MLA
                           ? uint64_t{l.num_layers()} * (l.latent_dim() + l.rope_dim())
                           : uint64_t{2} * l.num_layers() * l.num_kv_heads() * l.head_dim();
  return per_token * elem * tokens;
}

std::string SyntheticFp16(uint64_t bytes, uint64_t seed) {
  std::string out(bytes, '\0');
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  for (uint64_t i = 0; i + 1 < bytes; i += 2) {
    uint64_t r = rng();
    // sign | exponent 10..20 (2^-5 .. 2^5) | 10 random mantissa bits: always finite.
    uint16_t h = static_cast<uint16_t>(((r >> 20) & 1) << 15 | (10 + (r >> 8) % 11) << 10 |
                                       (r & 0x3FF));
    out[i] = static_cast<char>(h & 0xFF);
    out[i + 1] = static_cast<char>(h >> 8);
  }
  return out;
}

std::string SeedKey(uint64_t seed) {
  std::string k(32, '\0');
  std::mt19937_64 rng(seed ^ 0x6b7674696572ull);
  for (int i = 0; i < 4; ++i) {
    uint64_t v = rng();
    for (int b = 0; b < 8; ++b) k[i * 8 + b] = static_cast<char>((v >> (8 * b)) & 0xFF);
  }
  return k;
}

uint32_t Crc32c(const std::string& data) { return kvtier::Crc32c(data.data(), data.size()); }

PutOutcome Put(v1::KvTier::Stub* stub, const std::string& ns, const std::string& key,
               const std::string& data, v1::DataFormat format, uint32_t num_tokens,
               const CallSettings& call) {
  PutOutcome out;
  grpc::ClientContext ctx;
  Prepare(&ctx, call);
  auto writer = stub->Put(&ctx, &out.response);
  v1::PutRequest msg;
  v1::PutHeader* h = msg.mutable_header();
  h->set_namespace_(ns);
  h->set_key(key);
  h->set_format(format);
  h->set_num_tokens(num_tokens);
  h->set_total_bytes(data.size());
  h->set_crc32c(Crc32c(data));
  size_t off = 0;
  const size_t step = call.message_bytes;
  bool ok = true;
  do {
    size_t n = std::min(step, data.size() - off);
    if (data.size() - off - n < step / 16) n = data.size() - off;  // no tiny trailing message
    msg.set_data(data.data() + off, n);
    if (!writer->Write(msg)) {
      ok = false;
      break;
    }
    msg.clear_header();
    off += n;
  } while (off < data.size());
  if (ok) writer->WritesDone();
  out.status = writer->Finish();
  return out;
}

GetOutcome Get(v1::KvTier::Stub* stub, const std::string& ns, const std::string& key,
               v1::DataFormat format, const CallSettings& call, uint64_t release_lease) {
  GetOutcome out;
  grpc::ClientContext ctx;
  Prepare(&ctx, call);
  v1::GetRequest req;
  req.set_namespace_(ns);
  req.set_key(key);
  req.set_format(format);
  req.set_release_lease_id(release_lease);
  auto reader = stub->Get(&ctx, req);
  v1::GetResponse msg;
  bool first = true;
  while (reader->Read(&msg)) {
    if (first) {
      out.header = msg.header();
      first = false;
      if (msg.data().size() == out.header.total_bytes()) {
        out.data.swap(*msg.mutable_data());  // the whole value in one message: no copy
        continue;
      }
      out.data.reserve(out.header.total_bytes());
    }
    out.data.append(msg.data());
  }
  out.status = reader->Finish();
  out.crc_ok = out.status.ok() && out.data.size() == out.header.total_bytes() &&
               Crc32c(out.data) == out.header.crc32c();
  return out;
}

}  // namespace kvtier::rpc
