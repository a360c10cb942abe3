// GpuStager on a GPU: a host chunk encoded through the stager has exactly the CPU reference's
// payload bytes, and a stager decode writes exactly what the CPU decode writes, for every codec
// with GPU kernels (raw, fp8, kivi, turboquant incl. prod and the outlier splits), fp16 and bf16,
// on the pinned-staging path (default and with a staging buffer far smaller than the chunks, so
// transfers move in many pieces) and on the legacy path; concurrent callers share the slots
// without mixing their data; oversized chunks and corrupt payloads are refused with a clear
// status and leave the output untouched.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "codec_test_util.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/gpu_stager.h"

namespace kvtier::kernels {
namespace {

ChunkInput HostInput(const std::vector<uint8_t>& data, const KvLayout& l, uint32_t tokens) {
  ChunkInput in;
  in.data = data.data();
  in.space = MemorySpace::kHost;
  in.layout = l;
  in.num_tokens = tokens;
  in.ends_sequence = true;
  return in;
}

// The staging variants every equality test runs on.
struct Staging {
  const char* name;
  size_t staging_bytes;
  bool legacy;
};
constexpr Staging kStagings[] = {
    {"pinned, default size", GpuStager::Options{}.staging_bytes, false},
    {"pinned, 64 KiB (many pieces)", size_t{64} << 10, false},
    {"legacy", GpuStager::Options{}.staging_bytes, true},
};

GpuStager::Options StagingOptions(const Staging& st) {
  GpuStager::Options o;
  o.staging_bytes = st.staging_bytes;
  o.legacy_staging = st.legacy;
  return o;
}

class GpuStagerStagingTest : public ::testing::TestWithParam<Staging> {};

TEST_P(GpuStagerStagingTest, EncodeAndDecodeEqualTheCpuReference) {
  auto stager = GpuStager::Create(StagingOptions(GetParam()));
  ASSERT_TRUE(stager.ok()) << stager.status();
  const std::vector<KvLayout> layouts = {KvLayout::Mha(2, 2, 4, 128, DType::kFloat16),
                                         KvLayout::Mha(2, 2, 2, 128, DType::kBFloat16)};
  const char* codecs[] = {"raw",
                          "fp8",
                          "kivi:b=2,g=32",
                          "kivi:b=4,g=128,sink=4,tail=8",
                          "turboquant:b=2",
                          "turboquant:b=3,variant=prod",
                          "turboquant:b=2,split=2.5",
                          "turboquant:b=4,rotation=dense",
                          "turboquant:b=3,variant=prod,qjl=gaussian"};
  uint32_t seed = 7;
  int cases = 0;
  for (const KvLayout& l : layouts) {
    for (const char* text : codecs) {
      SCOPED_TRACE(std::string(text) + " " + l.DebugString());
      const CodecParams p = *CodecParams::Parse(text);
      const uint32_t tokens = 96;
      const auto host = testing::RandomChunk(l, tokens, ++seed);
      std::vector<uint8_t> cpu, gpu;
      ASSERT_TRUE(Encode(p, HostInput(host, l, tokens), &cpu).ok());
      const absl::Status s = (*stager)->Encode(p, HostInput(host, l, tokens), &gpu);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_EQ(gpu, cpu);
      std::vector<uint8_t> cpu_out(host.size()), gpu_out(host.size());
      testing::Poison(&cpu_out);
      testing::Poison(&gpu_out);
      ASSERT_TRUE(Decode(cpu, DecodeTarget::Contiguous(cpu_out.data(), l, tokens)).ok());
      const absl::Status d = (*stager)->DecodeContiguous(cpu, absl::MakeSpan(gpu_out));
      ASSERT_TRUE(d.ok()) << d;
      ASSERT_EQ(gpu_out, cpu_out);
      ++cases;
    }
  }
  EXPECT_EQ((*stager)->encodes(), static_cast<uint64_t>(cases));
  EXPECT_EQ((*stager)->decodes(), static_cast<uint64_t>(cases));
}

// Token counts that make the transfers no multiple of the staging pieces, and a payload far
// larger than the whole staging buffer (raw: body = tensor).
TEST_P(GpuStagerStagingTest, OddSizesEqualTheCpuReference) {
  auto stager = GpuStager::Create(StagingOptions(GetParam()));
  ASSERT_TRUE(stager.ok()) << stager.status();
  const KvLayout l = KvLayout::Mha(3, 2, 4, 128, DType::kFloat16);
  uint32_t seed = 70;
  for (const char* text : {"raw", "kivi:b=2,g=32", "turboquant:b=3"}) {
    for (uint32_t tokens : {1u, 77u, 203u}) {
      SCOPED_TRACE(std::string(text) + " tokens " + std::to_string(tokens));
      const CodecParams p = *CodecParams::Parse(text);
      const auto host = testing::RandomChunk(l, tokens, ++seed);
      std::vector<uint8_t> cpu, gpu;
      ASSERT_TRUE(Encode(p, HostInput(host, l, tokens), &cpu).ok());
      const absl::Status s = (*stager)->Encode(p, HostInput(host, l, tokens), &gpu);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_EQ(gpu, cpu);
      std::vector<uint8_t> cpu_out(host.size()), gpu_out(host.size());
      testing::Poison(&cpu_out);
      testing::Poison(&gpu_out);
      ASSERT_TRUE(Decode(cpu, DecodeTarget::Contiguous(cpu_out.data(), l, tokens)).ok());
      const absl::Status d = (*stager)->DecodeContiguous(cpu, absl::MakeSpan(gpu_out));
      ASSERT_TRUE(d.ok()) << d;
      ASSERT_EQ(gpu_out, cpu_out);
    }
  }
}

TEST_P(GpuStagerStagingTest, ConcurrentCallersGetTheirOwnResults) {
  GpuStager::Options o = StagingOptions(GetParam());
  o.slots = 2;
  auto stager = GpuStager::Create(o);
  ASSERT_TRUE(stager.ok()) << stager.status();
  const KvLayout l = KvLayout::Mha(4, 2, 8, 128, DType::kFloat16);
  // Codecs with their own stream launchers (kivi) and through CodecImpl's stream forms
  // (turboquant: Hadamard, and fixed-point dense on the tensor cores), side by side.
  const CodecParams codecs[] = {*CodecParams::Parse("kivi:b=2,g=32"),
                                *CodecParams::Parse("turboquant:b=3"),
                                *CodecParams::Parse("turboquant:b=2,rotation=dense")};
  constexpr int kThreads = 6;
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < kThreads; ++w) {
    threads.emplace_back([&, w] {
      const CodecParams& p = codecs[w % 3];
      for (int i = 0; i < 8; ++i) {
        const uint32_t tokens = 32 + 16 * ((w + i) % 5);  // different sizes: buffers grow
        const auto host = testing::RandomChunk(l, tokens, 1000 * w + i);
        std::vector<uint8_t> cpu, gpu;
        if (!Encode(p, HostInput(host, l, tokens), &cpu).ok() ||
            !(*stager)->Encode(p, HostInput(host, l, tokens), &gpu).ok() || gpu != cpu) {
          ++mismatches[w];
          continue;
        }
        std::vector<uint8_t> cpu_out(host.size()), gpu_out(host.size());
        if (!Decode(cpu, DecodeTarget::Contiguous(cpu_out.data(), l, tokens)).ok() ||
            !(*stager)->DecodeContiguous(cpu, absl::MakeSpan(gpu_out)).ok() ||
            gpu_out != cpu_out) {
          ++mismatches[w];
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int w = 0; w < kThreads; ++w) EXPECT_EQ(mismatches[w], 0) << "thread " << w;
}

TEST_P(GpuStagerStagingTest, BadInputIsRefusedAndOutputUntouched) {
  GpuStager::Options o = StagingOptions(GetParam());
  o.max_tensor_bytes = 64 << 10;
  auto stager = GpuStager::Create(o);
  ASSERT_TRUE(stager.ok()) << stager.status();
  const KvLayout l = KvLayout::Mha(2, 2, 4, 128, DType::kFloat16);
  const CodecParams p = *CodecParams::Parse("fp8");
  const uint32_t big_tokens = 64;
  ASSERT_GT(l.ChunkBytes(big_tokens), o.max_tensor_bytes);
  const auto big = testing::RandomChunk(l, big_tokens, 3);
  std::vector<uint8_t> payload;
  EXPECT_EQ((*stager)->Encode(p, HostInput(big, l, big_tokens), &payload).code(),
            absl::StatusCode::kResourceExhausted);

  const auto host = testing::RandomChunk(l, 8, 4);
  ASSERT_TRUE(Encode(p, HostInput(host, l, 8), &payload).ok());
  std::vector<uint8_t> out(host.size(), 0x5A);
  const std::vector<uint8_t> before = out;
  EXPECT_EQ((*stager)->DecodeContiguous(payload, absl::MakeSpan(out).subspan(1)).code(),
            absl::StatusCode::kInvalidArgument);  // wrong output size
  payload[payload.size() - 1] ^= 0x40;             // corrupt body
  EXPECT_EQ((*stager)->DecodeContiguous(payload, absl::MakeSpan(out)).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(out, before);
}

INSTANTIATE_TEST_SUITE_P(Stagings, GpuStagerStagingTest, ::testing::ValuesIn(kStagings),
                         [](const ::testing::TestParamInfo<Staging>& info) {
                           return std::string(info.index == 0   ? "PinnedDefault"
                                              : info.index == 1 ? "PinnedSmall"
                                                                : "Legacy");
                         });

}  // namespace
}  // namespace kvtier::kernels
