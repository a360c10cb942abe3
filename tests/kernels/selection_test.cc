// CPU reference of token selection: budgets, PyramidKV schedule, tie rule, GQA reduction,
// planted needles and bad inputs.
#include "kvtier/kernels/selection.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "selection_test_data.h"

namespace kvtier::kernels {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

SelectionInput HostInput(const testing::AttentionData& a, const std::vector<uint8_t>& k,
                         const std::vector<uint8_t>& q, DType dtype) {
  SelectionInput in;
  in.keys = k.data();
  in.queries = q.data();
  in.dtype = dtype;
  in.num_layers = a.L;
  in.num_kv_heads = a.H_kv;
  in.num_query_heads = a.H_q;
  in.head_dim = a.D;
  in.num_tokens = a.T;
  in.num_queries = a.Wq;
  return in;
}

TEST(PyramidKvCapsTest, WorkedExampleL32W8C128) {
  auto caps = PyramidKvCaps(32, 100000, 8, 128, 20);
  ASSERT_TRUE(caps.ok()) << caps.status();
  ASSERT_EQ(caps->size(), 32u);
  // B = 120, min = 6, max = 234, step = (234 - 6) / 31 = 7.
  for (uint32_t l = 0; l < 32; ++l) EXPECT_EQ((*caps)[l], 234u - 7u * l) << "layer " << l;
  EXPECT_EQ(caps->front(), 234u);
  EXPECT_EQ(caps->back(), 17u);
}

TEST(PyramidKvCapsTest, ShortPromptsKeepAllOrUniform) {
  // T < C: keep every token (caps = T - W).
  auto all = PyramidKvCaps(4, 100, 8, 128);
  ASSERT_TRUE(all.ok());
  EXPECT_THAT(*all, ElementsAreArray(std::vector<uint32_t>(4, 92)));
  // C <= T < 2B: uniform B.
  auto uni = PyramidKvCaps(4, 200, 8, 128);
  ASSERT_TRUE(uni.ok());
  EXPECT_THAT(*uni, ElementsAreArray(std::vector<uint32_t>(4, 120)));
  // 2B <= T but max >= T - W: max = T - W, min = 2B - max.
  auto capped = PyramidKvCaps(3, 248, 8, 128);  // T - W = 240 <= 234? no: max 234 < 240
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->front(), 234u);
  auto capped2 = PyramidKvCaps(3, 240, 8, 128);  // T - W = 232 <= 234 -> max 232, min 8
  ASSERT_TRUE(capped2.ok());
  EXPECT_THAT(*capped2, ElementsAreArray({232u, 120u, 8u}));
  EXPECT_FALSE(PyramidKvCaps(0, 240, 8, 128).ok());
  EXPECT_FALSE(PyramidKvCaps(2, 4, 8, 128).ok());  // W > T
}

TEST(SnapKvTest, ScoresMatchHandComputedSoftmax) {
  // T = 4, W = 2, D = 2, one head, fp32: rows at positions 2 and 3.
  const std::vector<float> k = {1, 0, 0, 1, 1, 1, -1, 0};
  const std::vector<float> q = {2, 0, 0, 2};
  SelectionInput in;
  in.keys = k.data();
  in.queries = q.data();
  in.dtype = DType::kFloat32;
  in.num_layers = in.num_kv_heads = in.num_query_heads = 1;
  in.head_dim = 2;
  in.num_tokens = 4;
  in.num_queries = 2;
  SnapKvOptions o;
  o.window = 2;
  o.budget = 3;
  o.pool_kernel = 1;
  auto s = SnapKvScores(o, in);
  ASSERT_TRUE(s.ok()) << s.status();
  const float c = 1.0f / std::sqrt(2.0f);
  // Row 0 (position 2) sees keys 0..2: logits 2c, 0, 2c. Row 1 sees 0..3: 0, 2c, 2c, 0.
  const float z0 = 2 * std::exp(2 * c) + 1;
  const float z1 = 2 * std::exp(2 * c) + 2;
  ASSERT_EQ(s->size(), 2u);
  EXPECT_NEAR((*s)[0], std::exp(2 * c) / z0 + 1 / z1, 1e-6);
  EXPECT_NEAR((*s)[1], 1 / z0 + std::exp(2 * c) / z1, 1e-6);
  auto sel = SelectSnapKv(o, in);
  ASSERT_TRUE(sel.ok());
  // Token 0 scores higher than token 1; the window (2, 3) is always kept.
  EXPECT_THAT(sel->Kept(0, 0), ElementsAreArray({0u, 2u, 3u}));
}

