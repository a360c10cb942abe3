// Compacted-context payload (docs/FORMAT.md, "## compacted context"): outer header + per-layer
// positions and inner codec payloads, all through the public codec API.
#include "kvtier/kernels/compacted.h"

#include <cstring>
#include <string>

#include <fmt/format.h>

#include "kvtier/common/crc32c.h"
#include "kvtier/common/status.h"

namespace kvtier::kernels {
namespace {

constexpr uint32_t kMagic = 0x4354564Bu;  // bytes "KVTC"
constexpr uint16_t kVersion = 1;
constexpr size_t kFixedHeader = 64;  // fields before kept_per_layer
constexpr uint32_t kFlagEndsSequence = 1u << 0;
constexpr uint32_t kMaxLayers = 4096;      // also enforced by KvLayout::Validate()
constexpr uint32_t kMaxCodecText = 1024;

absl::Status Invalid(const std::string& m) { return absl::InvalidArgumentError("compacted: " + m); }

template <typename T>
void Put(std::vector<uint8_t>* out, size_t at, T v) {  // little-endian hosts only (x86, arm64)
  std::memcpy(out->data() + at, &v, sizeof(T));
}
template <typename T>
T Get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

KvLayout LayerLayout(const KvLayout& l) {
  return KvLayout::Mha(1, l.num_kv_heads, l.num_query_heads, l.head_dim, l.dtype);
}

struct ParsedHeader {
  CompactedInfo info;
  absl::Span<const uint8_t> body;
};

absl::StatusOr<ParsedHeader> ParseAndVerify(absl::Span<const uint8_t> p) {
  if (p.size() < kFixedHeader + 4) {
    return Invalid(fmt::format("payload of {} bytes is shorter than a header", p.size()));
  }
  if (Get<uint32_t>(p.data()) != kMagic) return Invalid("bad magic (not a compacted payload)");
  ParsedHeader out;
  CompactedInfo& info = out.info;
  info.format_version = Get<uint16_t>(p.data() + 4);
  if (info.format_version > kVersion) {
    return absl::UnimplementedError(
        fmt::format("compacted: format version {} is newer than {}", info.format_version, kVersion));
  }
  if (info.format_version == 0) return Invalid("format version 0");
  const uint32_t header_bytes = Get<uint32_t>(p.data() + 8);
  const uint32_t num_layers = Get<uint32_t>(p.data() + 20);
  const uint16_t text_len = Get<uint16_t>(p.data() + 60);
  if (num_layers == 0 || num_layers > kMaxLayers) {
    return Invalid(fmt::format("{} layers", num_layers));
  }
  if (text_len == 0 || text_len > kMaxCodecText) {
    return Invalid(fmt::format("inner codec text of {} bytes", text_len));
  }
  const size_t expect_header = kFixedHeader + 4 * size_t(num_layers) + text_len + 4;
  if (header_bytes != expect_header) {
    return Invalid(fmt::format("header size {} but its fields need {}", header_bytes,
                               expect_header));
  }
  if (p.size() < header_bytes) {
    return Invalid(fmt::format("payload of {} bytes is shorter than its {}-byte header", p.size(),
                               header_bytes));
  }
  const uint32_t header_crc = Get<uint32_t>(p.data() + header_bytes - 4);
  if (Crc32c(p.data(), header_bytes - 4) != header_crc) {
    return absl::DataLossError("compacted: header checksum mismatch");
  }
  const uint16_t reserved16 = Get<uint16_t>(p.data() + 6);
  const uint32_t flags = Get<uint32_t>(p.data() + 12);
  const uint8_t kind = p[16];
  const uint8_t dtype = p[17];
  const uint16_t reserved2 = Get<uint16_t>(p.data() + 18);
  const uint16_t reserved3 = Get<uint16_t>(p.data() + 62);
  if (reserved16 != 0 || reserved2 != 0 || reserved3 != 0) return Invalid("reserved bytes set");
  if (flags & ~kFlagEndsSequence) return Invalid(fmt::format("unknown flags 0x{:x}", flags));
  if (kind != static_cast<uint8_t>(LayoutKind::kMha)) return Invalid("layout is not MHA/GQA");
  info.layout = KvLayout::Mha(num_layers, Get<uint32_t>(p.data() + 24),
                              Get<uint32_t>(p.data() + 28), Get<uint32_t>(p.data() + 32),
                              static_cast<DType>(dtype));
  KVTIER_RETURN_IF_ERROR(info.layout.Validate());
  info.source_tokens = Get<uint32_t>(p.data() + 36);
  info.first_position = Get<uint64_t>(p.data() + 40);
  info.ends_sequence = flags & kFlagEndsSequence;
  const uint64_t body_bytes = Get<uint64_t>(p.data() + 48);
  const uint32_t body_crc = Get<uint32_t>(p.data() + 56);
  if (info.source_tokens == 0) return Invalid("zero source tokens");
  for (uint32_t l = 0; l < num_layers; ++l) {
    const uint32_t k = Get<uint32_t>(p.data() + kFixedHeader + 4 * size_t(l));
    if (k > info.source_tokens) {
      return Invalid(fmt::format("layer {} keeps {} of {} tokens", l, k, info.source_tokens));
    }
    info.kept_per_layer.push_back(k);
  }
  const char* text = reinterpret_cast<const char*>(p.data() + kFixedHeader + 4 * size_t(num_layers));
  KVTIER_ASSIGN_OR_RETURN(info.inner_codec, CodecParams::Parse(std::string(text, text_len)));
  if (info.inner_codec.id == CodecId::kCompacted || info.inner_codec.id == CodecId::kLatent) {
    return Invalid(fmt::format("inner codec {} is not allowed", CodecName(info.inner_codec.id)));
  }
  if (p.size() - header_bytes != body_bytes) {
    return Invalid(fmt::format("body is {} bytes, header says {}", p.size() - header_bytes,
                               body_bytes));
  }
  out.body = p.subspan(header_bytes);
  if (Crc32c(out.body.data(), out.body.size()) != body_crc) {
    return absl::DataLossError("compacted: body checksum mismatch");
  }
  info.header_bytes = header_bytes;
  info.body_bytes = body_bytes;
  return out;
}

}  // namespace

bool IsCompactedPayload(absl::Span<const uint8_t> payload) {
  return payload.size() >= 4 && Get<uint32_t>(payload.data()) == kMagic;
}

absl::Status EncodeCompacted(const CodecParams& inner, const CompactedSource& source,
                             const Selection& selection, std::vector<uint8_t>* payload) {
  if (payload == nullptr) return Invalid("null payload");
  if (source.kv == nullptr) return Invalid("source kv is null");
  KVTIER_RETURN_IF_ERROR(inner.Validate());
  if (inner.id == CodecId::kCompacted || inner.id == CodecId::kLatent) {
    return Invalid(fmt::format("inner codec {} is not allowed", CodecName(inner.id)));
  }
  const KvLayout& layout = source.layout;
  KVTIER_RETURN_IF_ERROR(layout.Validate());
  if (layout.kind != LayoutKind::kMha) return Invalid("only MHA/GQA layouts can be compacted");
  KVTIER_RETURN_IF_ERROR(selection.Validate());
  if (selection.num_layers != layout.num_layers || selection.num_kv_heads != layout.num_kv_heads ||
      selection.num_tokens != source.num_tokens) {
    return Invalid(fmt::format("selection ({} layers, {} KV heads, {} tokens) does not match the "
                               "source ({} layers, {} KV heads, {} tokens)", selection.num_layers,
                               selection.num_kv_heads, selection.num_tokens, layout.num_layers,
                               layout.num_kv_heads, source.num_tokens));
  }
  const std::string text = inner.ToString();
  if (text.empty() || text.size() > kMaxCodecText) return Invalid("inner codec text too long");

  const uint32_t L = layout.num_layers, H = layout.num_kv_heads, D = layout.head_dim;
  const size_t es = DTypeSize(layout.dtype), vec = size_t(D) * es, T = source.num_tokens;
  const KvLayout one = LayerLayout(layout);
  const auto* src = static_cast<const uint8_t*>(source.kv);
  const size_t src_layer = 2 * size_t(H) * T * vec;

  std::vector<uint8_t> body;
  std::vector<uint8_t> gathered, inner_payload;
  for (uint32_t l = 0; l < L; ++l) {
    const uint32_t k = selection.kept_per_layer[l];
    const size_t at = body.size();
    body.resize(at + 4 * size_t(H) * k);
    for (uint32_t h = 0; h < H; ++h) {
      auto kept = selection.Kept(l, h);
      std::memcpy(body.data() + at + 4 * size_t(h) * k, kept.data(), 4 * size_t(k));
    }
    uint64_t inner_bytes = 0;
    inner_payload.clear();
    if (k > 0) {
      gathered.resize(2 * size_t(H) * k * vec);
      for (uint32_t kv = 0; kv < 2; ++kv) {
        for (uint32_t h = 0; h < H; ++h) {
          auto kept = selection.Kept(l, h);
          const uint8_t* from = src + l * src_layer + (size_t(kv) * H + h) * T * vec;
          uint8_t* to = gathered.data() + (size_t(kv) * H + h) * k * vec;
          for (uint32_t i = 0; i < k; ++i) std::memcpy(to + i * vec, from + kept[i] * vec, vec);
        }
      }
      ChunkInput in;
      in.data = gathered.data();
      in.space = MemorySpace::kHost;
      in.layout = one;
      in.num_tokens = k;
      in.first_position = source.first_position;
      in.ends_sequence = source.ends_sequence;
      KVTIER_RETURN_IF_ERROR(Encode(inner, in, &inner_payload));
      inner_bytes = inner_payload.size();
    }
    const size_t at2 = body.size();
    body.resize(at2 + 8 + inner_payload.size());
    std::memcpy(body.data() + at2, &inner_bytes, 8);
    if (!inner_payload.empty()) {
      std::memcpy(body.data() + at2 + 8, inner_payload.data(), inner_payload.size());
    }
  }

  const size_t header_bytes = kFixedHeader + 4 * size_t(L) + text.size() + 4;
  payload->assign(header_bytes, 0);
  Put<uint32_t>(payload, 0, kMagic);
  Put<uint16_t>(payload, 4, kVersion);
  Put<uint32_t>(payload, 8, static_cast<uint32_t>(header_bytes));
  Put<uint32_t>(payload, 12, source.ends_sequence ? kFlagEndsSequence : 0u);
  (*payload)[16] = static_cast<uint8_t>(layout.kind);
  (*payload)[17] = static_cast<uint8_t>(layout.dtype);
  Put<uint32_t>(payload, 20, L);
  Put<uint32_t>(payload, 24, H);
  Put<uint32_t>(payload, 28, layout.num_query_heads);
  Put<uint32_t>(payload, 32, D);
  Put<uint32_t>(payload, 36, source.num_tokens);
  Put<uint64_t>(payload, 40, source.first_position);
  Put<uint64_t>(payload, 48, body.size());
  Put<uint32_t>(payload, 56, Crc32c(body.data(), body.size()));
  Put<uint16_t>(payload, 60, static_cast<uint16_t>(text.size()));
  for (uint32_t l = 0; l < L; ++l) Put<uint32_t>(payload, kFixedHeader + 4 * l, selection.kept_per_layer[l]);
  std::memcpy(payload->data() + kFixedHeader + 4 * size_t(L), text.data(), text.size());
  Put<uint32_t>(payload, header_bytes - 4, Crc32c(payload->data(), header_bytes - 4));
  payload->insert(payload->end(), body.begin(), body.end());
  return absl::OkStatus();
}

absl::StatusOr<CompactedInfo> InspectCompacted(absl::Span<const uint8_t> payload) {
  KVTIER_ASSIGN_OR_RETURN(ParsedHeader h, ParseAndVerify(payload));
  return h.info;
}

size_t CompactedContext::LayerOffset(uint32_t layer) const {
  const size_t vec = size_t(info.layout.head_dim) * DTypeSize(info.layout.dtype);
  size_t off = 0;
  for (uint32_t l = 0; l < layer; ++l) {
    off += 2 * size_t(info.layout.num_kv_heads) * info.kept_per_layer[l] * vec;
  }
  return off;
}

const uint8_t* CompactedContext::Vector(uint32_t layer, uint32_t kv_index, uint32_t kv_head,
                                        uint32_t i) const {
  const size_t vec = size_t(info.layout.head_dim) * DTypeSize(info.layout.dtype);
  const size_t k = info.kept_per_layer[layer];
  return kv.data() + LayerOffset(layer) +
         ((size_t(kv_index) * info.layout.num_kv_heads + kv_head) * k + i) * vec;
}

absl::StatusOr<CompactedContext> DecodeCompacted(absl::Span<const uint8_t> payload) {
  KVTIER_ASSIGN_OR_RETURN(ParsedHeader h, ParseAndVerify(payload));
  CompactedContext out;
  out.info = std::move(h.info);
  const CompactedInfo& info = out.info;
  const uint32_t L = info.layout.num_layers, H = info.layout.num_kv_heads;
  const size_t vec = size_t(info.layout.head_dim) * DTypeSize(info.layout.dtype);
  out.selection.num_layers = L;
  out.selection.num_kv_heads = H;
  out.selection.num_tokens = info.source_tokens;
  out.selection.kept_per_layer = info.kept_per_layer;
  size_t total_kept = 0;
  for (uint32_t k : info.kept_per_layer) total_kept += size_t(k) * H;
  // Bound allocations by what the body holds: every kept position takes 4 body bytes, and the
  // K/V buffer grows layer by layer only after that layer's inner payload validated (its size
  // then matches its declared token count).
  if (total_kept * 4 > h.body.size()) return Invalid("kept counts exceed the body");
  out.selection.positions.resize(total_kept);
  const KvLayout one = LayerLayout(info.layout);
  size_t at = 0, pos_at = 0;
  for (uint32_t l = 0; l < L; ++l) {
    const uint32_t k = info.kept_per_layer[l];
    const size_t pos_bytes = 4 * size_t(H) * k;
    if (h.body.size() - at < pos_bytes + 8) {
      return Invalid(fmt::format("body ends inside layer {}", l));
    }
    std::memcpy(out.selection.positions.data() + pos_at, h.body.data() + at, pos_bytes);
    pos_at += size_t(H) * k;
    at += pos_bytes;
    const uint64_t inner_bytes = Get<uint64_t>(h.body.data() + at);
    at += 8;
    if (inner_bytes > h.body.size() - at) {
      return Invalid(fmt::format("layer {}: inner payload of {} bytes overruns the body", l,
                                 inner_bytes));
    }
    if (k == 0) {
      if (inner_bytes != 0) return Invalid(fmt::format("layer {}: data for zero tokens", l));
      continue;
    }
    auto inner = h.body.subspan(at, inner_bytes);
    at += inner_bytes;
    KVTIER_ASSIGN_OR_RETURN(PayloadInfo pi, InspectPayload(inner));
    if (pi.layout != one || pi.num_tokens != k || !(pi.codec == info.inner_codec)) {
      return Invalid(fmt::format("layer {}: inner payload ({}, {} tokens, {}) does not match the "
                                 "header ({}, {} tokens, {})", l, pi.layout.DebugString(),
                                 pi.num_tokens, pi.codec.ToString(), one.DebugString(), k,
                                 info.inner_codec.ToString()));
    }
    const size_t layer_at = out.kv.size();
    out.kv.resize(layer_at + 2 * size_t(k) * H * vec);
    KVTIER_RETURN_IF_ERROR(
        Decode(inner, DecodeTarget::Contiguous(out.kv.data() + layer_at, one, k)));
  }
  if (at != h.body.size()) {
    return Invalid(fmt::format("{} trailing body bytes", h.body.size() - at));
  }
  KVTIER_RETURN_IF_ERROR(out.selection.Validate());
  return out;
}

}  // namespace kvtier::kernels
