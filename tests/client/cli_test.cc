// The `kvtier` CLI on real invocations against a real kvtierd: --help everywhere, namespaces,
// put/get through .npy files, lookup, stats, bench, replay (with byte verification) and errors
// that say what to do.
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "daemon_process.h"
#include "npy.h"
#include "synthetic.h"
#include "tensor_io.h"

namespace kvtier::cli {
namespace {

using kvtier::testing::DaemonProcess;
using kvtier::testing::TempDir;

struct Result {
  int code = -1;
  std::string out, err;
};

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class CliTest : public ::testing::Test {
 protected:
  Result Run(const std::string& args) {
    const std::string out = dir_.path() + "/out.txt", err = dir_.path() + "/err.txt";
    const std::string cmd = std::string(KVTIER_CLI) + " " + args + " >" + out + " 2>" + err;
    const int raw = std::system(cmd.c_str());
    Result r;
    r.code = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128;
    r.out = Slurp(out);
    r.err = Slurp(err);
    return r;
  }
  Result Kv(const std::string& args) {
    return Run("--target unix:" + daemon_->socket_path() + " " + args);
  }
  void StartDaemon() {
    daemon_ = std::make_unique<DaemonProcess>(KVTIER_KVTIERD, dir_.path());
    ASSERT_TRUE(daemon_->Start()) << daemon_->ReadLog();
  }
  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(CliTest, HelpOnEverySubcommand) {
  for (const char* sub : {"", "status", "ns", "ns create", "ns list", "ns show", "lookup", "put",
                          "get", "stats", "bench", "replay"}) {
    SCOPED_TRACE(sub);
    const Result r = Run(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("Usage:"), std::string::npos) << r.out;
  }
  EXPECT_EQ(Run("").code, 2);          // no subcommand
  EXPECT_EQ(Run("put").code, 2);       // missing required arguments
  EXPECT_EQ(Run("frobnicate").code, 2);
}

TEST_F(CliTest, ErrorsSayWhatToDo) {
  Result r = Run("--target unix:" + dir_.path() + "/none.sock --timeout-ms 300 status");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("is it running"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--target"), std::string::npos) << r.err;
  StartDaemon();
  r = Kv("ns show missing");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("NOT_FOUND"), std::string::npos) << r.err;
  r = Kv("ns create bad --dtype fp64");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("fp16, bf16, fp32"), std::string::npos) << r.err;
}

TEST_F(CliTest, NamespacePutGetLookupStats) {
  StartDaemon();
  Result r = Kv("status");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("SERVING"), std::string::npos);
  r = Kv("ns create m1 --layers 2 --kv-heads 2 --head-dim 32 --tokens-per-chunk 16 --salt s");
  ASSERT_EQ(r.code, 0) << r.err;
  r = Kv("ns list");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("m1"), std::string::npos);
  r = Kv("--json ns show m1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("\"tokens_per_chunk\": 16"), std::string::npos) << r.out;

  // A 16-token chunk as numpy would save it, keyed by a 16-token prompt.
  const auto layout = kernels::KvLayout::Mha(2, 2, 2, 32);
  NpyArray in;
  in.descr = "<f2";
  in.shape = ChunkShape(layout, 16);
  in.data = SyntheticKv(layout, 16, 77);
  const std::string in_path = dir_.path() + "/in.npy", out_path = dir_.path() + "/out.npy";
  ASSERT_TRUE(WriteNpy(in_path, in).ok());
  std::string tokens;
  for (int i = 0; i < 16; ++i) tokens += std::to_string(100 + i) + (i < 15 ? "," : "");

  r = Kv("lookup m1 --tokens " + tokens);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("0 of 1 full chunks"), std::string::npos) << r.out;
  r = Kv("put m1 --in " + in_path + " --tokens " + tokens);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("stored"), std::string::npos) << r.out;
  r = Kv("--json lookup m1 --tokens " + tokens);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("\"prefix_chunks\": 1"), std::string::npos) << r.out;
  r = Kv("get m1 --out " + out_path + " --tokens " + tokens);
  ASSERT_EQ(r.code, 0) << r.err;
  auto out = ReadNpy(out_path);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->descr, "<f2");
  EXPECT_EQ(out->shape, in.shape);
  EXPECT_EQ(out->data, in.data);

  // A tensor of the wrong shape is refused with the expected shape in the message.
  NpyArray wrong = in;
  wrong.shape = {2, 2, 2, 16, 16};
  wrong.data.resize(2 * 2 * 2 * 16 * 16 * 2);
  ASSERT_TRUE(WriteNpy(in_path, wrong).ok());
  r = Kv("put m1 --in " + in_path + " --tokens " + tokens);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("expected (2, 2, 2, 16, 32)"), std::string::npos) << r.err;

  r = Kv("stats");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("lookup tokens: 32 requested, 16 hit"), std::string::npos) << r.out;
}

