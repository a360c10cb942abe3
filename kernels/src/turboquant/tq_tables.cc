// TurboQuant tables (codebooks, rotations, QJL matrix) and the canonical per-vector arithmetic.
// Built with -ffp-contract=off (sources.cmake): the CUDA kernels reproduce these operations with
// __fadd_rn/__fmul_rn, so no multiply-add may be fused here either.
#include "turboquant/tq_tables.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "codecs/numeric.h"

namespace kvtier::kernels {

using internal::TqTables;

absl::Status TurboQuantVectorParams::Validate() const {
  if (dim < 8 || dim > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("turboquant: dim ", dim, " not in [8, 4096]"));
  }
  if (bits < 1 || bits > 4) {
    return absl::InvalidArgumentError(absl::StrCat("turboquant: bits ", bits, " not in [1, 4]"));
  }
  if (variant != TurboQuantVariant::kMse && variant != TurboQuantVariant::kProd) {
    return absl::InvalidArgumentError("turboquant: unknown variant");
  }
  if (rotation != TurboQuantRotation::kHadamard && rotation != TurboQuantRotation::kDense) {
    return absl::InvalidArgumentError("turboquant: unknown rotation");
  }
  if (part > 1) return absl::InvalidArgumentError("turboquant: part must be 0 or 1");
  if (qjl != TurboQuantQjl::kGaussian && qjl != TurboQuantQjl::kHadamard) {
    return absl::InvalidArgumentError("turboquant: unknown qjl projection");
  }
  if (qjl != TurboQuantQjl::kGaussian && variant != TurboQuantVariant::kProd) {
    return absl::InvalidArgumentError("turboquant: qjl applies to variant=prod only");
  }
  if (matrix != TurboQuantMatrix::kFloat && matrix != TurboQuantMatrix::kFixed) {
    return absl::InvalidArgumentError("turboquant: unknown matrix arithmetic");
  }
  if (matrix == TurboQuantMatrix::kFixed && !TurboQuantUsesMatrix(variant, rotation, qjl)) {
    return absl::InvalidArgumentError(
        "turboquant: matrix=fixed needs rotation=dense or variant=prod with qjl=gaussian");
  }
  return absl::OkStatus();
}

namespace {

// N(0,1) Lloyd-Max levels (positive half), ALGORITHMS.md: the starting point of the iteration.
const double kGaussianLevels[4][8] = {
    {0.7979},
    {0.4528, 1.5104},
    {0.2451, 0.7560, 1.3439, 2.1519},
    {0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326}};

// Unnormalized density of one coordinate of a uniform unit vector in R^dim, using only
// correctly rounded operations (so every build computes the same codebook).
double CoordinateDensity(double x, uint32_t dim) {
  const double s = 1.0 - x * x;
  if (s <= 0) return 0;
  const uint32_t e2 = dim - 3;  // exponent * 2
  double p = 1.0, base = s;
  for (uint32_t k = e2 / 2; k > 0; k >>= 1) {
    if (k & 1) p *= base;
    base *= base;
  }
  if (e2 & 1) p *= std::sqrt(s);
  return p;
}

std::shared_ptr<const TurboQuantCodebook> ComputeCodebook(uint32_t dim, uint8_t bits) {
  const int levels = 1 << bits;
  // Midpoint grid over the support that carries any mass in double precision.
  const int n = 1 << 20;
  const double a = std::min(1.0, 12.0 / std::sqrt(static_cast<double>(dim)));
  const double h = 2 * a / n;
  std::vector<double> xs(n), cw(n + 1, 0.0), cxw(n + 1, 0.0);
  for (int i = 0; i < n; ++i) {
    xs[i] = -a + (i + 0.5) * h;
    const double w = CoordinateDensity(xs[i], dim);
    cw[i + 1] = cw[i] + w;
    cxw[i + 1] = cxw[i] + w * xs[i];
  }
  std::vector<double> c(levels);
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(dim));
  for (int k = 0; k < levels / 2; ++k) {
    c[levels / 2 + k] = std::min(0.95, kGaussianLevels[bits - 1][k] * inv_sqrt_d);
    c[levels / 2 - 1 - k] = -c[levels / 2 + k];
  }
  // First grid index whose point is >= t.
  auto first_at_or_above = [&](double t) {
    return static_cast<int>(std::lower_bound(xs.begin(), xs.end(), t) - xs.begin());
  };
  for (int iter = 0; iter < 5000; ++iter) {
    double change = 0;
    std::vector<double> next(levels);
    int lo = 0;
    for (int k = 0; k < levels; ++k) {
      const int hi = k + 1 < levels ? first_at_or_above(0.5 * (c[k] + c[k + 1])) : n;
      const double w = cw[hi] - cw[lo];
      next[k] = w > 0 ? (cxw[hi] - cxw[lo]) / w : c[k];
      lo = hi;
    }
    for (int k = 0; k < levels / 2; ++k) {  // keep exact symmetry
      const double m = 0.5 * (next[levels - 1 - k] - next[k]);
      next[k] = -m;
      next[levels - 1 - k] = m;
    }
    for (int k = 0; k < levels; ++k) change = std::max(change, std::fabs(next[k] - c[k]));
    c = next;
    if (change < 1e-13 * inv_sqrt_d) break;
  }
  auto cb = std::make_shared<TurboQuantCodebook>();
  cb->dim = dim;
  cb->bits = bits;
  for (int k = 0; k < levels; ++k) cb->centroids.push_back(static_cast<float>(c[k]));
  for (int k = 0; k + 1 < levels; ++k) {
    cb->boundaries.push_back(static_cast<float>(0.5 * (c[k] + c[k + 1])));
  }
  double err = 0, mass = 0;
  for (int i = 0; i < n; ++i) {
    const double w = cw[i + 1] - cw[i];
    int k = 0;
    while (k + 1 < levels && xs[i] >= 0.5 * (c[k] + c[k + 1])) ++k;
    err += w * (xs[i] - c[k]) * (xs[i] - c[k]);
    mass += w;
  }
  cb->expected_distortion = dim * err / mass;
  return cb;
}

