// Latent codec (kvtier/kernels/latent.h): PCA fitting, basis serialization and the kLatent
// payload. CPU only. Payload header and checksums follow the codecs' format v1
// (codecs/format.h); the body is documented in docs/FORMAT.md, "latent".
#include "kvtier/kernels/latent.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "codecs/format.h"
#include "codecs/geometry.h"
#include "codecs/limits.h"
#include "codecs/numeric.h"
#include "kvtier/common/crc32c.h"
#include "kvtier/common/status.h"

namespace kvtier::kernels {
namespace {

constexpr uint32_t kBasisMagic = 0x424C564Bu;  // "KVLB"
constexpr uint16_t kBasisVersion = 1;
constexpr size_t kBasisHeader = 48;
constexpr size_t kBodyPrefix = 16;

uint32_t Streams(const KvLayout& l) {
  return l.kind == LayoutKind::kMha ? l.num_layers * 2 * l.num_kv_heads : l.num_layers;
}

float LoadElem(const void* base, size_t i, DType dt) {
  switch (dt) {
    case DType::kFloat16:
      return internal::HalfToFloat(static_cast<const uint16_t*>(base)[i]);
    case DType::kBFloat16:
      return internal::Bf16ToFloat(static_cast<const uint16_t*>(base)[i]);
    default:
      return static_cast<const float*>(base)[i];
  }
}

void StoreElem(char* p, float v, DType dt) {
  if (dt == DType::kFloat32) {
    std::memcpy(p, &v, 4);
    return;
  }
  const uint16_t h = dt == DType::kFloat16 ? internal::FloatToHalf(v) : internal::FloatToBf16(v);
  std::memcpy(p, &h, 2);
}

template <typename T>
void Put(std::vector<uint8_t>* out, T v) {
  const size_t at = out->size();
  out->resize(at + sizeof(T));
  std::memcpy(out->data() + at, &v, sizeof(T));
}

template <typename T>
T Get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

uint64_t Fnv1a64(const uint8_t* p, size_t n) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001B3ull;
  }
  return h;
}

// Symmetric eigendecomposition by cyclic Jacobi rotations: a (n x n, destroyed) -> eigenvalues
// w and eigenvectors as the columns of v.
void Jacobi(std::vector<double>& a, uint32_t n, std::vector<double>* w, std::vector<double>* v) {
  v->assign(size_t{n} * n, 0.0);
  for (uint32_t i = 0; i < n; ++i) (*v)[size_t{i} * n + i] = 1.0;
  auto A = [&](uint32_t i, uint32_t j) -> double& { return a[size_t{i} * n + j]; };
  double scale = 0;
  for (uint32_t i = 0; i < n; ++i) scale += A(i, i) * A(i, i);
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (uint32_t i = 0; i < n; ++i)
      for (uint32_t j = i + 1; j < n; ++j) off += A(i, j) * A(i, j);
    if (off <= 1e-26 * std::max(scale, 1e-300)) break;
    for (uint32_t p = 0; p < n; ++p) {
      for (uint32_t q = p + 1; q < n; ++q) {
        const double apq = A(p, q);
        if (std::fabs(apq) < 1e-300) continue;
        const double theta = (A(q, q) - A(p, p)) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (uint32_t k = 0; k < n; ++k) {
          const double akp = A(k, p), akq = A(k, q);
          A(k, p) = c * akp - s * akq;
          A(k, q) = s * akp + c * akq;
        }
        for (uint32_t k = 0; k < n; ++k) {
          const double apk = A(p, k), aqk = A(q, k);
          A(p, k) = c * apk - s * aqk;
          A(q, k) = s * apk + c * aqk;
        }
        for (uint32_t k = 0; k < n; ++k) {
          double& vkp = (*v)[size_t{k} * n + p];
          double& vkq = (*v)[size_t{k} * n + q];
          const double x = vkp, y = vkq;
          vkp = c * x - s * y;
          vkq = s * x + c * y;
        }
      }
    }
  }
  w->resize(n);
  for (uint32_t i = 0; i < n; ++i) (*w)[i] = A(i, i);
}