TEST(SnapKvTest, BudgetsExactWindowKeptNeedleFound) {
  for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    auto a = testing::MakeAttentionData(2, 2, 8, 64, 300, 16, 11);
    auto k = testing::Encode(a.keys, dtype);
    auto q = testing::Encode(a.queries, dtype);
    SnapKvOptions o;
    o.window = 16;
    o.budget = 48;
    auto sel = SelectSnapKv(o, HostInput(a, k, q, dtype));
    ASSERT_TRUE(sel.ok()) << sel.status();
    ASSERT_TRUE(sel->Validate().ok()) << sel->Validate();
    EXPECT_THAT(sel->kept_per_layer, ElementsAreArray({48u, 48u}));
    EXPECT_EQ(sel->TotalKept(), 2u * 2u * 48u);
    for (uint32_t l = 0; l < 2; ++l) {
      for (uint32_t h = 0; h < 2; ++h) {
        auto kept = sel->Kept(l, h);
        for (uint32_t t = 284; t < 300; ++t) {
          EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), t)) << t;
        }
        const uint32_t needle = a.needle[l * 2 + h];
        // Max pooling with kernel 7 keeps the needle and its neighbours.
        for (uint32_t t = needle > 3 ? needle - 3 : 0; t <= needle + 3 && t < 284; ++t) {
          EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), t))
              << "layer " << l << " head " << h << " needle " << needle << " missing " << t;
        }
      }
    }
  }
}

TEST(SnapKvTest, EqualScoresKeepLowerPositions) {
  // All-zero keys: every token gets the same attention, so the tie rule decides.
  const uint32_t T = 64, D = 16;
  std::vector<float> k(size_t(T) * D, 0.0f), q(size_t(4) * D, 1.0f);
  SelectionInput in;
  in.keys = k.data();
  in.queries = q.data();
  in.dtype = DType::kFloat32;
  in.num_layers = in.num_kv_heads = in.num_query_heads = 1;
  in.head_dim = D;
  in.num_tokens = T;
  in.num_queries = 4;
  SnapKvOptions o;
  o.window = 4;
  o.budget = 14;
  for (Pooling p : {Pooling::kMax, Pooling::kAvg}) {
    o.pooling = p;
    o.pool_kernel = 1;  // avg pooling with padding would favour interior tokens
    auto sel = SelectSnapKv(o, in);
    ASSERT_TRUE(sel.ok());
    EXPECT_THAT(sel->Kept(0, 0),
                ElementsAreArray({0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 60u, 61u, 62u, 63u}));
  }
  // Avg pooling with zero padding: the edges average in zeros, so interior tokens win,
  // lowest interior positions first.
  o.pooling = Pooling::kAvg;
  o.pool_kernel = 5;
  auto sel = SelectSnapKv(o, in);
  ASSERT_TRUE(sel.ok());
  EXPECT_THAT(sel->Kept(0, 0),
              ElementsAreArray({2u, 3u, 4u, 5u, 6u, 7u, 8u, 9u, 10u, 11u, 60u, 61u, 62u, 63u}));
}