// Gaussian stream: Box-Muller over SplitMix64 draws, in double (docs/FORMAT.md).
class GaussianStream {
 public:
  explicit GaussianStream(uint64_t state) : rng_(state) {}
  double Next() {
    if (have_) {
      have_ = false;
      return spare_;
    }
    const double u1 = (static_cast<double>(rng_.Next() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(rng_.Next() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double t = 2.0 * M_PI * u2;
    spare_ = r * std::sin(t);
    have_ = true;
    return r * std::cos(t);
  }

 private:
  internal::SplitMix64 rng_;
  bool have_ = false;
  double spare_ = 0;
};

// `rounds` repetitions of the window layout of dim d (docs/FORMAT.md), signs drawn in order
// from one SplitMix64 stream. Window scale 1/sqrt(len), or 1 (`unscaled`: the QJL chain, whose
// multiplies by 1 are exact no-ops; its single scale is folded into qjl_scale).
std::vector<internal::TqHadamardWindow> HadamardChain(uint32_t d, uint32_t rounds, uint64_t state,
                                                      bool unscaled = false) {
  internal::SplitMix64 rng(state);
  uint32_t len = 1;
  while (len * 2 <= d) len *= 2;
  std::vector<uint32_t> layout = {0};
  if (len != d) layout = {0, d - len, 0};
  std::vector<internal::TqHadamardWindow> chain;
  for (uint32_t round = 0; round < rounds; ++round) {
    for (uint32_t off : layout) {
      internal::TqHadamardWindow w;
      w.offset = off;
      w.len = len;
      w.scale = unscaled ? 1.0f : static_cast<float>(1.0 / std::sqrt(static_cast<double>(len)));
      uint64_t word = 0;
      for (uint32_t i = 0; i < len; ++i) {
        if (i % 64 == 0) word = rng.Next();
        w.signs.push_back(((word >> (i % 64)) & 1) ? -1.0f : 1.0f);
      }
      chain.push_back(std::move(w));
    }
  }
  return chain;
}

// E|u_1| for u uniform on the unit sphere of R^n: m_1 = 1, m_2 = 2/pi, m_{n+2} = m_n n/(n+1)
// (ratios of Gamma functions), in double with +, *, / only.
double SphereAbsMean(uint32_t n) {
  double m = (n % 2) ? 1.0 : 2.0 / M_PI;
  for (uint32_t k = (n % 2) ? 1 : 2; k + 2 <= n; k += 2) m = m * k / (k + 1);
  return m;
}

std::shared_ptr<const TqTables> BuildTables(const TurboQuantVectorParams& p,
                                            const TurboQuantCodebook* cb) {
  auto t = std::make_shared<TqTables>();
  t->params = p;
  t->dim = p.dim;
  t->prod = p.variant == TurboQuantVariant::kProd;
  t->mse_bits = t->prod ? p.bits - 1 : p.bits;
  if (cb != nullptr) {
    t->centroids = cb->centroids;
    t->boundaries = cb->boundaries;
  }
  const uint32_t d = p.dim;
  if (p.rotation == TurboQuantRotation::kHadamard) {
    t->windows = HadamardChain(d, 1, internal::TqStreamState(
                                         p.seed, internal::TqStream::kHadamardSigns, d, p.part));
  } else {
    GaussianStream g(internal::TqStreamState(p.seed, internal::TqStream::kDenseRotation, d, p.part));
    std::vector<double> m(static_cast<size_t>(d) * d);
    for (auto& v : m) v = g.Next();
    // Gram-Schmidt over rows, twice per row for stability: rows become a Haar-random
    // orthonormal basis (the Q factor of a Gaussian matrix with positive R diagonal).
    for (uint32_t i = 0; i < d; ++i) {
      double* r = &m[static_cast<size_t>(i) * d];
      for (int pass = 0; pass < 2; ++pass) {
        for (uint32_t j = 0; j < i; ++j) {
          const double* q = &m[static_cast<size_t>(j) * d];
          double dot = 0;
          for (uint32_t k = 0; k < d; ++k) dot += r[k] * q[k];
          for (uint32_t k = 0; k < d; ++k) r[k] -= dot * q[k];
        }
      }
      double nn = 0;
      for (uint32_t k = 0; k < d; ++k) nn += r[k] * r[k];
      const double inv = 1.0 / std::sqrt(nn);
      for (uint32_t k = 0; k < d; ++k) r[k] *= inv;
    }
    t->rot.resize(m.size());
    t->rot_t.resize(m.size());
    for (uint32_t i = 0; i < d; ++i) {
      for (uint32_t j = 0; j < d; ++j) {
        const float v = static_cast<float>(m[static_cast<size_t>(i) * d + j]);
        t->rot[static_cast<size_t>(i) * d + j] = v;
        t->rot_t[static_cast<size_t>(j) * d + i] = v;
      }
    }
  }
  if (t->prod && p.qjl == TurboQuantQjl::kHadamard) {
    // Rows of the orthogonal chain H are unit vectors close to uniform on the sphere, and
    // E[H^T sign(H r)] = d m_d r/|r| for a uniform orthogonal H: scale by 1/(d m_d). When d is
    // a power of two the two windows run unscaled (G = d H), so decode's G^T s is exact integer
    // arithmetic and the 1/d joins qjl_scale (an exact power-of-two factor). Overlapping windows
    // (other d) keep their scales: unscaled, they would not compose to a multiple of an
    // orthogonal map.
    const bool pow2 = (d & (d - 1)) == 0;
    t->qjl_hadamard = true;
    t->qjl_windows = HadamardChain(
        d, internal::kTqQjlRounds,
        internal::TqStreamState(p.seed, internal::TqStream::kQjlHadamardSigns, d, p.part),
        /*unscaled=*/pow2);
    t->qjl_scale = static_cast<float>(1.0 / (d * SphereAbsMean(d)) / (pow2 ? d : 1));
  } else if (t->prod) {
    GaussianStream g(internal::TqStreamState(p.seed, internal::TqStream::kQjlMatrix, d, p.part));
    t->qjl.resize(static_cast<size_t>(d) * d);
    t->qjl_t.resize(t->qjl.size());
    for (uint32_t i = 0; i < d; ++i) {
      for (uint32_t j = 0; j < d; ++j) {
        const float v = static_cast<float>(g.Next());
        t->qjl[static_cast<size_t>(i) * d + j] = v;
        t->qjl_t[static_cast<size_t>(j) * d + i] = v;
      }
    }
    t->qjl_scale = static_cast<float>(std::sqrt(M_PI / 2.0) / d);
  }
  // Fixed-point matrices: the binary32 entries times a power of two (exact), rounded half to
  // even. |rot| <= 1 keeps |rot_q| <= 2^14; the Gaussian entries stay below 8.6 (Box-Muller over
  // 53-bit draws), so |qjl_q| <= 17573, checked against the int8-pair bound anyway.
  t->fixed = p.matrix == TurboQuantMatrix::kFixed;
  if (t->fixed && p.rotation == TurboQuantRotation::kDense) {
    t->rot_q.resize(t->rot.size());
    for (size_t k = 0; k < t->rot.size(); ++k) {
      t->rot_q[k] = static_cast<int16_t>(std::nearbyint(t->rot[k] * 0x1.0p14f));
    }
  }
  if (t->fixed && t->prod && !t->qjl_hadamard) {
    t->qjl_q.resize(t->qjl.size());
    for (size_t k = 0; k < t->qjl.size(); ++k) {
      const float v = std::nearbyint(t->qjl[k] * 0x1.0p11f);
      if (!(std::fabs(v) <= static_cast<float>(internal::kTqFixedClamp))) return nullptr;
      t->qjl_q[k] = static_cast<int16_t>(v);
    }
  }
  return t;
}

std::mutex g_cache_mu;

}  // namespace

absl::StatusOr<std::shared_ptr<const TurboQuantCodebook>> GetTurboQuantCodebook(uint32_t dim,
                                                                               uint8_t bits) {
  if (dim < 8 || dim > 4096 || bits < 1 || bits > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("turboquant codebook: dim ", dim, " / bits ", bits, " out of range"));
  }
  static auto* cache = new std::map<std::pair<uint32_t, uint8_t>,
                                    std::shared_ptr<const TurboQuantCodebook>>();
  {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    auto it = cache->find({dim, bits});
    if (it != cache->end()) return it->second;
  }
  auto cb = ComputeCodebook(dim, bits);  // outside the lock: ~10 ms
  std::lock_guard<std::mutex> lock(g_cache_mu);
  return cache->emplace(std::make_pair(dim, bits), cb).first->second;
}

namespace internal {

uint64_t TqStreamState(uint64_t seed, TqStream stream, uint32_t dim, uint32_t part) {
  // Distinct (stream, dim, part) give distinct states for the same seed; one SplitMix64 step
  // decorrelates neighbouring seeds.
  SplitMix64 mix(seed ^ (static_cast<uint64_t>(stream) << 60) ^
                 (static_cast<uint64_t>(part) << 56) ^ (static_cast<uint64_t>(dim) << 32));
  return mix.Next();
}

absl::StatusOr<std::shared_ptr<const TqTables>> GetTqTables(const TurboQuantVectorParams& p) {
  if (auto s = p.Validate(); !s.ok()) return s;
  using Key = std::tuple<uint32_t, uint8_t, uint8_t, uint8_t, uint64_t, uint8_t, uint8_t, uint8_t>;
  static auto* cache = new std::map<Key, std::shared_ptr<const TqTables>>();
  const Key key{p.dim,  p.bits, static_cast<uint8_t>(p.variant), static_cast<uint8_t>(p.rotation),
                p.seed, p.part, static_cast<uint8_t>(p.qjl),     static_cast<uint8_t>(p.matrix)};
  {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    auto it = cache->find(key);
    if (it != cache->end()) return it->second;
  }
  const uint8_t mse_bits = p.variant == TurboQuantVariant::kProd ? p.bits - 1 : p.bits;
  std::shared_ptr<const TurboQuantCodebook> cb;
  if (mse_bits > 0) {
    auto c = GetTurboQuantCodebook(p.dim, mse_bits);
    if (!c.ok()) return c.status();
    cb = *c;
  }
  auto t = BuildTables(p, cb.get());
  if (t == nullptr) {
    return absl::InternalError("turboquant: fixed-point QJL matrix entry outside the int8-pair range");
  }
  std::lock_guard<std::mutex> lock(g_cache_mu);
  if (cache->size() > 256) cache->clear();  // bounded: seeds come from configuration
  return cache->emplace(key, t).first->second;
}

float TqSumSquares(const float* x, uint32_t n) {
  float lane[32];
  const uint32_t per = (n + 31) / 32;
  for (uint32_t l = 0; l < 32; ++l) {
    float acc = 0.0f;
    for (uint32_t j = l * per; j < std::min(n, (l + 1) * per); ++j) acc = acc + x[j] * x[j];
    lane[l] = acc;
  }
  for (uint32_t off = 16; off > 0; off >>= 1) {
    float next[32];
    for (uint32_t l = 0; l < 32; ++l) next[l] = lane[l] + lane[l ^ off];
    std::copy(next, next + 32, lane);
  }
  return lane[0];
}

namespace {
void Fwht(float* x, uint32_t len) {
  for (uint32_t h = 1; h < len; h <<= 1) {
    for (uint32_t i = 0; i < len; i += 2 * h) {
      for (uint32_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
}
}  // namespace

void TqApplyChain(const std::vector<TqHadamardWindow>& chain, float* x) {
  for (const auto& w : chain) {
    float* v = x + w.offset;
    for (uint32_t i = 0; i < w.len; ++i) v[i] = v[i] * w.signs[i];
    Fwht(v, w.len);
    for (uint32_t i = 0; i < w.len; ++i) v[i] = v[i] * w.scale;
  }
}

void TqApplyChainHalf(const std::vector<TqHadamardWindow>& chain, float* x) {
  // Every value is a binary16 number held in a float: x rounded once, sign flips exact, each
  // butterfly's sum rounded to binary16. The binary32 sum of two binary16 numbers rounded to
  // binary16 equals their correctly rounded binary16 sum (24 >= 2 * 11 + 2 bits), which is what
  // the GPU's packed half-precision adds compute.
  const auto h = [](float v) { return HalfToFloat(FloatToHalf(v)); };
  const uint32_t d = chain.empty() ? 0 : chain[0].len;
  for (uint32_t i = 0; i < d; ++i) x[i] = h(x[i]);
  for (const auto& w : chain) {
    float* v = x + w.offset;
    for (uint32_t i = 0; i < w.len; ++i) v[i] = v[i] * w.signs[i];
    for (uint32_t hh = 1; hh < w.len; hh <<= 1) {
      for (uint32_t i = 0; i < w.len; i += 2 * hh) {
        for (uint32_t j = i; j < i + hh; ++j) {
          const float a = v[j], b = v[j + hh];
          v[j] = h(a + b);
          v[j + hh] = h(a - b);
        }
      }
    }
  }
}

void TqApplyChainInverse(const std::vector<TqHadamardWindow>& chain, float* x) {
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const auto& w = *it;
    float* v = x + w.offset;
    Fwht(v, w.len);
    for (uint32_t i = 0; i < w.len; ++i) v[i] = v[i] * w.scale * w.signs[i];
  }
}

void TqFixedMatVec(const int16_t* m, const int32_t* v, uint32_t n, int32_t* out) {
  // Sums modulo 2^32 in uint32 (well defined wrap-around; the low 32 bits of every product and
  // sum are those of the exact int64 values), so any order gives the same result.
  for (uint32_t i = 0; i < n; ++i) {
    const int16_t* row = m + static_cast<size_t>(i) * n;
    uint32_t acc = 0;
    for (uint32_t j = 0; j < n; ++j) {
      acc += static_cast<uint32_t>(static_cast<int32_t>(row[j])) * static_cast<uint32_t>(v[j]);
    }
    out[i] = static_cast<int32_t>(acc);
  }
}

void TqFixedMatTVec(const int16_t* m, const int32_t* v, uint32_t n, int32_t* out) {
  // i-outer so that the inner loop runs over a contiguous row (vectorizes); the sums are exact
  // modulo 2^32, so the order does not matter. `out` accumulates as uint32 bit patterns.
  uint32_t* acc = reinterpret_cast<uint32_t*>(out);  // same object, signed/unsigned variant
  std::fill(acc, acc + n, 0u);
  for (uint32_t i = 0; i < n; ++i) {
    const int16_t* row = m + static_cast<size_t>(i) * n;
    const uint32_t vi = static_cast<uint32_t>(v[i]);
    for (uint32_t j = 0; j < n; ++j) {
      acc[j] += static_cast<uint32_t>(static_cast<int32_t>(row[j])) * vi;
    }
  }
}

namespace {
// int32 -> binary32 (round to nearest even), then the exact scaling by 2^-28.
inline float FixedToFloat28(int32_t v) { return static_cast<float>(v) * 0x1.0p-28f; }
// Per-thread integer scratch (2 * n entries) of the fixed-point rotation (which = 0) and QJL
// (which = 1) steps, so that neither allocates per vector.
int32_t* FixedScratch(int which, uint32_t n) {
  thread_local std::vector<int32_t> buf[2];
  if (buf[which].size() < 2u * n) buf[which].resize(2u * n);
  return buf[which].data();
}
}  // namespace

void TqRotate(const TqTables& t, float* x, float* scratch) {
  const uint32_t d = t.dim;
  if (t.params.rotation == TurboQuantRotation::kHadamard) {
    TqApplyChain(t.windows, x);
    return;
  }
  if (t.fixed) {
    // uq_j = q(u_j 2^14); z_i = (float)(sum_j rot_q[i][j] uq_j mod 2^32) 2^-28.
    (void)scratch;
    int32_t* uq = FixedScratch(0, d);
    int32_t* zi = uq + d;
    for (uint32_t j = 0; j < d; ++j) uq[j] = TqQuantize(x[j] * 0x1.0p14f);
    TqFixedMatVec(t.rot_q.data(), uq, d, zi);
    for (uint32_t i = 0; i < d; ++i) x[i] = FixedToFloat28(zi[i]);
    return;
  }
  // z_i = sum over j ascending of rot[i][j] x_j. The loops run j-outer so that they vectorize;
  // every z_i still sees the same additions in the same order.
  std::fill(scratch, scratch + d, 0.0f);
  for (uint32_t j = 0; j < d; ++j) {
    const float* col = &t.rot_t[static_cast<size_t>(j) * d];  // rot[i][j] over i
    const float xj = x[j];
    for (uint32_t i = 0; i < d; ++i) scratch[i] = scratch[i] + col[i] * xj;
  }
  std::copy(scratch, scratch + d, x);
}

void TqRotateInverse(const TqTables& t, float* x, float* scratch) {
  const uint32_t d = t.dim;
  if (t.params.rotation == TurboQuantRotation::kHadamard) {
    TqApplyChainInverse(t.windows, x);
    return;
  }
  if (t.fixed) {
    // yq_i = q(y_i 2^14); x_j = (float)(sum_i rot_q[i][j] yq_i mod 2^32) 2^-28.
    int32_t* yq = FixedScratch(0, d);
    int32_t* xi = yq + d;
    for (uint32_t i = 0; i < d; ++i) yq[i] = TqQuantize(x[i] * 0x1.0p14f);
    TqFixedMatTVec(t.rot_q.data(), yq, d, xi);
    for (uint32_t j = 0; j < d; ++j) x[j] = FixedToFloat28(xi[j]);
    return;
  }
  // x_j = sum over i ascending of rot[i][j] y_i (i-outer to vectorize, same order per x_j).
  std::fill(scratch, scratch + d, 0.0f);
  for (uint32_t i = 0; i < d; ++i) {
    const float* row = &t.rot[static_cast<size_t>(i) * d];
    const float yi = x[i];
    for (uint32_t j = 0; j < d; ++j) scratch[j] = scratch[j] + row[j] * yi;
  }
  std::copy(scratch, scratch + d, x);
}

void TqPackCodes(const uint8_t* codes, uint32_t n, uint8_t bits, uint8_t* out) {
  const size_t bytes = (static_cast<size_t>(n) * bits + 7) / 8;
  std::fill(out, out + bytes, 0);
  for (uint32_t j = 0; j < n; ++j) {
    const size_t bit = static_cast<size_t>(j) * bits;
    const uint32_t v = static_cast<uint32_t>(codes[j]) << (bit % 8);
    out[bit / 8] |= static_cast<uint8_t>(v);
    if ((bit % 8) + bits > 8) out[bit / 8 + 1] |= static_cast<uint8_t>(v >> 8);
  }
}

void TqUnpackCodes(const uint8_t* in, uint32_t n, uint8_t bits, uint8_t* codes) {
  const uint32_t mask = (1u << bits) - 1;
  for (uint32_t j = 0; j < n; ++j) {
    const size_t bit = static_cast<size_t>(j) * bits;
    uint32_t v = in[bit / 8];
    if ((bit % 8) + bits > 8) v |= static_cast<uint32_t>(in[bit / 8 + 1]) << 8;
    codes[j] = static_cast<uint8_t>((v >> (bit % 8)) & mask);
  }
}

void TqEncodeVector(const TqTables& t, const float* x, uint8_t* out, float* norm, float* gamma,
                    float* scratch) {
  const uint32_t d = t.dim;
  float* z = scratch;
  float* tmp = scratch + d;
  float* r = scratch + 2 * d;
  const float nrm = std::sqrt(TqSumSquares(x, d));
  const float inv = nrm > 0.0f ? 1.0f / nrm : 0.0f;
  for (uint32_t j = 0; j < d; ++j) z[j] = x[j] * inv;
  TqRotate(t, z, tmp);
  uint8_t codes[4096];
  if (t.mse_bits > 0) {
    const size_t nb = t.boundaries.size();
    for (uint32_t j = 0; j < d; ++j) {
      uint8_t c = 0;
      for (size_t k = 0; k < nb; ++k) c += z[j] >= t.boundaries[k] ? 1 : 0;
      codes[j] = c;
      r[j] = z[j] - t.centroids[c];
    }
    TqPackCodes(codes, d, t.mse_bits, out);
  } else {
    std::copy(z, z + d, r);
  }
  *norm = nrm;
  *gamma = 0.0f;
  if (!t.prod) return;
  *gamma = std::sqrt(TqSumSquares(r, d));
  uint8_t* signs = out + t.MseBytes();
  std::fill(signs, signs + t.SignBytes(), 0);
  if (t.qjl_hadamard) {
    // sketch = G r (the positive factor sqrt(d) / g of S does not change a sign); unscaled
    // chains (d a power of two) in binary16 arithmetic (docs/FORMAT.md).
    std::copy(r, r + d, tmp);
    if (t.qjl_windows[0].len == d) {
      TqApplyChainHalf(t.qjl_windows, tmp);
    } else {
      TqApplyChain(t.qjl_windows, tmp);
    }
    for (uint32_t i = 0; i < d; ++i) {
      if (tmp[i] >= 0.0f) signs[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
    }
    return;
  }
  if (t.fixed) {
    // sg = 2^14 / gamma; rq_j = q(r_j sg); sign_i = (sum_j qjl_q[i][j] rq_j mod 2^32) >= 0.
    const float sg = *gamma > 0.0f ? 16384.0f / *gamma : 0.0f;
    int32_t* rq = FixedScratch(1, d);
    int32_t* sk = rq + d;
    for (uint32_t j = 0; j < d; ++j) rq[j] = TqQuantize(r[j] * sg);
    TqFixedMatVec(t.qjl_q.data(), rq, d, sk);
    for (uint32_t i = 0; i < d; ++i) {
      if (sk[i] >= 0) signs[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
    }
    return;
  }
  // sketch_i = sum over j ascending of S[i][j] r_j (j-outer to vectorize, same order per i).
  float* sk = tmp;
  std::fill(sk, sk + d, 0.0f);
  for (uint32_t j = 0; j < d; ++j) {
    const float* col = &t.qjl_t[static_cast<size_t>(j) * d];  // S[i][j] over i
    const float rj = r[j];
    for (uint32_t i = 0; i < d; ++i) sk[i] = sk[i] + col[i] * rj;
  }
  for (uint32_t i = 0; i < d; ++i) {
    if (sk[i] >= 0.0f) signs[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
  }
}

void TqDecodeVector(const TqTables& t, const uint8_t* in, float norm, float gamma, float* out,
                    float* scratch, bool include_qjl) {
  const uint32_t d = t.dim;
  if (t.mse_bits > 0) {
    uint8_t codes[4096];
    TqUnpackCodes(in, d, t.mse_bits, codes);
    for (uint32_t j = 0; j < d; ++j) out[j] = t.centroids[codes[j]];
  } else {
    std::fill(out, out + d, 0.0f);
  }
  if (t.prod && include_qjl) {
    const uint8_t* signs = in + t.MseBytes();
    const float coef = t.qjl_scale * gamma;
    float* acc = scratch;
    if (t.fixed && !t.qjl_hadamard) {
      // t_j = (sum_i (+-qjl_q[i][j])) 2^-11, exact (|sum| < 2^24 for dim <= 512; wraps
      // modulo 2^32 like every fixed sum beyond that).
      int32_t* sv = FixedScratch(1, d);
      int32_t* ti = sv + d;
      for (uint32_t i = 0; i < d; ++i) sv[i] = ((signs[i / 8] >> (i % 8)) & 1) ? 1 : -1;
      TqFixedMatTVec(t.qjl_q.data(), sv, d, ti);
      for (uint32_t j = 0; j < d; ++j) acc[j] = static_cast<float>(ti[j]) * 0x1.0p-11f;
    } else if (t.qjl_hadamard) {
      // t = H^T s (s_i = +-1).
      for (uint32_t i = 0; i < d; ++i) acc[i] = ((signs[i / 8] >> (i % 8)) & 1) ? 1.0f : -1.0f;
      TqApplyChainInverse(t.qjl_windows, acc);
    } else {
      // t_j = sum over i ascending of (+-S[i][j]); i-outer to vectorize (acc - s == acc + (-s)
      // exactly in IEEE arithmetic), same order per t_j.
      std::fill(acc, acc + d, 0.0f);
      for (uint32_t i = 0; i < d; ++i) {
        const float* row = &t.qjl[static_cast<size_t>(i) * d];
        if ((signs[i / 8] >> (i % 8)) & 1) {
          for (uint32_t j = 0; j < d; ++j) acc[j] = acc[j] + row[j];
        } else {
          for (uint32_t j = 0; j < d; ++j) acc[j] = acc[j] - row[j];
        }
      }
    }
    for (uint32_t j = 0; j < d; ++j) out[j] = out[j] + coef * acc[j];
  }
  TqRotateInverse(t, out, scratch);
  for (uint32_t j = 0; j < d; ++j) out[j] = out[j] * norm;
}

}  // namespace internal

// ---- TurboQuantVectorQuantizer ----------------------------------------------------------------

TurboQuantVectorQuantizer::TurboQuantVectorQuantizer(const TurboQuantVectorParams& params)
    : params_(params) {}
TurboQuantVectorQuantizer::~TurboQuantVectorQuantizer() = default;

absl::StatusOr<std::unique_ptr<TurboQuantVectorQuantizer>> TurboQuantVectorQuantizer::Create(
    const TurboQuantVectorParams& params) {
  auto tables = internal::GetTqTables(params);
  if (!tables.ok()) return tables.status();
  std::unique_ptr<TurboQuantVectorQuantizer> q(new TurboQuantVectorQuantizer(params));
  q->tables_ = *tables;
  return q;
}

static const TqTables& T(const std::shared_ptr<const void>& p) {
  return *static_cast<const TqTables*>(p.get());
}

size_t TurboQuantVectorQuantizer::CodeBytes() const { return T(tables_).CodeBytes(); }

void TurboQuantVectorQuantizer::Encode(const float* x, uint8_t* codes, float* norm,
                                       float* gamma) const {
  std::vector<float> scratch(3 * params_.dim);
  internal::TqEncodeVector(T(tables_), x, codes, norm, gamma, scratch.data());
}

void TurboQuantVectorQuantizer::Decode(const uint8_t* codes, float norm, float gamma,
                                       float* out) const {
  std::vector<float> scratch(2 * params_.dim);
  internal::TqDecodeVector(T(tables_), codes, norm, gamma, out, scratch.data());
}

void TurboQuantVectorQuantizer::DecodeMse(const uint8_t* codes, float norm, float* out) const {
  std::vector<float> scratch(2 * params_.dim);
  internal::TqDecodeVector(T(tables_), codes, norm, 0.0f, out, scratch.data(),
                           /*include_qjl=*/false);
}

std::vector<float> TurboQuantVectorQuantizer::TransformQuery(const float* y) const {
  const TqTables& t = T(tables_);
  const uint32_t d = t.dim;
  std::vector<float> z(y, y + d), scratch(d), out(d, 0.0f);
  if (!t.prod) return out;
  if (t.fixed && !t.rot_q.empty()) {
    // The fixed codec's effective rotation rot_q 2^-14 (exact in binary32), applied in double.
    for (uint32_t i = 0; i < d; ++i) {
      double acc = 0;
      for (uint32_t j = 0; j < d; ++j) acc += t.rot_q[i * d + j] * 0x1.0p-14 * y[j];
      z[i] = static_cast<float>(acc);
    }
  } else {
    internal::TqRotate(t, z.data(), scratch.data());
  }
  if (t.qjl_hadamard) {
    internal::TqApplyChain(t.qjl_windows, z.data());
    return z;
  }
  const bool fq = t.fixed && !t.qjl_q.empty();  // effective S = qjl_q 2^-11
  for (uint32_t i = 0; i < d; ++i) {
    double acc = 0;
    for (uint32_t j = 0; j < d; ++j) {
      const double s = fq ? t.qjl_q[i * d + j] * 0x1.0p-11 : static_cast<double>(t.qjl[i * d + j]);
      acc += s * z[j];
    }
    out[i] = static_cast<float>(acc);
  }
  return out;
}

float TurboQuantVectorQuantizer::EstimateInnerProduct(const float* y,
                                                      const float* transformed_query,
                                                      const uint8_t* codes, float norm,
                                                      float gamma) const {
  const TqTables& t = T(tables_);
  const uint32_t d = t.dim;
  std::vector<float> xm(d);
  DecodeMse(codes, norm, xm.data());
  double ip = 0;
  for (uint32_t j = 0; j < d; ++j) ip += static_cast<double>(y[j]) * xm[j];
  if (!t.prod) return static_cast<float>(ip);
  const uint8_t* signs = codes + t.MseBytes();
  double s = 0;
  for (uint32_t i = 0; i < d; ++i) {
    s += ((signs[i / 8] >> (i % 8)) & 1) ? transformed_query[i] : -transformed_query[i];
  }
  const double scale = t.qjl_hadamard ? t.qjl_scale : std::sqrt(M_PI / 2.0) / d;
  return static_cast<float>(ip + scale * gamma * norm * s);
}

}  // namespace kvtier::kernels