TEST_F(CliTest, BenchReportsThroughputAndPercentiles) {
  StartDaemon();
  const std::string json = dir_.path() + "/bench.json";
  Result r = Kv("bench --layers 2 --kv-heads 1 --head-dim 64 --sizes 64,256 --concurrency 2 "
                "--duration 0.5 --json-out " + json);
  // On failure, also show the daemon's counters (evictions, demotions, misses) and its log.
  ASSERT_EQ(r.code, 0) << r.out << r.err << "\n--- kvtier stats ---\n" << Kv("stats").out
                       << "\n--- kvtierd log ---\n" << daemon_->ReadLog();
  EXPECT_NE(r.out.find("ops/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("p99"), std::string::npos) << r.out;
  const std::string j = Slurp(json);
  EXPECT_NE(j.find("\"puts\": "), std::string::npos);
  EXPECT_EQ(j.find("\"puts\": 0,"), std::string::npos) << j;
}

// Three requests sharing prefixes: hits and bytes are known exactly, and --verify checks every
// fetched byte against the synthetic KV.
TEST_F(CliTest, ReplayCountsHitsAndVerifiesBytes) {
  StartDaemon();
  const std::string trace = dir_.path() + "/trace.jsonl";
  std::ofstream(trace)
      << R"({"timestamp": 0, "input_length": 2000, "output_length": 5, "hash_ids": [0, 1, 2, 3]})"
      << "\n"
      << R"({"timestamp": 10, "input_length": 1600, "output_length": 5, "hash_ids": [0, 1, 7, 8]})"
      << "\n"
      << R"({"timestamp": 20, "input_length": 1024, "output_length": 5, "hash_ids": [0, 1]})"
      << "\n";
  const std::string json = dir_.path() + "/replay.json";
  Result r = Kv("replay " + trace + " --verify --speed 100 --json-out " + json);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  // Request 1: 3 full blocks (2000/512), all missing -> 3 puts. Request 2: 3 full blocks
  // (1600/512), prefix [0,1] hits -> 2 hits, 1 put. Request 3: 2 blocks, both hit.
  const std::string j = Slurp(json);
  EXPECT_NE(j.find("\"blocks_hit\": 4,"), std::string::npos) << j;
  EXPECT_NE(j.find("\"blocks_put\": 4,"), std::string::npos) << j;
  EXPECT_NE(j.find("\"hit_tokens\": 2048,"), std::string::npos) << j;
  EXPECT_NE(j.find("\"input_tokens\": 4624,"), std::string::npos) << j;
  EXPECT_NE(j.find("\"verify_failures\": 0,"), std::string::npos) << j;
  EXPECT_NE(j.find("\"errors\": 0,"), std::string::npos) << j;
  EXPECT_NE(r.out.find("token hit rate    0.4429"), std::string::npos) << r.out;
  EXPECT_EQ(r.err.find('\r'), std::string::npos);  // no progress bar when stderr is a file
}

}  // namespace
}  // namespace kvtier::cli