absl::Status CheckChunk(const ChunkInput& c, const KvLayout& layout) {
  if (c.space != MemorySpace::kHost) {
    return absl::InvalidArgumentError("latent: chunks must be in host memory");
  }
  if (c.data == nullptr || c.num_tokens == 0) {
    return absl::InvalidArgumentError("latent: empty chunk");
  }
  if (c.layout != layout) {
    return absl::InvalidArgumentError(absl::StrCat("latent: chunk layout ", c.layout.DebugString(),
                                                   " differs from ", layout.DebugString()));
  }
  return absl::OkStatus();
}

}  // namespace

const float* LatentBasis::Mean(uint32_t stream) const {
  return data_.data() + size_t{stream} * (size_t{rank_} + 1) * dim_;
}
const float* LatentBasis::Components(uint32_t stream) const { return Mean(stream) + dim_; }

void LatentBasis::Finish() {
  const auto bytes = Serialize();
  id_ = Fnv1a64(bytes.data(), bytes.size());
}

std::vector<uint8_t> LatentBasis::Serialize() const {
  std::vector<uint8_t> out;
  out.reserve(kBasisHeader + data_.size() * 4 + 4);
  Put<uint32_t>(&out, kBasisMagic);
  Put<uint16_t>(&out, kBasisVersion);
  Put<uint8_t>(&out, static_cast<uint8_t>(layout_.kind));
  Put<uint8_t>(&out, static_cast<uint8_t>(layout_.dtype));
  Put<uint32_t>(&out, layout_.num_layers);
  Put<uint32_t>(&out, layout_.num_kv_heads);
  Put<uint32_t>(&out, layout_.num_query_heads);
  Put<uint32_t>(&out, layout_.head_dim);
  Put<uint32_t>(&out, layout_.latent_dim);
  Put<uint32_t>(&out, layout_.rope_dim);
  Put<uint32_t>(&out, rank_);
  Put<uint32_t>(&out, dim_);
  Put<uint32_t>(&out, streams_);
  Put<uint32_t>(&out, 0);  // reserved
  for (float f : data_) Put<float>(&out, f);
  Put<uint32_t>(&out, Crc32c(out.data(), out.size()));
  return out;
}

absl::StatusOr<LatentBasis> LatentBasis::Deserialize(absl::Span<const uint8_t> b) {
  if (b.size() < kBasisHeader + 4) return absl::InvalidArgumentError("latent basis: truncated");
  if (Get<uint32_t>(b.data()) != kBasisMagic) {
    return absl::InvalidArgumentError("latent basis: bad magic");
  }
  if (Get<uint16_t>(b.data() + 4) != kBasisVersion) {
    return absl::UnimplementedError("latent basis: unknown version");
  }
  LatentBasis basis;
  KvLayout& l = basis.layout_;
  l.kind = static_cast<LayoutKind>(b[6]);
  l.dtype = static_cast<DType>(b[7]);
  l.num_layers = Get<uint32_t>(b.data() + 8);
  l.num_kv_heads = Get<uint32_t>(b.data() + 12);
  l.num_query_heads = Get<uint32_t>(b.data() + 16);
  l.head_dim = Get<uint32_t>(b.data() + 20);
  l.latent_dim = Get<uint32_t>(b.data() + 24);
  l.rope_dim = Get<uint32_t>(b.data() + 28);
  KVTIER_RETURN_IF_ERROR(l.Validate());
  basis.rank_ = Get<uint32_t>(b.data() + 32);
  basis.dim_ = Get<uint32_t>(b.data() + 36);
  basis.streams_ = Get<uint32_t>(b.data() + 40);
  if (basis.dim_ != l.VectorDim() || basis.streams_ != Streams(l) || basis.rank_ == 0 ||
      basis.rank_ > basis.dim_) {
    return absl::InvalidArgumentError("latent basis: sizes do not match its layout");
  }
  const uint64_t floats = uint64_t{basis.streams_} * (uint64_t{basis.rank_} + 1) * basis.dim_;
  if (b.size() != kBasisHeader + floats * 4 + 4) {
    return absl::InvalidArgumentError("latent basis: wrong size");
  }
  if (Crc32c(b.data(), b.size() - 4) != Get<uint32_t>(b.data() + b.size() - 4)) {
    return absl::DataLossError("latent basis: checksum mismatch");
  }
  basis.data_.resize(floats);
  std::memcpy(basis.data_.data(), b.data() + kBasisHeader, floats * 4);
  basis.Finish();
  return basis;
}

