// selection_quality: how much of the attention of FUTURE queries each token-selection method
// keeps, on synthetic KV with attention sinks and planted needle clusters (CPU, seeded).
//
// Data (per layer, KV head; ALGORITHMS.md section 10):
//   keys    N(0,1) with 4 outlier channels (mean 3, std 10); token 0 is an attention sink whose key
//           points along the mean query direction; `clusters` needle clusters of 6 consecutive
//           tokens whose keys point along a cluster direction;
//   values  N(0,1) times a log-normal per-token scale;
//   queries the mean direction plus noise; a share of rows also points at one needle cluster.
//           Prompt rows (used by H2O) ask about clusters that precede them; the W window rows
//           ask about the first 3/4 of the clusters only; the held-out future rows (F per query
//           head, after the prompt, seeing all T tokens) ask about any cluster. Later layers get
//           sharper attention (queries scaled up), so per-layer budgets have something to use.
// Methods at budgets of 5/10/20/50% of T (B tokens per layer and KV head):
//   oracle     top-B tokens by the future rows' mean attention (group mean): the ceiling;
//   random     B uniform positions (seeded);
//   streaming  4 sinks + B - 4 recent;
//   h2o        column sums of the prompt's causal attention, B/2 heavy + B/2 recent;
//   snapkv     W = 32 window, C = B, max pooling, kernel 7;
//   pyramidkv  as snapkv with PyramidKV budgets (beta 20; its mean budget can exceed B).
// Metrics (averaged over layers, KV heads and future rows):
//   mass      attention mass of the future rows on the kept tokens;
//   recall    |kept AND oracle| / B;
//   needles   fraction of needle tokens kept;
//   out_err   ||A V - A' V|| / ||A V|| with A' the attention renormalised over the kept tokens
//             (aggregated as sqrt(sum of squared errors / sum of squared norms)).
// Usage: selection_quality [--tokens T] [--layers L] [--seed S] [--json PATH]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kvtier/kernels/selection.h"