TEST(SnapKvTest, GqaScoresAreTheGroupMean) {
  auto a = testing::MakeAttentionData(1, 1, 4, 32, 100, 8, 5);
  auto k = testing::Encode(a.keys, DType::kFloat32);
  auto q = testing::Encode(a.queries, DType::kFloat32);
  SnapKvOptions o;
  o.window = 8;
  o.budget = 20;
  auto grouped = SnapKvScores(o, HostInput(a, k, q, DType::kFloat32));
  ASSERT_TRUE(grouped.ok());
  std::vector<double> mean(92, 0.0);
  for (uint32_t g = 0; g < 4; ++g) {
    testing::AttentionData one = a;
    one.H_q = 1;
    std::vector<float> qg(a.queries.begin() + g * 8 * 32, a.queries.begin() + (g + 1) * 8 * 32);
    auto qb = testing::Encode(qg, DType::kFloat32);
    auto s = SnapKvScores(o, HostInput(one, k, qb, DType::kFloat32));
    ASSERT_TRUE(s.ok());
    for (size_t t = 0; t < 92; ++t) mean[t] += (*s)[t] / 4.0;
  }
  for (size_t t = 0; t < 92; ++t) EXPECT_NEAR((*grouped)[t], mean[t], 1e-6) << t;
  // The window's 8 rows each sum to 1 over all keys: the non-window mass is at most 8.
  const double total = std::accumulate(grouped->begin(), grouped->end(), 0.0);
  EXPECT_GT(total, 0.0);
  EXPECT_LE(total, 8.0 + 1e-4);
}

TEST(PyramidKvTest, PerLayerBudgetsExactlyRespected) {
  auto a = testing::MakeAttentionData(4, 2, 4, 32, 400, 8, 7);
  auto k = testing::Encode(a.keys, DType::kFloat16);
  auto q = testing::Encode(a.queries, DType::kFloat16);
  SnapKvOptions o = SnapKvOptions::PyramidKv();
  o.window = 8;
  o.budget = 64;
  auto caps = PyramidKvCaps(4, 400, 8, 64);
  ASSERT_TRUE(caps.ok());
  auto sel = SelectSnapKv(o, HostInput(a, k, q, DType::kFloat16));
  ASSERT_TRUE(sel.ok()) << sel.status();
  ASSERT_TRUE(sel->Validate().ok());
  for (uint32_t l = 0; l < 4; ++l) {
    EXPECT_EQ(sel->kept_per_layer[l], (*caps)[l] + 8) << l;
    for (uint32_t h = 0; h < 2; ++h) EXPECT_EQ(sel->Kept(l, h).size(), (*caps)[l] + 8);
  }
  EXPECT_GT(sel->kept_per_layer[0], sel->kept_per_layer[3]);
}

TEST(SnapKvTest, ShortPromptRejectedOrKeptWhole) {
  auto a = testing::MakeAttentionData(1, 1, 1, 16, 40, 8, 3);
  auto k = testing::Encode(a.keys, DType::kFloat32);
  auto q = testing::Encode(a.queries, DType::kFloat32);
  SnapKvOptions o;
  o.window = 8;
  o.budget = 64;
  auto bad = SelectSnapKv(o, HostInput(a, k, q, DType::kFloat32));
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("budget 64 is larger than the prompt (40"));
  o.keep_all_if_short = true;
  for (LayerBudgets lb : {LayerBudgets::kUniform, LayerBudgets::kPyramid}) {
    o.layer_budgets = lb;
    auto all = SelectSnapKv(o, HostInput(a, k, q, DType::kFloat32));
    ASSERT_TRUE(all.ok()) << all.status();
    std::vector<uint32_t> every(40);
    std::iota(every.begin(), every.end(), 0u);
    EXPECT_THAT(all->Kept(0, 0), ElementsAreArray(every));
  }
}

