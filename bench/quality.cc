// bench/quality: codec quality on synthetic KV (ALGORITHMS.md section 10) and the TurboQuant
// paper-distortion reproduction on random unit vectors. CPU only. Prints tables; --json writes
// the same figures. Results and the command line live in docs/QUALITY.md ("## Codecs").
//
// Every chunk codec runs through the public Encode/Decode API (kvtier/kernels/codec.h), so
// bits per element and compression ratios come from real payload sizes (header included).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "codecs/numeric.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/latent.h"
#include "kvtier/kernels/turboquant.h"
#include "synthetic_kv.h"

namespace kvtier::bench {
namespace {

using kernels::CodecId;
using kernels::CodecParams;
using kernels::TurboQuantMatrix;
using kernels::TurboQuantQjl;
using kernels::TurboQuantRotation;
using kernels::TurboQuantSplit;
using kernels::TurboQuantVariant;

struct Flags {
  uint32_t tokens = 4096;
  uint32_t layers = 1;
  uint32_t kv_heads = 2;
  uint32_t vectors = 20000;
  uint64_t seed = 1;
  std::string json;
  std::string filter;  // run only codecs whose name contains this
  float sink_logit = 8.0f;
  float outlier_mean_min = 2.0f, outlier_mean_max = 6.0f;
  bool skip_chunks = false;
  bool skip_paper = false;
};

// ---- Paper reproduction ---------------------------------------------------------------------------

struct PaperRow {
  std::string rotation, qjl, matrix;
  int bits = 0;
  double d_mse = 0, d_mse_paper = 0;
  double prod_bias = 0, prod_bias_se = 0, d_prod = 0, d_prod_paper = 0;
  // <x, x_prod> - 1 (q = x): the direction in which a mis-scaled QJL term shows most.
  double self_bias = 0, self_bias_se = 0;
  bool mse_ok = false, prod_ok = false;
};

std::vector<float> RandomUnit(std::mt19937_64& rng, uint32_t d) {
  std::normal_distribution<double> n(0, 1);
  std::vector<double> v(d);
  double s = 0;
  for (auto& x : v) {
    x = n(rng);
    s += x * x;
  }
  std::vector<float> out(d);
  for (uint32_t i = 0; i < d; ++i) out[i] = static_cast<float>(v[i] / std::sqrt(s));
  return out;
}

std::vector<PaperRow> PaperReproduction(const Flags& f) {
  const double mse_paper[4] = {0.3609, 0.1160, 0.0340, 0.0093};
  const double prod_paper[4] = {1.57, 0.57, 0.18, 0.053};
  const uint32_t d = 128;
  std::vector<PaperRow> rows;
  // Binary32 matrices, then the same codecs with fixed-point matrices (matrix=fixed) where they
  // use one; the mse quantizer of a row is fixed only with the dense rotation.
  struct Config {
    TurboQuantRotation rot;
    TurboQuantQjl qjl;
    TurboQuantMatrix matrix;
  };
  const auto F = TurboQuantMatrix::kFloat, X = TurboQuantMatrix::kFixed;
  const Config configs[] = {
      {TurboQuantRotation::kDense, TurboQuantQjl::kGaussian, F},
      {TurboQuantRotation::kHadamard, TurboQuantQjl::kGaussian, F},
      {TurboQuantRotation::kHadamard, TurboQuantQjl::kHadamard, F},
      {TurboQuantRotation::kDense, TurboQuantQjl::kHadamard, F},
      {TurboQuantRotation::kDense, TurboQuantQjl::kGaussian, X},
      {TurboQuantRotation::kHadamard, TurboQuantQjl::kGaussian, X},
      {TurboQuantRotation::kDense, TurboQuantQjl::kHadamard, X}};
  for (const auto& [rot, qjl, matrix] : configs) {
    for (int b = 1; b <= 4; ++b) {
      PaperRow r;
      r.rotation = rot == TurboQuantRotation::kDense ? "dense" : "hadamard";
      r.qjl = qjl == TurboQuantQjl::kHadamard ? "hadamard" : "gaussian";
      r.matrix = matrix == X ? "fixed" : "float";
      r.bits = b;
      r.d_mse_paper = mse_paper[b - 1];
      r.d_prod_paper = prod_paper[b - 1];
      kernels::TurboQuantVectorParams p;
      p.dim = d;
      p.bits = static_cast<uint8_t>(b);
      p.rotation = rot;
      p.seed = f.seed;
      p.matrix = rot == TurboQuantRotation::kDense ? matrix : F;
      auto mse = kernels::TurboQuantVectorQuantizer::Create(p);
      p.variant = TurboQuantVariant::kProd;
      p.qjl = qjl;
      p.matrix = matrix;
      auto prod = kernels::TurboQuantVectorQuantizer::Create(p);
      if (!mse.ok() || !prod.ok()) {
        std::fprintf(stderr, "quantizer: %s / %s\n", mse.status().ToString().c_str(),
                     prod.status().ToString().c_str());
        std::exit(1);
      }
      std::mt19937_64 rng(f.seed * 1000 + b);
      std::vector<uint8_t> cm((*mse)->CodeBytes()), cp((*prod)->CodeBytes());
      std::vector<float> y(d);
      double se = 0, e_sum = 0, e2_sum = 0, s_sum = 0, s2_sum = 0;
      for (uint32_t i = 0; i < f.vectors; ++i) {
        const auto x = RandomUnit(rng, d);
        const auto q = RandomUnit(rng, d);
        float nrm, g;
        (*mse)->Encode(x.data(), cm.data(), &nrm, &g);
        (*mse)->Decode(cm.data(), nrm, g, y.data());
        double e = 0;
        for (uint32_t k = 0; k < d; ++k) e += (double(y[k]) - x[k]) * (double(y[k]) - x[k]);
        se += e;
        (*prod)->Encode(x.data(), cp.data(), &nrm, &g);
        (*prod)->Decode(cp.data(), nrm, g, y.data());
        double truth = 0, est = 0;
        for (uint32_t k = 0; k < d; ++k) {
          truth += double(q[k]) * x[k];
          est += double(q[k]) * y[k];
        }
        e_sum += est - truth;
        e2_sum += (est - truth) * (est - truth);
        double self = 0;
        for (uint32_t k = 0; k < d; ++k) self += double(x[k]) * y[k];
        s_sum += self - 1.0;
        s2_sum += (self - 1.0) * (self - 1.0);
      }
      const double n = f.vectors;
      r.d_mse = se / n;
      r.prod_bias = e_sum / n;
      r.d_prod = d * e2_sum / n;
      r.prod_bias_se = std::sqrt(std::max(0.0, e2_sum / n - r.prod_bias * r.prod_bias) / n);
      r.self_bias = s_sum / n;
      r.self_bias_se = std::sqrt(std::max(0.0, s2_sum / n - r.self_bias * r.self_bias) / n);
      r.mse_ok = std::fabs(r.d_mse - r.d_mse_paper) <= 0.05 * r.d_mse_paper;
      // Gaussian QJL: the paper's figure within 10%. Structured QJL: at most the paper's figure
      // (its orthogonal rows lower the variance; docs/QUALITY.md). Both: no random-q bias beyond
      // 4 s.e. The q = x bias is reported, not judged: with one fixed S it carries that S's
      // deviation from its expectation (docs/QUALITY.md).
      const bool d_ok = qjl == TurboQuantQjl::kGaussian
                            ? std::fabs(r.d_prod - r.d_prod_paper) <= 0.10 * r.d_prod_paper
                            : r.d_prod <= r.d_prod_paper;
      r.prod_ok = d_ok && std::fabs(r.prod_bias) <= 4 * r.prod_bias_se;
      rows.push_back(r);
    }
  }
  return rows;
}

// ---- Chunk codecs on synthetic KV -----------------------------------------------------------------

struct CodecCase {
  std::string name;
  CodecParams params;
  bool ends_sequence = false;
  // Latent codec rows: rank > 0 (fit on a separate calibration draw of the same generator).
  uint32_t latent_rank = 0;
  kernels::LatentCoefficients latent_coef = kernels::LatentCoefficients::kFp16;
};

struct ChunkRow {
  std::string name;
  size_t payload_bytes = 0;
  double bits_per_element = 0, ratio = 0;
  double k_err = 0, v_err = 0, ip_bias = 0, ip_dist = 0, logits_err = 0, attn_tv = 0,
         out_err = 0;
  std::string error;
};

CodecParams Kivi(int bits, int sink, int tail) {
  CodecParams p;
  p.id = CodecId::kKivi;
  p.bits = static_cast<uint8_t>(bits);
  p.group_size = 32;
  p.sink_tokens = static_cast<uint16_t>(sink);
  p.tail_tokens = static_cast<uint16_t>(tail);
  return p;
}

CodecParams Tq(int bits, TurboQuantVariant v, TurboQuantRotation r,
               TurboQuantSplit s = TurboQuantSplit::kNone,
               TurboQuantQjl qjl = TurboQuantQjl::kGaussian) {
  CodecParams p;
  p.id = CodecId::kTurboQuant;
  p.bits = static_cast<uint8_t>(bits);
  p.tq_variant = v;
  p.tq_rotation = r;
  p.tq_split = s;
  p.tq_qjl = qjl;
  p.seed = 7;
  return p;
}

std::vector<CodecCase> Cases() {
  std::vector<CodecCase> c;
  CodecParams raw;
  c.push_back({"raw", raw});
  CodecParams fp8;
  fp8.id = CodecId::kFp8;
  c.push_back({"fp8", fp8});
  for (int b : {2, 4}) {
    c.push_back({fmt::format("kivi-{} G32 R128", b), Kivi(b, 0, 128), true});
    c.push_back({fmt::format("kivi-{} G32 R128 sink1", b), Kivi(b, 1, 128), true});
    c.push_back({fmt::format("kivi-{} G32", b), Kivi(b, 0, 0), false});
  }
  for (auto rot : {TurboQuantRotation::kHadamard, TurboQuantRotation::kDense}) {
    const char* rn = rot == TurboQuantRotation::kDense ? "dense" : "hadamard";
    for (auto var : {TurboQuantVariant::kMse, TurboQuantVariant::kProd}) {
      const char* vn = var == TurboQuantVariant::kProd ? "prod" : "mse";
      for (int b = 1; b <= 4; ++b) {
        c.push_back({fmt::format("tq-{} b={} {}", vn, b, rn), Tq(b, var, rot)});
      }
    }
    for (int b = 1; b <= 4; ++b) {
      c.push_back({fmt::format("tq-prod b={} {} qjl=hadamard", b, rn),
                   Tq(b, TurboQuantVariant::kProd, rot, TurboQuantSplit::kNone,
                      TurboQuantQjl::kHadamard)});
    }
    c.push_back({fmt::format("tq-mse 2.5 {}", rn),
                 Tq(2, TurboQuantVariant::kMse, rot, TurboQuantSplit::k2p5)});
    c.push_back({fmt::format("tq-mse 3.5 {}", rn),
                 Tq(3, TurboQuantVariant::kMse, rot, TurboQuantSplit::k3p5)});
  }
  // Fixed-point matrices (matrix=fixed, the text default for these codecs); the rows above are
  // the binary32 arithmetic.
  for (auto var : {TurboQuantVariant::kMse, TurboQuantVariant::kProd}) {
    const char* vn = var == TurboQuantVariant::kProd ? "prod" : "mse";
    for (int b = 1; b <= 4; ++b) {
      CodecParams p = Tq(b, var, TurboQuantRotation::kDense);
      p.tq_matrix = TurboQuantMatrix::kFixed;
      c.push_back({fmt::format("tq-{} b={} dense fixed", vn, b), p});
    }
  }
  for (int b = 2; b <= 3; ++b) {
    CodecParams p = Tq(b, TurboQuantVariant::kProd, TurboQuantRotation::kHadamard);
    p.tq_matrix = TurboQuantMatrix::kFixed;
    c.push_back({fmt::format("tq-prod b={} hadamard fixed", b), p});
  }
  for (uint32_t r : {16u, 32u, 64u, 96u, 128u}) {
    CodecCase lc;
    lc.name = fmt::format("latent r={} fp16", r);
    lc.latent_rank = r;
    c.push_back(lc);
  }
  for (uint32_t r : {32u, 64u}) {
    CodecCase lc;
    lc.name = fmt::format("latent r={} fp8", r);
    lc.latent_rank = r;
    lc.latent_coef = kernels::LatentCoefficients::kFp8;
    c.push_back(lc);
    lc.name = fmt::format("latent r={} kivi-4", r);
    lc.latent_coef = kernels::LatentCoefficients::kKivi4;
    c.push_back(lc);
  }
  return c;
}

std::vector<uint16_t> ToHalf(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = kernels::internal::FloatToHalf(x[i]);
  return h;
}

std::vector<float> FromHalf(const std::vector<uint16_t>& h) {
  std::vector<float> x(h.size());
  for (size_t i = 0; i < h.size(); ++i) x[i] = kernels::internal::HalfToFloat(h[i]);
  return x;
}

// Attention of `queries` (n x D) over keys/values (T x D), softmax over all T.
struct Attn {
  std::vector<double> logits;  // n x T
  std::vector<double> probs;   // n x T
  std::vector<double> out;     // n x D
};

Attn Attend(const float* q, uint32_t n, const float* k, const float* v, uint32_t T, uint32_t D) {
  Attn a;
  a.logits.resize(size_t{n} * T);
  a.probs.resize(size_t{n} * T);
  a.out.assign(size_t{n} * D, 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (uint32_t i = 0; i < n; ++i) {
    double mx = -1e300;
    for (uint32_t t = 0; t < T; ++t) {
      double s = 0;
      for (uint32_t d = 0; d < D; ++d) s += double(q[size_t{i} * D + d]) * k[size_t{t} * D + d];
      s *= scale;
      a.logits[size_t{i} * T + t] = s;
      mx = std::max(mx, s);
    }
    double z = 0;
    for (uint32_t t = 0; t < T; ++t) {
      const double e = std::exp(a.logits[size_t{i} * T + t] - mx);
      a.probs[size_t{i} * T + t] = e;
      z += e;
    }
    for (uint32_t t = 0; t < T; ++t) {
      const double p = a.probs[size_t{i} * T + t] / z;
      a.probs[size_t{i} * T + t] = p;
      for (uint32_t d = 0; d < D; ++d) a.out[size_t{i} * D + d] += p * v[size_t{t} * D + d];
    }
  }
  return a;
}

double RelErr(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

ChunkRow RunCase(const CodecCase& cc, const SyntheticKv& data, const std::vector<float>& truth,
                 const std::vector<uint16_t>& half, const std::vector<Attn>& ref,
                 const std::vector<uint16_t>& calib_half, const kernels::KvLayout& layout) {
  const auto& o = data.options;
  ChunkRow row;
  row.name = cc.name;
  kernels::ChunkInput in;
  in.data = half.data();
  in.layout = layout;
  in.num_tokens = o.tokens;
  in.first_position = 0;
  in.ends_sequence = cc.ends_sequence;
  std::vector<uint8_t> payload;
  std::vector<uint16_t> out_half(half.size(), 0x7E00);
  const auto target = kernels::DecodeTarget::Contiguous(out_half.data(), layout, o.tokens);
  absl::Status st;
  if (cc.latent_rank > 0) {
    kernels::ChunkInput calib = in;
    calib.data = calib_half.data();
    auto basis = kernels::FitLatentBasis({calib}, layout, cc.latent_rank);
    if (!basis.ok()) {
      row.error = basis.status().ToString();
      return row;
    }
    auto p = kernels::EncodeLatent(*basis, in, cc.latent_coef);
    st = p.status();
    if (p.ok()) {
      payload = std::move(*p);
      st = kernels::DecodeLatent(*basis, payload, target);
    }
  } else {
    st = kernels::Encode(cc.params, in, &payload);
    if (st.ok()) st = kernels::Decode(payload, target);
  }
  if (!st.ok()) {
    row.error = st.ToString();
    return row;
  }
  const std::vector<float> dec = FromHalf(out_half);
  const double elements = static_cast<double>(half.size());
  row.payload_bytes = payload.size();
  row.bits_per_element = 8.0 * payload.size() / elements;
  row.ratio = 2.0 * elements / payload.size();
  const uint32_t T = o.tokens, D = o.head_dim;
  double e_sum = 0, e2_sum = 0, ip2_sum = 0, nip = 0;
  int heads = 0;
  for (uint32_t l = 0; l < o.layers; ++l) {
    for (uint32_t h = 0; h < o.kv_heads; ++h, ++heads) {
      const size_t koff = ((size_t{l} * 2 + 0) * o.kv_heads + h) * T * D;
      const size_t voff = ((size_t{l} * 2 + 1) * o.kv_heads + h) * T * D;
      row.k_err += RelErr(&truth[koff], &dec[koff], size_t{T} * D);
      row.v_err += RelErr(&truth[voff], &dec[voff], size_t{T} * D);
      double lnum = 0, lden = 0, onum = 0, oden = 0, tv = 0;
      for (uint32_t g = 0; g < o.group; ++g) {
        const uint32_t qh = h * o.group + g;
        const Attn& a = ref[(size_t{l} * o.kv_heads * o.group) + qh];
        const Attn b = Attend(data.Queries(l, qh), o.queries, &dec[koff], &dec[voff], T, D);
        for (size_t i = 0; i < a.logits.size(); ++i) {
          const double e = b.logits[i] - a.logits[i];
          lnum += e * e;
          lden += a.logits[i] * a.logits[i];
          e_sum += e;
          e2_sum += e * e;
          ip2_sum += a.logits[i] * a.logits[i];
          nip += 1;
          tv += 0.5 * std::fabs(b.probs[i] - a.probs[i]);
        }
        for (size_t i = 0; i < a.out.size(); ++i) {
          onum += (b.out[i] - a.out[i]) * (b.out[i] - a.out[i]);
          oden += a.out[i] * a.out[i];
        }
      }
      row.logits_err += std::sqrt(lnum / lden);
      row.out_err += std::sqrt(onum / oden);
      row.attn_tv += tv / (o.group * o.queries);
    }
  }
  row.k_err /= heads;
  row.v_err /= heads;
  row.logits_err /= heads;
  row.out_err /= heads;
  row.attn_tv /= heads;
  // Inner products <q, k> (logits are these over sqrt(D); the ratios are the same).
  row.ip_bias = (e_sum / nip) / std::sqrt(ip2_sum / nip);
  row.ip_dist = e2_sum / ip2_sum;
  return row;
}

}  // namespace
}  // namespace kvtier::bench

int main(int argc, char** argv) {
  using namespace kvtier::bench;
  Flags f;
  CLI::App app{"kvtier codec quality on synthetic KV + TurboQuant paper reproduction"};
  app.add_option("--tokens", f.tokens, "tokens per chunk (T)");
  app.add_option("--layers", f.layers, "layers");
  app.add_option("--kv-heads", f.kv_heads, "KV heads (query heads = 4x)");
  app.add_option("--vectors", f.vectors, "random unit vectors per paper-reproduction row");
  app.add_option("--seed", f.seed, "seed of data, rotations and sketches");
  app.add_option("--json", f.json, "write results as JSON to this file");
  app.add_option("--filter", f.filter, "only codecs whose name contains this text");
  app.add_option("--sink-logit", f.sink_logit, "expected logit of the sink token for a mean query");
  app.add_option("--outlier-mean-min", f.outlier_mean_min, "outlier channel |mean|, low end");
  app.add_option("--outlier-mean-max", f.outlier_mean_max, "outlier channel |mean|, high end");
  app.add_flag("--skip-chunks", f.skip_chunks, "only the paper reproduction");
  app.add_flag("--skip-paper", f.skip_paper, "only the synthetic-KV codec table");
  CLI11_PARSE(app, argc, argv);

  std::string json = "{\n";
  json += fmt::format("  \"tokens\": {}, \"layers\": {}, \"kv_heads\": {}, \"vectors\": {}, "
                      "\"seed\": {},\n",
                      f.tokens, f.layers, f.kv_heads, f.vectors, f.seed);
  bool all_ok = true;
  if (!f.skip_paper) {
    const auto rows = PaperReproduction(f);
    std::printf("TurboQuant on %u random unit vectors, d = 128 (paper: Zandieh et al. 2025)\n",
                f.vectors);
    std::printf("%-9s %-8s %-6s %2s | %8s %8s %4s | %10s %9s %10s %9s %8s %8s %4s\n",
                "rotation", "qjl", "matrix", "b", "D_mse", "paper", "5%", "prod bias", "bias s.e.", "bias q=x",
                "s.e.", "d*D_prod", "paper", "10%");
    json += "  \"paper\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      std::printf(
          "%-9s %-8s %-6s %2d | %8.4f %8.4f %4s | %+10.5f %9.5f %+10.5f %9.5f %8.4f %8.4f %4s\n",
          r.rotation.c_str(), r.qjl.c_str(), r.matrix.c_str(), r.bits, r.d_mse, r.d_mse_paper,
          r.mse_ok ? "ok" : "MISS", r.prod_bias, r.prod_bias_se, r.self_bias, r.self_bias_se,
          r.d_prod, r.d_prod_paper, r.prod_ok ? "ok" : "MISS");
      if (r.rotation == "dense" && r.qjl == "gaussian") all_ok &= r.mse_ok && r.prod_ok;
      json += fmt::format(
          "    {{\"rotation\": \"{}\", \"qjl\": \"{}\", \"matrix\": \"{}\", \"bits\": {}, \"d_mse\": {:.6f}, "
          "\"d_mse_paper\": {}, \"mse_within_5pct\": {}, \"prod_bias\": {:.6f}, "
          "\"prod_bias_se\": {:.6f}, \"self_bias\": {:.6f}, \"self_bias_se\": {:.6f}, "
          "\"d_times_d_prod\": {:.6f}, \"d_times_d_prod_paper\": {}, \"prod_within_10pct\": {}}}{}\n",
          r.rotation, r.qjl, r.matrix, r.bits, r.d_mse, r.d_mse_paper, r.mse_ok, r.prod_bias,
          r.prod_bias_se, r.self_bias, r.self_bias_se, r.d_prod, r.d_prod_paper, r.prod_ok,
          i + 1 < rows.size() ? "," : "");
    }
    json += "  ],\n";
    std::printf("\n");
  }
  json += "  \"codecs\": [\n";
  if (!f.skip_chunks) {
    SyntheticKvOptions so;
    so.tokens = f.tokens;
    so.layers = f.layers;
    so.kv_heads = f.kv_heads;
    so.seed = f.seed;
    so.sink_logit = f.sink_logit;
    so.outlier_mean_abs_min = f.outlier_mean_min;
    so.outlier_mean_abs_max = f.outlier_mean_max;
    // One draw of 2T tokens per head: tokens [0, T) are the evaluated chunk (token 0 is the
    // sink), tokens [T, 2T) calibrate the latent codec (same heads, other tokens).
    const uint32_t T = f.tokens, D = so.head_dim;
    so.tokens = 2 * T;
    const SyntheticKv full = MakeSyntheticKv(so);
    SyntheticKv data = full;
    data.options.tokens = T;
    data.kv.resize(full.kv.size() / 2);
    std::vector<float> calib(full.kv.size() / 2);
    for (size_t s = 0; s < size_t{f.layers} * 2 * f.kv_heads; ++s) {
      std::copy(full.kv.begin() + s * 2 * T * D, full.kv.begin() + (s * 2 * T + T) * D,
                data.kv.begin() + s * T * D);
      std::copy(full.kv.begin() + (s * 2 * T + T) * D, full.kv.begin() + (s * 2 * T + 2 * T) * D,
                calib.begin() + s * T * D);
    }
    const auto half = ToHalf(data.kv);
    const auto truth = FromHalf(half);
    const auto calib_half = ToHalf(calib);
    const auto layout = kvtier::kernels::KvLayout::Mha(f.layers, f.kv_heads, f.kv_heads * so.group,
                                                       so.head_dim);
    so.tokens = T;
    std::vector<Attn> ref;
    for (uint32_t l = 0; l < f.layers; ++l) {
      for (uint32_t qh = 0; qh < f.kv_heads * so.group; ++qh) {
        const uint32_t h = qh / so.group;
        const size_t koff = ((size_t{l} * 2 + 0) * f.kv_heads + h) * T * D;
        const size_t voff = ((size_t{l} * 2 + 1) * f.kv_heads + h) * T * D;
        ref.push_back(Attend(data.Queries(l, qh), so.queries, &truth[koff], &truth[voff], T, D));
      }
    }
    std::printf("Synthetic KV: T = %u, %u layer(s), %u KV heads, %u query heads, head_dim %u, "
                "%u outlier key channels, sink token 0, seed %llu\n",
                T, f.layers, f.kv_heads, f.kv_heads * so.group, D, so.outlier_channels,
                static_cast<unsigned long long>(f.seed));
    std::printf("%-26s %6s %6s | %7s %7s | %8s %8s %7s %7s %7s\n", "codec", "bits", "ratio",
                "K err", "V err", "ip bias", "ip dist", "logits", "attn TV", "out err");
    auto cases = Cases();
    if (!f.filter.empty()) {
      std::vector<CodecCase> keep;
      for (auto& c : cases) {
        if (c.name.find(f.filter) != std::string::npos) keep.push_back(c);
      }
      cases = keep;
    }
    for (size_t i = 0; i < cases.size(); ++i) {
      const ChunkRow r = RunCase(cases[i], data, truth, half, ref, calib_half, layout);
      if (!r.error.empty()) {
        std::printf("%-26s error: %s\n", r.name.c_str(), r.error.c_str());
        json += fmt::format("    {{\"codec\": \"{}\", \"error\": \"{}\"}}{}\n", r.name, r.error,
                            i + 1 < cases.size() ? "," : "");
        continue;
      }
      std::printf("%-26s %6.3f %6.2f | %7.4f %7.4f | %+8.4f %8.5f %7.4f %7.4f %7.4f\n",
                  r.name.c_str(), r.bits_per_element, r.ratio, r.k_err, r.v_err, r.ip_bias,
                  r.ip_dist, r.logits_err, r.attn_tv, r.out_err);
      json += fmt::format(
          "    {{\"codec\": \"{}\", \"payload_bytes\": {}, \"bits_per_element\": {:.4f}, "
          "\"ratio\": {:.4f}, \"k_rel_err\": {:.6f}, \"v_rel_err\": {:.6f}, \"ip_bias\": {:.6f}, "
          "\"ip_distortion\": {:.6f}, \"logits_err\": {:.6f}, \"attn_tv\": {:.6f}, "
          "\"output_err\": {:.6f}}}{}\n",
          r.name, r.payload_bytes, r.bits_per_element, r.ratio, r.k_err, r.v_err, r.ip_bias,
          r.ip_dist, r.logits_err, r.attn_tv, r.out_err, i + 1 < cases.size() ? "," : "");
    }
  }
  json += "  ]\n}\n";
  if (!f.json.empty()) {
    FILE* fp = std::fopen(f.json.c_str(), "w");
    if (fp == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", f.json.c_str());
      return 1;
    }
    std::fputs(json.c_str(), fp);
    std::fclose(fp);
  }
  if (!f.skip_paper) {
    std::printf("paper reproduction (dense rotation): %s\n", all_ok ? "PASS" : "FAIL");
  }
  return all_ok ? 0 : 2;
}
