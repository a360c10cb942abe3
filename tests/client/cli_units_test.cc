// Unit tests of the CLI's pure pieces: .npy I/O, trace parsing, synthetic data and token-id
// derivation for replay, tensor shape checks, latency percentiles.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "kvtier/client/client.h"
#include "latency.h"
#include "npy.h"
#include "synthetic.h"
#include "tensor_io.h"
#include "trace.h"

namespace kvtier::cli {
namespace {

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

// Written by numpy 1.24: np.save(f, np.arange(6, dtype='<f2').reshape(2, 3)).
const char kNumpyF2[] =
    "934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a2046"
    "616c73652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020200a0000003c004000"
    "4200440045";
// np.save(f, np.array([7], dtype='<i8')).
const char kNumpyI8[] =
    "934e554d5059010076007b276465736372273a20273c6938272c2027666f727472616e5f6f72646572273a2046"
    "616c73652c20277368617065273a2028312c292c207d2020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020200a07000000000000"
    "00";

TEST(NpyTest, ReadsWhatNumpyWrites) {
  auto a = ParseNpy(FromHex(kNumpyF2));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->descr, "<f2");
  EXPECT_EQ(a->shape, (std::vector<uint64_t>{2, 3}));
  ASSERT_EQ(a->data.size(), 12u);
  EXPECT_EQ(a->data[2], 0x00);
  EXPECT_EQ(a->data[3], 0x3c);  // 1.0 in fp16
  auto b = ParseNpy(FromHex(kNumpyI8));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->shape, (std::vector<uint64_t>{1}));
  EXPECT_EQ(b->data[0], 7);
}

TEST(NpyTest, WritesWhatNumpyWrites) {
  auto a = ParseNpy(FromHex(kNumpyF2));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(SerializeNpy(*a), FromHex(kNumpyF2));
  auto b = ParseNpy(FromHex(kNumpyI8));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(SerializeNpy(*b), FromHex(kNumpyI8));
}

TEST(NpyTest, RoundTripsThroughAFileAndAlignsData) {
  NpyArray a;
  a.descr = "<f4";
  a.shape = {3, 1, 2, 5, 4};
  a.data.resize(3 * 2 * 5 * 4 * 4);
  for (size_t i = 0; i < a.data.size(); ++i) a.data[i] = static_cast<uint8_t>(i * 7);
  const std::string path = ::testing::TempDir() + "/npy_roundtrip.npy";
  ASSERT_TRUE(WriteNpy(path, a).ok());
  auto b = ReadNpy(path);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->descr, a.descr);
  EXPECT_EQ(b->shape, a.shape);
  EXPECT_EQ(b->data, a.data);
  EXPECT_EQ((SerializeNpy(a).size() - a.data.size()) % 64, 0u);
  std::remove(path.c_str());
}

TEST(NpyTest, RejectsWhatItCannotRead) {
  EXPECT_FALSE(ParseNpy("not numpy").ok());
  std::string f = FromHex(kNumpyF2);
  EXPECT_FALSE(ParseNpy(f.substr(0, f.size() - 1)).ok());  // truncated data
  std::string fortran = f;
  fortran.replace(fortran.find("False"), 5, "True ");
  EXPECT_FALSE(ParseNpy(fortran).ok());
  std::string big = f;
  big.replace(big.find("<f2"), 3, ">f2");
  EXPECT_FALSE(ParseNpy(big).ok());
  EXPECT_EQ(ReadNpy("/nonexistent/x.npy").status().code(), absl::StatusCode::kNotFound);
}

TEST(TraceTest, ParsesMooncakeLines) {
  auto r = ParseTraceLine(
      R"({"timestamp": 277, "input_length": 32140, "output_length": 92, "hash_ids": [198, 199, 200]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->timestamp_ms, 277);
  EXPECT_EQ(r->input_length, 32140u);
  EXPECT_EQ(r->output_length, 92u);
  EXPECT_EQ(r->hash_ids, (std::vector<uint64_t>{198, 199, 200}));
  // Other fields are skipped; key order does not matter; empty hash_ids are fine.
  auto s = ParseTraceLine(
      R"({"hash_ids": [], "extra": {"x": 1}, "output_length": 1, "input_length": 5, "timestamp": 1.5})");
  EXPECT_FALSE(s.ok());  // nested objects are not part of the format
  auto t = ParseTraceLine(
      R"({"hash_ids": [], "extra": [1, "a"], "output_length": 1, "input_length": 5, "timestamp": 1.5})");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->timestamp_ms, 1);
  EXPECT_TRUE(t->hash_ids.empty());
}

TEST(TraceTest, RejectsBrokenLines) {
  EXPECT_FALSE(ParseTraceLine(R"({"timestamp": 1, "input_length": 2, "output_length": 3})").ok());
  EXPECT_FALSE(ParseTraceLine(R"({"timestamp": 1, "input_length": 2, "output_length": 3, "hash_ids": [1,)").ok());
  EXPECT_FALSE(ParseTraceLine(R"({"timestamp": -1, "input_length": 2, "output_length": 3, "hash_ids": []})").ok());
  EXPECT_FALSE(ParseTraceLine(R"({"timestamp": 1, "input_length": 2, "output_length": 3, "hash_ids": []} x)").ok());
  const std::string path = ::testing::TempDir() + "/trace_bad.jsonl";
  std::ofstream(path) << R"({"timestamp": 1, "input_length": 2, "output_length": 3, "hash_ids": []})"
                      << "\n\nnot json\n";
  auto trace = ReadTrace(path);
  ASSERT_FALSE(trace.ok());
  EXPECT_NE(std::string(trace.status().message()).find(":3:"), std::string::npos)
      << trace.status();
  auto limited = ReadTrace(path, 1);
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(limited->size(), 1u);
  std::remove(path.c_str());
}