namespace {

using namespace kvtier::kernels;

struct Config {
  uint32_t L = 4, H_kv = 2, H_q = 8, D = 128, T = 4096, W = 32, F = 16, clusters = 8;
  uint32_t cluster_len = 6;
  uint32_t seed = 1;
};

struct Data {
  std::vector<float> keys, values;  // [L][H_kv][T][D]
  std::vector<float> prompt_q;      // [L][H_q][T][D] (the last W rows are the window)
  std::vector<float> window_q;      // [L][H_q][W][D]
  std::vector<float> future_q;      // [L][H_q][F][D]
  std::vector<std::vector<uint32_t>> needles;  // per (l, h): needle token positions
};

std::vector<float> Normalised(std::vector<float> v) {
  double n = 0;
  for (float x : v) n += double(x) * x;
  const float s = float(1.0 / std::sqrt(n));
  for (float& x : v) x *= s;
  return v;
}

Data MakeData(const Config& c) {
  std::mt19937 rng(c.seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  const uint32_t group = c.H_q / c.H_kv, D = c.D, T = c.T;
  const float root_d = std::sqrt(float(D));
  Data d;
  d.keys.resize(size_t(c.L) * c.H_kv * T * D);
  d.values.resize(d.keys.size());
  d.prompt_q.resize(size_t(c.L) * c.H_q * T * D);
  d.window_q.resize(size_t(c.L) * c.H_q * c.W * D);
  d.future_q.resize(size_t(c.L) * c.H_q * c.F * D);
  const uint32_t outliers[4] = {7, 31, 64, 100};
  auto rand_dir = [&] {
    std::vector<float> v(D);
    for (float& x : v) x = n01(rng);
    return Normalised(v);
  };
  for (uint32_t l = 0; l < c.L; ++l) {
    const float sharp = 0.6f + 0.8f * float(l) / float(std::max(1u, c.L - 1));
    for (uint32_t h = 0; h < c.H_kv; ++h) {
      const size_t kv0 = (size_t(l) * c.H_kv + h) * T * D;
      for (uint32_t t = 0; t < T; ++t) {
        const float vscale = std::exp(0.5f * n01(rng));
        for (uint32_t dd = 0; dd < D; ++dd) {
          d.keys[kv0 + size_t(t) * D + dd] = n01(rng);
          d.values[kv0 + size_t(t) * D + dd] = vscale * n01(rng);
        }
        for (uint32_t o : outliers) d.keys[kv0 + size_t(t) * D + o] = 3.0f + 10.0f * n01(rng);
      }
      const std::vector<float> mean_dir = rand_dir();
      // Sink: token 0's key along the mean query direction.
      for (uint32_t dd = 0; dd < D; ++dd) d.keys[kv0 + dd] = 3.0f * root_d * mean_dir[dd];
      // Needle clusters at distinct random positions in [8, T - W - 8).
      std::vector<uint32_t> starts;
      std::vector<std::vector<float>> dirs;
      std::uniform_int_distribution<uint32_t> pos(8, T - c.W - 8 - c.cluster_len);
      while (starts.size() < c.clusters) {
        const uint32_t s = pos(rng);
        bool clash = false;
        for (uint32_t o : starts) clash |= (s + c.cluster_len + 2 > o && o + c.cluster_len + 2 > s);
        if (clash) continue;
        starts.push_back(s);
        dirs.push_back(rand_dir());
      }
      std::vector<uint32_t> needles;
      for (uint32_t j = 0; j < c.clusters; ++j) {
        for (uint32_t i = 0; i < c.cluster_len; ++i) {
          const uint32_t t = starts[j] + i;
          needles.push_back(t);
          for (uint32_t dd = 0; dd < D; ++dd) {
            float& k = d.keys[kv0 + size_t(t) * D + dd];
            k = 0.5f * k + 1.2f * root_d * dirs[j][dd];
          }
        }
      }
      std::sort(needles.begin(), needles.end());
      d.needles.push_back(needles);
      // Queries of the group's heads: mean direction + noise (+ a needle direction).
      // Logit = q.k / sqrt(D): noise ~ N(0, sharp^2); sink 7.5 sharp; an asked needle 7.2 sharp.
      auto make_q = [&](float* q, int cluster) {
        for (uint32_t dd = 0; dd < D; ++dd) {
          q[dd] = sharp * (n01(rng) + 2.5f * mean_dir[dd] +
                           (cluster >= 0 ? 6.0f * dirs[cluster][dd] : 0.0f));
        }
        for (uint32_t o : outliers) q[o] *= 0.1f;  // queries barely use the keys' outlier channels
      };
      for (uint32_t g = 0; g < group; ++g) {
        const uint32_t qh = h * group + g;
        for (uint32_t t = 0; t < T; ++t) {
          int cluster = -1;
          if (u01(rng) < 0.1f) {
            std::vector<int> before;
            for (uint32_t j = 0; j < c.clusters; ++j) {
              if (starts[j] + c.cluster_len <= t) before.push_back(int(j));
            }
            if (!before.empty()) cluster = before[rng() % before.size()];
          }
          make_q(&d.prompt_q[((size_t(l) * c.H_q + qh) * T + t) * D], cluster);
        }
        const uint32_t known = std::max(1u, c.clusters * 3 / 4);
        for (uint32_t r = 0; r < c.W; ++r) {
          const int cluster = u01(rng) < 0.5f ? int(rng() % known) : -1;
          float* q = &d.window_q[((size_t(l) * c.H_q + qh) * c.W + r) * D];
          make_q(q, cluster);
          // The window rows are also the prompt's last W rows.
          std::copy(q, q + D, &d.prompt_q[((size_t(l) * c.H_q + qh) * T + T - c.W + r) * D]);
        }
        for (uint32_t r = 0; r < c.F; ++r) {
          const int cluster = u01(rng) < 0.5f ? int(rng() % c.clusters) : -1;
          make_q(&d.future_q[((size_t(l) * c.H_q + qh) * c.F + r) * D], cluster);
        }
      }
    }
  }
  return d;
}

// Full attention of every future row over all T keys: [L][H_kv][group * F][T].
std::vector<float> FutureAttention(const Config& c, const Data& d) {
  const uint32_t group = c.H_q / c.H_kv, D = c.D, T = c.T, rows = group * c.F;
  std::vector<float> a(size_t(c.L) * c.H_kv * rows * T);
  const float scale = 1.0f / std::sqrt(float(D));
  for (uint32_t l = 0; l < c.L; ++l) {
    for (uint32_t h = 0; h < c.H_kv; ++h) {
      const float* k = &d.keys[(size_t(l) * c.H_kv + h) * T * D];
      for (uint32_t r = 0; r < rows; ++r) {
        const uint32_t qh = h * group + r / c.F;
        const float* q = &d.future_q[((size_t(l) * c.H_q + qh) * c.F + r % c.F) * D];
        float* out = &a[((size_t(l) * c.H_kv + h) * rows + r) * T];
        float m = -INFINITY;
        for (uint32_t t = 0; t < T; ++t) {
          float s = 0;
          for (uint32_t dd = 0; dd < D; ++dd) s += q[dd] * k[size_t(t) * D + dd];
          out[t] = s * scale;
          m = std::max(m, out[t]);
        }
        double z = 0;
        for (uint32_t t = 0; t < T; ++t) z += (out[t] = std::exp(out[t] - m));
        for (uint32_t t = 0; t < T; ++t) out[t] = float(out[t] / z);
      }
    }
  }
  return a;
}

struct Metrics {
  double mass = 0, recall = 0, needles = 0, out_err = 0, kept_fraction = 0;
};

Metrics Evaluate(const Config& c, const Data& d, const std::vector<float>& attn,
                 const Selection& sel, uint32_t budget) {
  const uint32_t group = c.H_q / c.H_kv, D = c.D, T = c.T, rows = group * c.F;
  Metrics m;
  double err2 = 0, ref2 = 0;
  const double heads = double(c.L) * c.H_kv;
  for (uint32_t l = 0; l < c.L; ++l) {
    for (uint32_t h = 0; h < c.H_kv; ++h) {
      auto kept = sel.Kept(l, h);
      std::vector<char> in(T, 0);
      for (uint32_t t : kept) in[t] = 1;
      m.kept_fraction += double(kept.size()) / T / heads;
      const float* a0 = &attn[(size_t(l) * c.H_kv + h) * rows * T];
      // Oracle set: top-`budget` by the mean future attention.
      std::vector<double> mean(T, 0.0);
      for (uint32_t r = 0; r < rows; ++r) {
        for (uint32_t t = 0; t < T; ++t) mean[t] += a0[size_t(r) * T + t];
      }
      std::vector<uint32_t> idx(T);
      std::iota(idx.begin(), idx.end(), 0u);
      std::partial_sort(idx.begin(), idx.begin() + budget, idx.end(),
                        [&](uint32_t x, uint32_t y) { return mean[x] != mean[y] ? mean[x] > mean[y] : x < y; });
      uint32_t hit = 0;
      for (uint32_t i = 0; i < budget; ++i) hit += in[idx[i]];
      m.recall += double(hit) / budget / heads;
      const auto& nd = d.needles[l * c.H_kv + h];
      uint32_t nhit = 0;
      for (uint32_t t : nd) nhit += in[t];
      m.needles += double(nhit) / nd.size() / heads;
      const float* v = &d.values[(size_t(l) * c.H_kv + h) * T * D];
      for (uint32_t r = 0; r < rows; ++r) {
        const float* a = a0 + size_t(r) * T;
        double kept_mass = 0;
        std::vector<double> full(D, 0.0), part(D, 0.0);
        for (uint32_t t = 0; t < T; ++t) {
          for (uint32_t dd = 0; dd < D; ++dd) full[dd] += double(a[t]) * v[size_t(t) * D + dd];
          if (in[t]) {
            kept_mass += a[t];
            for (uint32_t dd = 0; dd < D; ++dd) part[dd] += double(a[t]) * v[size_t(t) * D + dd];
          }
        }
        m.mass += kept_mass / rows / heads;
        for (uint32_t dd = 0; dd < D; ++dd) {
          const double o2 = kept_mass > 0 ? part[dd] / kept_mass : 0.0;
          err2 += (full[dd] - o2) * (full[dd] - o2);
          ref2 += full[dd] * full[dd];
        }
      }
    }
  }
  m.out_err = std::sqrt(err2 / ref2);
  return m;
}

Selection FromSets(const Config& c, const std::vector<std::vector<uint32_t>>& sets) {
  Selection s;
  s.num_layers = c.L;
  s.num_kv_heads = c.H_kv;
  s.num_tokens = c.T;
  for (uint32_t l = 0; l < c.L; ++l) s.kept_per_layer.push_back(uint32_t(sets[l * c.H_kv].size()));
  for (const auto& v : sets) s.positions.insert(s.positions.end(), v.begin(), v.end());
  return s;
}

void Die(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, std::string(s.message()).c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  const char* json_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc) c.T = std::strtoul(argv[++i], 0, 10);
    else if (!std::strcmp(argv[i], "--layers") && i + 1 < argc) c.L = std::strtoul(argv[++i], 0, 10);
    else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) c.seed = std::strtoul(argv[++i], 0, 10);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--tokens T] [--layers L] [--seed S] [--json PATH]\n", argv[0]);
      return 2;
    }
  }
  if (c.T < 512 || c.L < 2) {
    std::fprintf(stderr, "need --tokens >= 512 and --layers >= 2\n");
    return 2;
  }
  const Data d = MakeData(c);
  const std::vector<float> attn = FutureAttention(c, d);

  SelectionInput window;
  window.keys = d.keys.data();
  window.queries = d.window_q.data();
  window.dtype = DType::kFloat32;
  window.num_layers = c.L;
  window.num_kv_heads = c.H_kv;
  window.num_query_heads = c.H_q;
  window.head_dim = c.D;
  window.num_tokens = c.T;
  window.num_queries = c.W;
  SelectionInput prompt = window;
  prompt.queries = d.prompt_q.data();
  prompt.num_queries = c.T;
  auto h2o_scores = H2oColumnScores(prompt);
  Die(h2o_scores.status(), "h2o column sums");

  const uint32_t group = c.H_q / c.H_kv, rows = group * c.F;
  struct Out {
    std::string method;
    double budget_pct;
    uint32_t budget;
    Metrics m;
  };
  std::vector<Out> results;
  std::mt19937 rng(c.seed + 1000);
  for (double pct : {5.0, 10.0, 20.0, 50.0}) {
    const uint32_t B = uint32_t(std::floor(c.T * pct / 100.0));
    // Oracle.
    std::vector<std::vector<uint32_t>> oracle, random;
    for (uint32_t l = 0; l < c.L; ++l) {
      for (uint32_t h = 0; h < c.H_kv; ++h) {
        const float* a0 = &attn[(size_t(l) * c.H_kv + h) * rows * c.T];
        std::vector<double> mean(c.T, 0.0);
        for (uint32_t r = 0; r < rows; ++r) {
          for (uint32_t t = 0; t < c.T; ++t) mean[t] += a0[size_t(r) * c.T + t];
        }
        std::vector<uint32_t> idx(c.T);
        std::iota(idx.begin(), idx.end(), 0u);
        std::partial_sort(idx.begin(), idx.begin() + B, idx.end(), [&](uint32_t x, uint32_t y) {
          return mean[x] != mean[y] ? mean[x] > mean[y] : x < y;
        });
        std::vector<uint32_t> o(idx.begin(), idx.begin() + B);
        std::sort(o.begin(), o.end());
        oracle.push_back(o);
        std::shuffle(idx.begin(), idx.end(), rng);
        std::vector<uint32_t> rnd(idx.begin(), idx.begin() + B);
        std::sort(rnd.begin(), rnd.end());
        random.push_back(rnd);
      }
    }
    results.push_back({"oracle", pct, B, Evaluate(c, d, attn, FromSets(c, oracle), B)});
    results.push_back({"random", pct, B, Evaluate(c, d, attn, FromSets(c, random), B)});
    StreamingOptions so;
    so.sink_tokens = 4;
    so.recent_tokens = B - 4;
    auto st = SelectStreaming(so, c.L, c.H_kv, c.T);
    Die(st.status(), "streaming");
    results.push_back({"streaming", pct, B, Evaluate(c, d, attn, *st, B)});
    H2oScoresInput hs;
    hs.scores = h2o_scores->data();
    hs.num_layers = c.L;
    hs.num_score_heads = hs.num_kv_heads = c.H_kv;
    hs.num_query_heads = c.H_q;
    hs.num_tokens = c.T;
    H2oOptions ho;
    ho.heavy_budget = B / 2;
    ho.recent_budget = B - B / 2;
    auto h2o = SelectH2o(ho, hs);
    Die(h2o.status(), "h2o");
    results.push_back({"h2o", pct, B, Evaluate(c, d, attn, *h2o, B)});
    for (bool pyramid : {false, true}) {
      SnapKvOptions o = pyramid ? SnapKvOptions::PyramidKv() : SnapKvOptions();
      o.window = c.W;
      o.budget = B;
      auto sel = SelectSnapKv(o, window);
      Die(sel.status(), "snapkv");
      results.push_back({pyramid ? "pyramidkv" : "snapkv", pct, B, Evaluate(c, d, attn, *sel, B)});
    }
  }

  std::printf("selection_quality: L=%u H_q=%u H_kv=%u D=%u T=%u W=%u, %u future rows per query "
              "head, %u needle clusters x %u tokens, seed %u\n\n", c.L, c.H_q, c.H_kv, c.D, c.T,
              c.W, c.F, c.clusters, c.cluster_len, c.seed);
  std::printf("| budget | method | kept | attention mass kept | top-k recall | needle recall | "
              "output error |\n|---|---|---|---|---|---|---|\n");
  for (const Out& o : results) {
    std::printf("| %.0f%% (%u) | %s | %.1f%% | %.3f | %.3f | %.3f | %.3f |\n", o.budget_pct,
                o.budget, o.method.c_str(), 100.0 * o.m.kept_fraction, o.m.mass, o.m.recall,
                o.m.needles, o.m.out_err);
  }
  if (json_path) {
    FILE* f = std::fopen(json_path, "w");
    if (!f) {
      std::perror(json_path);
      return 1;
    }
    std::fprintf(f, "{\n  \"tool\": \"selection_quality\",\n  \"config\": {\"layers\": %u, "
                 "\"query_heads\": %u, \"kv_heads\": %u, \"head_dim\": %u, \"tokens\": %u, "
                 "\"window\": %u, \"future_rows\": %u, \"clusters\": %u, \"seed\": %u},\n"
                 "  \"results\": [\n", c.L, c.H_q, c.H_kv, c.D, c.T, c.W, c.F, c.clusters, c.seed);
    for (size_t i = 0; i < results.size(); ++i) {
      const Out& o = results[i];
      std::fprintf(f, "    {\"budget_pct\": %.0f, \"budget\": %u, \"method\": \"%s\", "
                   "\"kept_fraction\": %.4f, \"mass\": %.4f, \"recall\": %.4f, \"needles\": %.4f, "
                   "\"out_err\": %.4f}%s\n", o.budget_pct, o.budget, o.method.c_str(),
                   o.m.kept_fraction, o.m.mass, o.m.recall, o.m.needles, o.m.out_err,
                   i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  return 0;
}