absl::StatusOr<LatentBasis> FitLatentBasis(absl::Span<const ChunkInput> calibration,
                                           const KvLayout& layout, uint32_t rank) {
  KVTIER_RETURN_IF_ERROR(layout.Validate());
  const uint32_t D = layout.VectorDim(), S = Streams(layout);
  if (rank == 0 || rank > D) {
    return absl::InvalidArgumentError(absl::StrCat("latent: rank ", rank, " not in [1, ", D, "]"));
  }
  if (calibration.empty()) return absl::InvalidArgumentError("latent: no calibration chunks");
  for (const auto& c : calibration) KVTIER_RETURN_IF_ERROR(CheckChunk(c, layout));
  LatentBasis basis;
  basis.layout_ = layout;
  basis.rank_ = rank;
  basis.dim_ = D;
  basis.streams_ = S;
  basis.data_.assign(size_t{S} * (rank + 1) * D, 0.0f);
  std::vector<double> mean(D), cov(size_t{D} * D), x(D), w, v;
  for (uint32_t s = 0; s < S; ++s) {
    std::fill(mean.begin(), mean.end(), 0.0);
    std::fill(cov.begin(), cov.end(), 0.0);
    double n = 0;
    for (const auto& c : calibration) {
      for (uint32_t t = 0; t < c.num_tokens; ++t) {
        const size_t base = (size_t{s} * c.num_tokens + t) * D;
        for (uint32_t d = 0; d < D; ++d) mean[d] += LoadElem(c.data, base + d, layout.dtype);
      }
      n += c.num_tokens;
    }
    for (auto& m : mean) m /= n;
    for (const auto& c : calibration) {
      for (uint32_t t = 0; t < c.num_tokens; ++t) {
        const size_t base = (size_t{s} * c.num_tokens + t) * D;
        for (uint32_t d = 0; d < D; ++d) x[d] = LoadElem(c.data, base + d, layout.dtype) - mean[d];
        for (uint32_t i = 0; i < D; ++i) {
          for (uint32_t j = i; j < D; ++j) cov[size_t{i} * D + j] += x[i] * x[j];
        }
      }
    }
    for (uint32_t i = 0; i < D; ++i) {
      for (uint32_t j = i; j < D; ++j) cov[size_t{j} * D + i] = cov[size_t{i} * D + j] /= n;
    }
    Jacobi(cov, D, &w, &v);
    std::vector<uint32_t> order(D);
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return w[a] > w[b]; });
    float* out = basis.data_.data() + size_t{s} * (rank + 1) * D;
    for (uint32_t d = 0; d < D; ++d) out[d] = static_cast<float>(mean[d]);
    for (uint32_t r = 0; r < rank; ++r) {
      const uint32_t col = order[r];
      // Sign convention: the largest-magnitude entry is positive (a deterministic basis).
      uint32_t arg = 0;
      for (uint32_t d = 1; d < D; ++d) {
        if (std::fabs(v[size_t{d} * D + col]) > std::fabs(v[size_t{arg} * D + col])) arg = d;
      }
      const double sign = v[size_t{arg} * D + col] < 0 ? -1.0 : 1.0;
      for (uint32_t d = 0; d < D; ++d) {
        out[size_t{r + 1} * D + d] = static_cast<float>(sign * v[size_t{d} * D + col]);
      }
    }
  }
  basis.Finish();
  return basis;
}