TEST(SnapKvTest, BadInputsGiveClearErrors) {
  auto a = testing::MakeAttentionData(1, 2, 4, 16, 64, 8, 3);
  auto k = testing::Encode(a.keys, DType::kFloat32);
  auto q = testing::Encode(a.queries, DType::kFloat32);
  SelectionInput in = HostInput(a, k, q, DType::kFloat32);
  SnapKvOptions o;
  o.window = 8;
  o.budget = 32;
  ASSERT_TRUE(SelectSnapKv(o, in).ok());

  auto expect_invalid = [&](const SnapKvOptions& opt, const SelectionInput& i, const char* what) {
    auto r = SelectSnapKv(opt, i);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_THAT(r.status().message(), HasSubstr(what));
  };
  SnapKvOptions big = o;
  big.budget = 65;
  expect_invalid(big, in, "budget 65 is larger than the prompt (64 tokens)");
  SnapKvOptions wrong_w = o;
  wrong_w.window = 4;
  expect_invalid(wrong_w, in, "queries hold 8 rows per head; the observation window needs "
                              "exactly window = 4");
  SelectionInput long_w = in;
  long_w.num_tokens = 6;
  SnapKvOptions w6 = o;
  w6.budget = 8;
  expect_invalid(w6, long_w, "8 query rows but only 6 tokens");
  SnapKvOptions w_over = o;
  w_over.window = 70;
  w_over.budget = 80;
  SelectionInput in70 = in;
  in70.num_queries = 70;
  in70.num_tokens = 64;
  expect_invalid(w_over, in70, "70 query rows but only 64 tokens");
  SelectionInput heads = in;
  heads.num_query_heads = 3;
  expect_invalid(o, heads, "3 query heads is not a multiple of 2 KV heads");
  SnapKvOptions even = o;
  even.pool_kernel = 4;
  expect_invalid(even, in, "pool_kernel must be odd");
  SnapKvOptions small = o;
  small.budget = 4;
  expect_invalid(small, in, "budget 4 is smaller than the window 8");
  SelectionInput null_k = in;
  null_k.keys = nullptr;
  expect_invalid(o, null_k, "keys is null");
#ifndef KVTIER_HAVE_CUDA
  SelectionInput dev = in;
  dev.space = MemorySpace::kDevice;
  expect_invalid(o, dev, "no CUDA");
#endif
}

TEST(SnapKvTest, WindowLongerThanPromptRejected) {
  SnapKvOptions o;
  o.window = 10;
  o.budget = 10;
  std::vector<float> k(8 * 4, 1.0f), q(10 * 4, 1.0f);
  SelectionInput in;
  in.keys = k.data();
  in.queries = q.data();
  in.dtype = DType::kFloat32;
  in.num_layers = in.num_kv_heads = in.num_query_heads = 1;
  in.head_dim = 4;
  in.num_tokens = 8;
  in.num_queries = 8;
  auto r = SelectSnapKv(o, in);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("window 10 is longer than the prompt (8 tokens)"));
}

TEST(H2oTest, FromScoresHeavyPlusRecentWithGroupMean) {
  // 1 layer, 1 KV head, 2 query heads, T = 10.
  const std::vector<float> s = {
      9, 1, 5, 5, 0, 7, 1, 1, 1, 1,  // query head 0
      9, 1, 5, 5, 0, 1, 1, 1, 1, 1,  // query head 1 -> mean: 9 1 5 5 0 4 1 1 1 1
  };
  H2oScoresInput in;
  in.scores = s.data();
  in.num_layers = 1;
  in.num_score_heads = 2;
  in.num_kv_heads = 1;
  in.num_query_heads = 2;
  in.num_tokens = 10;
  H2oOptions o;
  o.heavy_budget = 3;
  o.recent_budget = 3;
  auto sel = SelectH2o(o, in);
  ASSERT_TRUE(sel.ok()) << sel.status();
  // Heavy among 0..6: 9 (0), then 5 at 2 and 3 (tie: both), then recent 7, 8, 9.
  EXPECT_THAT(sel->Kept(0, 0), ElementsAreArray({0u, 2u, 3u, 7u, 8u, 9u}));
  o.heavy_budget = 2;  // 5 at 2 and 5 at 3 tie: lower position wins
  sel = SelectH2o(o, in);
  ASSERT_TRUE(sel.ok());
  EXPECT_THAT(sel->Kept(0, 0), ElementsAreArray({0u, 2u, 7u, 8u, 9u}));
  // Scores given per KV head are used as is.
  H2oScoresInput kv = in;
  kv.num_score_heads = 1;
  kv.num_query_heads = 2;
  o.heavy_budget = 3;
  sel = SelectH2o(o, kv);
  ASSERT_TRUE(sel.ok());
  EXPECT_THAT(sel->Kept(0, 0), ElementsAreArray({0u, 2u, 5u, 7u, 8u, 9u}));

  H2oOptions too_big;
  too_big.heavy_budget = 6;
  too_big.recent_budget = 5;
  auto r = SelectH2o(too_big, in);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("heavy 6 + recent 5 is larger than the prompt"));
  H2oScoresInput wrong = in;
  wrong.num_score_heads = 3;
  r = SelectH2o(o, wrong);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("3 score heads"));
}