TEST(SyntheticTest, HalfConversionMatchesIeee) {
  // Expected bits from numpy.float16.
  EXPECT_EQ(FloatToHalf(1.0f), 15360);
  EXPECT_EQ(FloatToHalf(-2.0f), 49152);
  EXPECT_EQ(FloatToHalf(65504.0f), 31743);
  EXPECT_EQ(FloatToHalf(5.9604645e-08f), 1);   // 2^-24, smallest subnormal
  EXPECT_EQ(FloatToHalf(3.0517578e-05f), 512);  // 2^-15, subnormal
  EXPECT_EQ(FloatToHalf(0.1f), 11878);
  EXPECT_EQ(FloatToHalf(0.33325f), 13653);
  EXPECT_EQ(FloatToHalf(1e6f), 0x7C00);
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xC000);
}

TEST(SyntheticTest, BlockTokensAreAFunctionOfTheIdAlone) {
  EXPECT_EQ(BlockTokens(42, 512), BlockTokens(42, 512));
  EXPECT_NE(BlockTokens(42, 512), BlockTokens(43, 512));
  for (uint32_t t : BlockTokens(7, 512)) EXPECT_LT(t, 128256u);
  EXPECT_EQ(SyntheticKv(kernels::KvLayout::Mha(2, 1, 1, 64), 16, 9),
            SyntheticKv(kernels::KvLayout::Mha(2, 1, 1, 64), 16, 9));
  EXPECT_NE(SyntheticKv(kernels::KvLayout::Mha(2, 1, 1, 64), 16, 9),
            SyntheticKv(kernels::KvLayout::Mha(2, 1, 1, 64), 16, 10));
}

// Equal hash-id prefixes give equal chunk keys, and keys diverge from the first differing block.
TEST(SyntheticTest, EqualHashPrefixesGiveEqualKeys) {
  client::NamespaceSpec ns;
  ns.tokens_per_chunk = 512;
  ns.salt = "tenant";
  const std::vector<uint64_t> a = {1, 2, 3, 4}, b = {1, 2, 9, 4};
  const auto ka = client::Client::ComputeKeys(ns, RequestTokens(a, 512));
  const auto kb = client::Client::ComputeKeys(ns, RequestTokens(b, 512));
  ASSERT_EQ(ka.size(), 4u);
  ASSERT_EQ(kb.size(), 4u);
  EXPECT_EQ(ka[0], kb[0]);
  EXPECT_EQ(ka[1], kb[1]);
  EXPECT_NE(ka[2], kb[2]);
  EXPECT_NE(ka[3], kb[3]);  // same id 4, different prefix
  ns.salt = "other";
  EXPECT_NE(client::Client::ComputeKeys(ns, RequestTokens(a, 512))[0], ka[0]);
}

TEST(TensorIoTest, ChecksShapeAndDtype) {
  const auto mha = kernels::KvLayout::Mha(2, 4, 8, 16);
  NpyArray a;
  a.descr = "<f2";
  a.shape = ChunkShape(mha, 10);
  EXPECT_EQ(a.shape, (std::vector<uint64_t>{2, 2, 4, 10, 16}));
  a.data.resize(mha.ChunkBytes(10));
  auto t = ChunkTokens(a, mha);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, 10u);
  a.descr = "<f4";
  EXPECT_FALSE(ChunkTokens(a, mha).ok());
  a.descr = "<f2";
  a.shape = {2, 2, 5, 10, 16};
  EXPECT_FALSE(ChunkTokens(a, mha).ok());
  a.shape = {2 * 2 * 4 * 10 * 16};
  EXPECT_FALSE(ChunkTokens(a, mha).ok());
  const auto mla = kernels::KvLayout::Mla(3, 32, 8, kernels::DType::kBFloat16);
  NpyArray m;
  m.descr = "<u2";
  m.shape = {3, 7, 40};
  auto mt = ChunkTokens(m, mla);
  ASSERT_TRUE(mt.ok()) << mt.status();
  EXPECT_EQ(*mt, 7u);
}

TEST(TensorIoTest, ParsesTokens) {
  auto t = ParseTokens("1, 2,3\n4");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, (std::vector<uint32_t>{1, 2, 3, 4}));
  EXPECT_FALSE(ParseTokens("1 -2").ok());
  EXPECT_FALSE(ParseTokens("1 99999999999").ok());
  NpyArray ids;
  ids.descr = "<i8";
  ids.shape = {3};
  const int64_t v[3] = {5, 6, 128255};
  ids.data.assign(reinterpret_cast<const uint8_t*>(v), reinterpret_cast<const uint8_t*>(v) + 24);
  const std::string path = ::testing::TempDir() + "/tokens.npy";
  ASSERT_TRUE(WriteNpy(path, ids).ok());
  auto r = ReadTokens(path);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, (std::vector<uint32_t>{5, 6, 128255}));
  std::remove(path.c_str());
}

TEST(LatencyTest, NearestRankPercentiles) {
  LatencyRecorder r;
  for (int i = 100; i >= 1; --i) r.Add(std::chrono::microseconds(i));
  const LatencySummary s = r.Summarize();
  EXPECT_EQ(s.count, 100u);
  EXPECT_DOUBLE_EQ(s.p50_us, 50);
  EXPECT_DOUBLE_EQ(s.p90_us, 90);
  EXPECT_DOUBLE_EQ(s.p99_us, 99);
  EXPECT_DOUBLE_EQ(s.max_us, 100);
  EXPECT_DOUBLE_EQ(s.mean_us, 50.5);
  EXPECT_EQ(LatencyRecorder().Summarize().count, 0u);
}

}  // namespace
}  // namespace kvtier::cli