namespace {

KvLayout CoefficientLayout(uint32_t streams, uint32_t rank) {
  return KvLayout::Mla(streams, rank, 0, DType::kFloat16);
}

absl::StatusOr<CodecParams> InnerParams(LatentCoefficients c, uint32_t rank) {
  CodecParams p;
  switch (c) {
    case LatentCoefficients::kFp8:
      p.id = CodecId::kFp8;
      return p;
    case LatentCoefficients::kKivi2:
    case LatentCoefficients::kKivi4:
      if (rank % 32 != 0) {
        return absl::InvalidArgumentError("latent: kivi coefficients need rank % 32 == 0");
      }
      p.id = CodecId::kKivi;
      p.bits = c == LatentCoefficients::kKivi2 ? 2 : 4;
      p.group_size = 32;
      return p;
    default:
      return absl::InvalidArgumentError("latent: not an inner-codec coefficient kind");
  }
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> EncodeLatent(const LatentBasis& basis,
                                                  const ChunkInput& chunk,
                                                  LatentCoefficients coefficients) {
  if (basis.rank() == 0) return absl::InvalidArgumentError("latent: empty basis");
  KVTIER_RETURN_IF_ERROR(CheckChunk(chunk, basis.layout()));
  if (chunk.num_tokens > internal::kMaxTokens) {
    return absl::InvalidArgumentError("latent: too many tokens");
  }
  if (static_cast<uint8_t>(coefficients) > static_cast<uint8_t>(LatentCoefficients::kKivi4)) {
    return absl::InvalidArgumentError("latent: unknown coefficient kind");
  }
  const KvLayout& layout = basis.layout();
  const uint32_t D = basis.dim(), R = basis.rank(), S = basis.num_streams(), T = chunk.num_tokens;
  std::vector<float> coef(size_t{S} * T * R);
  std::vector<double> x(D);
  for (uint32_t s = 0; s < S; ++s) {
    const float* mean = basis.Mean(s);
    const float* comp = basis.Components(s);
    for (uint32_t t = 0; t < T; ++t) {
      const size_t base = (size_t{s} * T + t) * D;
      for (uint32_t d = 0; d < D; ++d) x[d] = double(LoadElem(chunk.data, base + d, layout.dtype)) - mean[d];
      for (uint32_t r = 0; r < R; ++r) {
        double acc = 0;
        for (uint32_t d = 0; d < D; ++d) acc += x[d] * comp[size_t{r} * D + d];
        coef[(size_t{s} * T + t) * R + r] = static_cast<float>(acc);
      }
    }
  }
  std::vector<uint8_t> body;
  Put<uint64_t>(&body, basis.id());
  Put<uint32_t>(&body, R);
  Put<uint8_t>(&body, static_cast<uint8_t>(coefficients));
  Put<uint8_t>(&body, 0);
  Put<uint16_t>(&body, 0);
  if (coefficients == LatentCoefficients::kFp32) {
    for (float f : coef) Put<float>(&body, f);
  } else {
    std::vector<uint16_t> half(coef.size());
    for (size_t i = 0; i < coef.size(); ++i) half[i] = internal::FloatToHalfSaturate(coef[i]);
    if (coefficients == LatentCoefficients::kFp16) {
      for (uint16_t h : half) Put<uint16_t>(&body, h);
    } else {
      KVTIER_ASSIGN_OR_RETURN(CodecParams inner, InnerParams(coefficients, R));
      ChunkInput in;
      in.data = half.data();
      in.layout = CoefficientLayout(S, R);
      in.num_tokens = T;
      std::vector<uint8_t> payload;
      KVTIER_RETURN_IF_ERROR(Encode(inner, in, &payload));
      body.insert(body.end(), payload.begin(), payload.end());
    }
  }
  internal::HeaderFields h;
  h.codec.id = CodecId::kLatent;
  h.layout = layout;
  h.num_tokens = T;
  h.first_position = chunk.first_position;
  h.ends_sequence = chunk.ends_sequence;
  h.body_bytes = body.size();
  h.body_crc = Crc32c(body.data(), body.size());
  std::vector<uint8_t> out(internal::kHeaderSize + body.size());
  internal::WriteHeader(h, out.data());
  std::memcpy(out.data() + internal::kHeaderSize, body.data(), body.size());
  return out;
}

absl::Status DecodeLatent(const LatentBasis& basis, absl::Span<const uint8_t> payload,
                          const DecodeTarget& target) {
  KVTIER_ASSIGN_OR_RETURN(internal::HeaderFields h, internal::ParseHeader(payload));
  if (h.codec.id != CodecId::kLatent) {
    return absl::InvalidArgumentError(
        absl::StrCat("latent: payload holds codec ", CodecName(h.codec.id), ", not latent"));
  }
  if (payload.size() != internal::kHeaderSize + h.body_bytes) {
    return absl::InvalidArgumentError("latent: payload size differs from its header");
  }
  const uint8_t* body = payload.data() + internal::kHeaderSize;
  if (Crc32c(body, h.body_bytes) != h.body_crc) {
    return absl::DataLossError("latent: body checksum mismatch");
  }
  if (h.body_bytes < kBodyPrefix) return absl::InvalidArgumentError("latent: body truncated");
  const uint64_t id = Get<uint64_t>(body);
  if (id != basis.id()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "latent: payload was encoded with basis ", absl::Hex(id), ", not ", absl::Hex(basis.id())));
  }
  if (h.layout != basis.layout()) {
    return absl::FailedPreconditionError("latent: payload layout differs from the basis's");
  }
  const uint32_t R = Get<uint32_t>(body + 8);
  const uint8_t kind = body[12];
  if (R != basis.rank() || kind > static_cast<uint8_t>(LatentCoefficients::kKivi4) ||
      body[13] != 0 || Get<uint16_t>(body + 14) != 0) {
    return absl::InvalidArgumentError("latent: bad body prefix");
  }
  if (target.space != MemorySpace::kHost) {
    return absl::InvalidArgumentError("latent: decodes into host memory only");
  }
  if (target.dtype != h.layout.dtype || target.layer_base.size() != h.layout.num_layers ||
      (target.block_table != nullptr && target.block_size == 0)) {
    return absl::InvalidArgumentError("latent: decode target does not match the layout");
  }
  for (void* p : target.layer_base) {
    if (p == nullptr) return absl::InvalidArgumentError("latent: null layer base");
  }
  const uint32_t D = basis.dim(), S = basis.num_streams(), T = h.num_tokens;
  const size_t n = size_t{S} * T * R;
  const uint8_t* c = body + kBodyPrefix;
  const size_t left = h.body_bytes - kBodyPrefix;
  std::vector<float> coef(n);
  const auto lk = static_cast<LatentCoefficients>(kind);
  if (lk == LatentCoefficients::kFp32 || lk == LatentCoefficients::kFp16) {
    const size_t es = lk == LatentCoefficients::kFp32 ? 4 : 2;
    if (left != n * es) return absl::InvalidArgumentError("latent: coefficient section size");
    for (size_t i = 0; i < n; ++i) {
      coef[i] = es == 4 ? Get<float>(c + 4 * i) : internal::HalfToFloat(Get<uint16_t>(c + 2 * i));
    }
  } else {
    KVTIER_ASSIGN_OR_RETURN(CodecParams inner, InnerParams(lk, R));
    const auto inner_payload = absl::MakeConstSpan(c, left);
    KVTIER_ASSIGN_OR_RETURN(PayloadInfo info, InspectPayload(inner_payload));
    if (info.codec != inner || info.layout != CoefficientLayout(S, R) || info.num_tokens != T) {
      return absl::InvalidArgumentError("latent: inner coefficient payload does not match");
    }
    std::vector<uint16_t> half(n);
    KVTIER_RETURN_IF_ERROR(Decode(inner_payload,
                                  DecodeTarget::Contiguous(half.data(), info.layout, T)));
    for (size_t i = 0; i < n; ++i) coef[i] = internal::HalfToFloat(half[i]);
  }
  internal::TargetView view;
  std::vector<char*> bases(target.layer_base.size());
  for (size_t i = 0; i < bases.size(); ++i) bases[i] = static_cast<char*>(target.layer_base[i]);
  view.layer_base = bases.data();
  view.stride_kv = target.stride_kv;
  view.stride_head = target.stride_head;
  view.stride_token = target.stride_token;
  view.block_table = target.block_table;
  view.block_size = target.block_size;
  view.stride_block = target.stride_block;
  const bool mha = h.layout.kind == LayoutKind::kMha;
  const uint32_t heads = mha ? h.layout.num_kv_heads : 1;
  const size_t es = DTypeSize(h.layout.dtype);
  for (uint32_t s = 0; s < S; ++s) {
    const float* mean = basis.Mean(s);
    const float* comp = basis.Components(s);
    const uint32_t layer = mha ? s / (2 * heads) : s;
    const uint32_t kv = mha ? (s / heads) % 2 : 0;
    const uint32_t head = mha ? s % heads : 0;
    for (uint32_t t = 0; t < T; ++t) {
      const float* cf = &coef[(size_t{s} * T + t) * R];
      char* row = view.Row(layer, kv, head, t);
      for (uint32_t d = 0; d < D; ++d) {
        double acc = mean[d];
        for (uint32_t r = 0; r < R; ++r) acc += double(cf[r]) * comp[size_t{r} * D + d];
        StoreElem(row + d * es, static_cast<float>(acc), h.layout.dtype);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace kvtier::kernels
