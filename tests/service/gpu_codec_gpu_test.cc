// kvtierd with service.codec_device = gpu on a GPU machine: tensors Put over gRPC are encoded by
// the CUDA kernels (staged through device memory) into exactly the payload bytes the CPU reference
// writes, tensor Gets are decoded on the GPU into exactly the CPU decode's bytes, and
// kvtier_codec_calls_total says which device ran each call. Needs the kvtierd binary:
// KVTIER_KVTIERD (set by the GPU bundle's run.sh) or the build's own.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <string>

#include "daemon_process.h"
#include "kvtier/kernels/codec.h"
#include "rpc_util.h"

namespace kvtier {
namespace {

using testing::DaemonProcess;
using testing::TempDir;
using v1::DATA_FORMAT_PAYLOAD;
using v1::DATA_FORMAT_TENSOR;

std::string KvtierdPath() {
  const char* env = std::getenv("KVTIER_KVTIERD");
  return env != nullptr && env[0] != '\0' ? env : KVTIER_KVTIERD;
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Starts kvtierd with `codec_device`, stores one tensor per codec, and checks the payload and the
// decoded tensor against the CPU reference. Returns the scrape after the operations.
std::map<std::string, double> RunCodecs(const std::string& codec_device,
                                        const std::vector<std::string>& codecs) {
  TempDir dir;
  DaemonProcess d(KvtierdPath(), dir.path());
  d.flags.push_back("--service.codec_device=" + codec_device);
  EXPECT_TRUE(d.Start()) << d.ReadLog();
  auto stub = d.Stub();
  constexpr uint32_t kTokens = 128;
  const v1::Layout layout = rpc::MhaLayout(4, 8, 32, 128);
  uint64_t seed = 10;
  for (const std::string& codec : codecs) {
    SCOPED_TRACE(codec + " on " + codec_device);
    const std::string ns = "ns" + std::to_string(seed);
    grpc::ClientContext ctx;
    EXPECT_TRUE(testing::CreateNamespace(stub.get(), &ctx, ns, codec, layout, kTokens).ok());
    const std::string key = rpc::SeedKey(seed);
    const std::string data = rpc::SyntheticFp16(rpc::TensorBytes(layout, kTokens), ++seed);
    auto put = rpc::Put(stub.get(), ns, key, data, DATA_FORMAT_TENSOR, kTokens);
    EXPECT_TRUE(put.status.ok()) << put.status.error_message();
    auto p = rpc::Get(stub.get(), ns, key, DATA_FORMAT_PAYLOAD);
    EXPECT_TRUE(p.status.ok() && p.crc_ok);
    auto info = kernels::InspectPayload(Bytes(p.data));
    EXPECT_TRUE(info.ok()) << info.status();
    if (!info.ok()) continue;
    // The CPU reference's payload of the same tensor: byte for byte the daemon's.
    kernels::ChunkInput in;
    in.data = data.data();
    in.layout = info->layout;
    in.num_tokens = info->num_tokens;
    in.first_position = info->first_position;
    in.ends_sequence = info->ends_sequence;
    std::vector<uint8_t> cpu;
    EXPECT_TRUE(kernels::Encode(info->codec, in, &cpu).ok());
    EXPECT_TRUE(std::string(cpu.begin(), cpu.end()) == p.data) << "payload differs from the CPU's";
    // The daemon's decode equals the CPU decode of its payload.
    auto t = rpc::Get(stub.get(), ns, key, DATA_FORMAT_TENSOR);
    EXPECT_TRUE(t.status.ok() && t.crc_ok);
    std::string local(info->DecodedBytes(), '\0');
    EXPECT_TRUE(kernels::Decode(Bytes(p.data), kernels::DecodeTarget::Contiguous(
                                                   local.data(), info->layout, info->num_tokens))
                    .ok());
    EXPECT_TRUE(t.data == local) << "decoded tensor differs from the CPU decode";
  }
  auto m = d.ScrapeMetrics();
  EXPECT_TRUE(m.ok()) << m.status();
  d.Signal(SIGTERM);
  EXPECT_EQ(d.WaitExit(), 0) << d.ReadLog();
  if (codec_device == "gpu") {
    EXPECT_NE(d.ReadLog().find("codecs on the GPU"), std::string::npos) << d.ReadLog();
  }
  return m.ok() ? *m : std::map<std::string, double>{};
}

std::string Calls(const std::string& codec, const std::string& op, const std::string& device) {
  return "kvtier_codec_calls_total{codec=\"" + codec + "\",device=\"" + device + "\",op=\"" + op +
         "\"}";
}

TEST(GpuCodecTest, DaemonEncodesAndDecodesOnTheGpuWithTheCpuBytes) {
  const std::vector<std::string> codecs = {"fp8", "kivi:b=2,g=32", "kivi:b=4,g=128",
                                           "turboquant:b=3", "turboquant:b=2,variant=prod"};
  const auto m = RunCodecs("gpu", codecs);
  // Each codec: one encode (Put) and one decode (tensor Get), all on the GPU.
  EXPECT_EQ(testing::MetricValue(m, Calls("fp8", "encode", "gpu")), 1);
  EXPECT_EQ(testing::MetricValue(m, Calls("fp8", "decode", "gpu")), 1);
  EXPECT_EQ(testing::MetricValue(m, Calls("kivi", "encode", "gpu")), 2);
  EXPECT_EQ(testing::MetricValue(m, Calls("kivi", "decode", "gpu")), 2);
  EXPECT_EQ(testing::MetricValue(m, Calls("turboquant", "encode", "gpu")), 2);
  EXPECT_EQ(testing::MetricValue(m, Calls("turboquant", "decode", "gpu")), 2);
  for (const char* c : {"fp8", "kivi", "turboquant"}) {
    EXPECT_EQ(testing::MetricValue(m, Calls(c, "encode", "cpu")), 0) << c;
    EXPECT_EQ(testing::MetricValue(m, Calls(c, "decode", "cpu")), 0) << c;
  }
}

TEST(GpuCodecTest, CpuSettingKeepsCodecsOnTheCpu) {
  const auto m = RunCodecs("cpu", {"fp8"});
  EXPECT_EQ(testing::MetricValue(m, Calls("fp8", "encode", "cpu")), 1);
  EXPECT_EQ(testing::MetricValue(m, Calls("fp8", "encode", "gpu")), 0);
}

}  // namespace
}  // namespace kvtier