TEST(H2oTest, FromQueriesColumnSumsAddUpToTheRows) {
  auto a = testing::MakeAttentionData(2, 1, 2, 32, 80, 80, 9, /*plant_needle=*/false);
  auto k = testing::Encode(a.keys, DType::kBFloat16);
  auto q = testing::Encode(a.queries, DType::kBFloat16);
  SelectionInput in = HostInput(a, k, q, DType::kBFloat16);
  auto cols = H2oColumnScores(in);
  ASSERT_TRUE(cols.ok()) << cols.status();
  ASSERT_EQ(cols->size(), 2u * 80u);
  for (uint32_t l = 0; l < 2; ++l) {
    // Every causal row sums to 1; the group mean keeps that: total = T.
    double total = std::accumulate(cols->begin() + l * 80, cols->begin() + (l + 1) * 80, 0.0);
    EXPECT_NEAR(total, 80.0, 1e-3);
    // Token 0 is seen by every row, the last token only by itself (its score is at most 1).
    EXPECT_LE((*cols)[l * 80 + 79], 1.0f + 1e-6f);
  }
  H2oOptions o;
  o.heavy_budget = 10;
  o.recent_budget = 6;
  auto sel = SelectH2oFromQueries(o, in);
  ASSERT_TRUE(sel.ok()) << sel.status();
  ASSERT_TRUE(sel->Validate().ok());
  EXPECT_THAT(sel->kept_per_layer, ElementsAreArray({16u, 16u}));
  // Same result as feeding the column sums in as engine scores.
  H2oScoresInput si;
  si.scores = cols->data();
  si.num_layers = 2;
  si.num_score_heads = si.num_kv_heads = 1;
  si.num_query_heads = 2;
  si.num_tokens = 80;
  auto via_scores = SelectH2o(o, si);
  ASSERT_TRUE(via_scores.ok());
  EXPECT_EQ(via_scores->positions, sel->positions);

  SelectionInput window_only = in;
  window_only.num_queries = 8;
  auto r = SelectH2oFromQueries(o, window_only);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("column sums need all 80 prompt queries"));
}

TEST(StreamingTest, SinksAndRecent) {
  StreamingOptions o;
  o.sink_tokens = 2;
  o.recent_tokens = 3;
  auto sel = SelectStreaming(o, 2, 3, 20);
  ASSERT_TRUE(sel.ok());
  ASSERT_TRUE(sel->Validate().ok());
  for (uint32_t l = 0; l < 2; ++l) {
    for (uint32_t h = 0; h < 3; ++h) {
      EXPECT_THAT(sel->Kept(l, h), ElementsAreArray({0u, 1u, 17u, 18u, 19u}));
    }
  }
  auto whole = SelectStreaming(o, 1, 1, 5);
  ASSERT_TRUE(whole.ok());
  EXPECT_THAT(whole->Kept(0, 0), ElementsAreArray({0u, 1u, 2u, 3u, 4u}));
  auto r = SelectStreaming(o, 1, 1, 4);
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("larger than the prompt (4 tokens)"));
}

TEST(SelectionTest, ValidateCatchesBrokenResults) {
  Selection s;
  s.num_layers = 1;
  s.num_kv_heads = 1;
  s.num_tokens = 5;
  s.kept_per_layer = {3};
  s.positions = {0, 2, 4};
  EXPECT_TRUE(s.Validate().ok());
  s.positions = {0, 4, 2};
  EXPECT_FALSE(s.Validate().ok());
  s.positions = {0, 2, 5};
  EXPECT_FALSE(s.Validate().ok());
  s.positions = {0, 2};
  EXPECT_FALSE(s.Validate().ok());
}

}  // namespace
}  // namespace kvtier::kernels
