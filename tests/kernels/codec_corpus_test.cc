// Replays the fuzz seed corpus (fuzz/corpus/payload) through InspectPayload and Decode, the way
// the fuzz target does, so that CI exercises the decoder on those inputs without libFuzzer, and
// checks that the seeds still are what they claim (valid seeds decode; the others fail cleanly).
#include <gtest/gtest.h>

#include <dirent.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kvtier/common/status.h"
#include "kvtier/kernels/codec.h"
#include "payload_fuzz_input.h"

namespace kvtier::kernels {
namespace {

std::vector<std::string> CorpusFiles() {
  std::vector<std::string> files;
  DIR* dir = opendir(KVTIER_PAYLOAD_CORPUS);
  if (dir == nullptr) return files;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') files.push_back(std::string(KVTIER_PAYLOAD_CORPUS) + "/" + e->d_name);
  }
  closedir(dir);
  return files;
}

// The same steps as fuzz/payload_fuzz.cc (which aborts where an invariant breaks).
absl::Status Replay(const std::vector<uint8_t>& data) {
  return fuzz::RunPayloadInput(data.data(), data.size());
}

void WriteSeed(const std::string& name, uint8_t mode, const std::vector<uint8_t>& payload) {
  std::ofstream out(std::string(KVTIER_PAYLOAD_CORPUS) + "/" + name, std::ios::binary);
  out.put(static_cast<char>(mode));
  out.write(reinterpret_cast<const char*>(payload.data()), payload.size());
}

std::vector<uint8_t> Make(const char* codec, const KvLayout& l, uint32_t T, uint64_t pos,
                          bool ends) {
  std::vector<uint8_t> in(l.ChunkBytes(T));
  uint32_t x = 12345;
  for (auto& b : in) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24) & 0x3F;  // finite fp16/bf16 values
  }
  ChunkInput ci;
  ci.data = in.data();
  ci.layout = l;
  ci.num_tokens = T;
  ci.first_position = pos;
  ci.ends_sequence = ends;
  std::vector<uint8_t> p;
  KVTIER_CHECK_OK(Encode(*CodecParams::Parse(codec), ci, &p));
  return p;
}

// Regenerates the seed corpus: --gtest_also_run_disabled_tests --gtest_filter=*WriteSeeds
TEST(CodecCorpusTest, DISABLED_WriteSeeds) {
  const KvLayout mha = KvLayout::Mha(1, 2, 2, 32);
  const KvLayout mla = KvLayout::Mla(2, 32, 32, DType::kBFloat16);
  WriteSeed("valid_raw", 0, Make("raw", mha, 5, 0, false));
  WriteSeed("valid_fp8", 0, Make("fp8", mha, 6, 0, false));
  WriteSeed("valid_kivi2_mha", 0, Make("kivi:b=2,g=32,sink=2,tail=3", mha, 40, 0, true));
  WriteSeed("valid_kivi4_mla", 1, Make("kivi:b=4,g=32", mla, 9, 100, false));
  WriteSeed("valid_fp8_mla_fixcrc", 1, Make("fp8", mla, 3, 0, true));
  // TurboQuant: the default mse and prod (qjl=hadamard), an outlier split, MLA, and both
  // arithmetics of the dense matrices (fixed-point, the text default, and binary32).
  const KvLayout mha128 = KvLayout::Mha(1, 1, 1, 128);
  WriteSeed("valid_tq_mse", 0, Make("turboquant:b=3", mha, 5, 0, false));
  WriteSeed("valid_tq_prod", 1, Make("turboquant:b=2,variant=prod", mha, 4, 0, false));
  WriteSeed("valid_tq_split", 1, Make("turboquant:b=2,split=2.5", mha128, 3, 0, false));
  WriteSeed("valid_tq_mla", 1, Make("turboquant:b=3", mla, 2, 0, false));
  WriteSeed("valid_tq_dense_fixed", 1, Make("turboquant:b=2,rotation=dense", mha, 3, 0, false));
  WriteSeed("valid_tq_gaussian_fixed", 1,
            Make("turboquant:b=3,variant=prod,qjl=gaussian", mha, 3, 0, false));
  WriteSeed("valid_tq_dense_float", 0,
            Make("turboquant:b=2,rotation=dense,matrix=float", mha, 3, 0, false));
  auto truncated = Make("fp8", mha, 6, 0, false);
  truncated.resize(truncated.size() - 7);
  WriteSeed("invalid_truncated", 0, truncated);
  auto badcrc = Make("kivi:b=2,g=32", mha, 32, 0, false);
  badcrc[150] ^= 4;
  WriteSeed("invalid_body_crc", 0, badcrc);
  auto v2 = Make("raw", mha, 2, 0, false);
  v2[4] = 2;
  WriteSeed("invalid_version2", 1, v2);
}

TEST(CodecCorpusTest, SeedsReplay) {
  const auto files = CorpusFiles();
  ASSERT_GE(files.size(), 15u) << "seed corpus missing at " << KVTIER_PAYLOAD_CORPUS;
  int valid = 0;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const absl::Status s = Replay(data);
    const bool want_ok = f.find("/valid_") != std::string::npos;
    EXPECT_EQ(s.ok(), want_ok) << f << ": " << s;
    valid += s.ok();
  }
  EXPECT_GE(valid, 3);
}

}  // namespace
}  // namespace kvtier::kernels
