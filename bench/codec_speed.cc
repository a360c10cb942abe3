// codec_speed: encode / decode throughput of the raw, fp8 and kivi codecs (and TurboQuant
// through the public API) on Llama-3.1-8B-shaped chunks: 32 layers, 8 KV heads, head_dim 128,
// 256 tokens, fp16 (32 MiB per chunk).
//
//   codec_speed [--mode gpu|cpu|both] [--chunks N] [--json PATH] [--codec TEXT ...]
//
// --codec (repeatable): time these codec texts through the public API instead of the default
// list (e.g. TurboQuant's dense rotation with fixed-point and binary32 matrices).
//
// gpu: N chunks (default 4 = 128 MiB of fp16) per measurement, through the batched launchers of
//      kernels/src/codecs/codec_cuda.h (one launch sequence for all chunks, no host round trips),
//      timed with CUDA events after warm-up (median of 15). Throughput counts fp16 bytes +
//      payload bytes and is reported as a ratio to device-to-device cudaMemcpy bandwidth of the
//      same fp16 size measured in the same run (bytes read + written). Also: every codec through
//      the public Encode/Decode per chunk (device input / device target), which includes the
//      dispatcher's allocation and the body's copy between host and device.
// cpu: one chunk, one thread, public API; GB/s of fp16 per core (median of 5).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "codecs/codec_cuda.h"
#include "codecs/device_memory.h"
#include "codecs/geometry.h"
#include "codecs/numeric.h"
#include "kvtier/kernels/codec.h"
#include "kvtier/kernels/device.h"

#ifdef KVTIER_HAVE_CUDA
#include <cuda_runtime_api.h>
#include "cuda_bench.h"
#endif

namespace kk = kvtier::kernels;
namespace ki = kvtier::kernels::internal;

namespace {

const kk::KvLayout kLayout = kk::KvLayout::Mha(32, 8, 32, 128, kk::DType::kFloat16);
constexpr uint32_t kTokens = 256;

struct Row {
  std::string mode, codec, op;
  double fp16_bytes = 0, payload_bytes = 0, seconds = 0;
  double ratio = 0;  // to the copy (gpu) or 0
  double GBps() const { return (fp16_bytes + payload_bytes) / seconds / 1e9; }
  double Fp16GBps() const { return fp16_bytes / seconds / 1e9; }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::vector<uint8_t> RandomFp16(size_t bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0, 1);
  std::vector<uint8_t> out(bytes);
  for (size_t i = 0; i + 1 < bytes; i += 2) {
    const uint16_t h = ki::FloatToHalf(n01(rng) * ((i / 256) % 37 == 5 ? 10.0f : 1.0f));
    std::memcpy(&out[i], &h, 2);
  }
  return out;
}

const std::vector<std::string>& Codecs() {
  static const std::vector<std::string> c = {"raw", "fp8", "kivi:b=2,g=32", "kivi:b=4,g=32"};
  return c;
}
std::vector<std::string> g_api_codecs;  // --codec: replaces the default list below

std::vector<std::string> ApiCodecs() {
  if (!g_api_codecs.empty()) return g_api_codecs;
  std::vector<std::string> c = Codecs();
  for (const char* tq : {"turboquant:b=2", "turboquant:b=3", "turboquant:b=4",
                         "turboquant:b=3,variant=prod", "turboquant:b=2,split=2.5",
                         "turboquant:b=3,split=3.5"}) {
    c.push_back(tq);
  }
  return c;
}

template <typename F>
double WallMedian(int warmup, int repeats, F f) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  return Median(t);
}

void RunCpu(std::vector<Row>* rows) {
  const auto in = RandomFp16(kLayout.ChunkBytes(kTokens), 1);
  std::vector<uint8_t> out(in.size());
  for (const std::string& name : ApiCodecs()) {
    auto p = kk::CodecParams::Parse(name);
    if (!p.ok()) continue;
    kk::ChunkInput ci;
    ci.data = in.data();
    ci.layout = kLayout;
    ci.num_tokens = kTokens;
    std::vector<uint8_t> payload;
    const absl::Status s = kk::Encode(*p, ci, &payload);
    if (!s.ok()) {
      std::fprintf(stderr, "cpu %s: %s (skipped)\n", name.c_str(), s.ToString().c_str());
      continue;
    }
    Row e{"cpu", name, "encode", double(in.size()), double(payload.size())};
    e.seconds = WallMedian(1, 5, [&] { (void)kk::Encode(*p, ci, &payload); });
    Row d{"cpu", name, "decode", double(in.size()), double(payload.size())};
    const kk::DecodeTarget t = kk::DecodeTarget::Contiguous(out.data(), kLayout, kTokens);
    d.seconds = WallMedian(1, 5, [&] { (void)kk::Decode(payload, t); });
    rows->push_back(e);
    rows->push_back(d);
    std::fprintf(stderr, "cpu %-28s encode %6.2f GB/s fp16  decode %6.2f GB/s fp16\n",
                 name.c_str(), e.Fp16GBps(), d.Fp16GBps());
  }
}

#ifdef KVTIER_HAVE_CUDA

template <typename Op>
double EventMedian(Op op) {
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) op();
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<double> t;
  for (int i = 0; i < 15; ++i) {
    CUDA_OK(cudaEventRecord(a, nullptr));
    op();
    CUDA_OK(cudaEventRecord(b, nullptr));
    CUDA_OK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e-3);
  }
  CUDA_OK(cudaGetLastError());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return Median(t);
}

ki::StreamShape Shape() {
  ki::StreamShape s;
  s.mha = true;
  s.num_layers = kLayout.num_layers;
  s.heads = kLayout.num_kv_heads;
  s.num_streams = 2 * s.num_layers * s.heads;
  s.tokens = kTokens;
  s.width = kLayout.head_dim;
  s.elem_size = 2;
  return s;
}

double RunGpu(uint32_t chunks, std::vector<Row>* rows) {
  const size_t chunk_bytes = kLayout.ChunkBytes(kTokens);
  const size_t total = chunk_bytes * chunks;
  const auto host = RandomFp16(total, 2);
  void *in, *out, *body;
  CUDA_OK(cudaMalloc(&in, total));
  CUDA_OK(cudaMalloc(&out, total));
  CUDA_OK(cudaMalloc(&body, total + (1 << 20)));
  CUDA_OK(cudaMemcpy(in, host.data(), total, cudaMemcpyHostToDevice));
  const double copy_s = EventMedian([&] {
    CUDA_OK(cudaMemcpyAsync(out, in, total, cudaMemcpyDeviceToDevice, nullptr));
  });
  const double copy_GBps = 2.0 * total / copy_s / 1e9;
  std::fprintf(stderr, "d2d copy of %zu MiB: %.1f GB/s (read + write)\n", total >> 20, copy_GBps);

  const ki::StreamShape s = Shape();
  kk::DecodeTarget t = kk::DecodeTarget::Contiguous(out, kLayout, kTokens, kk::MemorySpace::kDevice);
  auto dt = ki::UploadTarget(t, kTokens);
  if (!dt.ok()) {
    std::fprintf(stderr, "UploadTarget: %s\n", dt.status().ToString().c_str());
    std::exit(1);
  }
  dt->view.chunk_stride = static_cast<int64_t>(chunk_bytes);
  dt->view.align16 = true;
  for (const std::string& name : Codecs()) {
    const kk::CodecParams p = *kk::CodecParams::Parse(name);
    const ki::KiviGeometry g = ki::KiviGeometry::Make(s, p.bits ? p.bits : 2,
                                                      p.group_size ? p.group_size : 32, 0, false,
                                                      0, 0);
    const size_t body_bytes = p.id == kk::CodecId::kRaw   ? chunk_bytes
                              : p.id == kk::CodecId::kFp8 ? ki::Fp8Geometry::Make(s).body_bytes
                                                          : g.body_bytes;
    const uint64_t bs = (body_bytes + 255) / 256 * 256;  // each chunk's body 256-byte aligned
    CUDA_OK(cudaFree(body));
    CUDA_OK(cudaMalloc(&body, bs * chunks));
    CUDA_OK(cudaMemset(body, 0, bs * chunks));
    auto enc = [&] {
      int rc = 0;
      if (p.id == kk::CodecId::kRaw) rc = ki::cuda::LaunchRawEncode(s, in, chunk_bytes, body, bs, chunks, nullptr);
      if (p.id == kk::CodecId::kFp8) rc = ki::cuda::LaunchFp8Encode(1, s, in, chunk_bytes, body, bs, chunks, nullptr);
      if (p.id == kk::CodecId::kKivi) rc = ki::cuda::LaunchKiviEncode(1, g, in, chunk_bytes, body, bs, chunks, nullptr);
      CUDA_OK(static_cast<cudaError_t>(rc));
    };
    auto dec = [&] {
      int rc = 0;
      if (p.id == kk::CodecId::kRaw) rc = ki::cuda::LaunchRawDecode(s, body, bs, dt->view, chunks, nullptr);
      if (p.id == kk::CodecId::kFp8) rc = ki::cuda::LaunchFp8Decode(1, s, body, bs, dt->view, chunks, nullptr);
      if (p.id == kk::CodecId::kKivi) rc = ki::cuda::LaunchKiviDecode(1, g, body, bs, dt->view, chunks, nullptr);
      CUDA_OK(static_cast<cudaError_t>(rc));
    };
    const double payload = double(body_bytes + 96) * chunks;
    Row e{"gpu", name, "encode", double(total), payload, EventMedian(enc)};
    Row d{"gpu", name, "decode", double(total), payload, EventMedian(dec)};
    e.ratio = e.GBps() / copy_GBps;
    d.ratio = d.GBps() / copy_GBps;
    // The batched decode must give what the CPU reference gives for chunk 0.
    std::vector<uint8_t> got(chunk_bytes), ref(chunk_bytes), payload0;
    CUDA_OK(cudaMemcpy(got.data(), out, chunk_bytes, cudaMemcpyDeviceToHost));
    kk::ChunkInput ci;
    ci.data = host.data();
    ci.layout = kLayout;
    ci.num_tokens = kTokens;
    const bool same = kk::Encode(p, ci, &payload0).ok() &&
                      kk::Decode(payload0, kk::DecodeTarget::Contiguous(ref.data(), kLayout, kTokens)).ok() &&
                      got == ref;
    std::fprintf(stderr, "gpu %-16s encode %7.1f GB/s (%.2f of copy)  decode %7.1f GB/s (%.2f of copy)  %s\n",
                 name.c_str(), e.GBps(), e.ratio, d.GBps(), d.ratio,
                 same ? "matches CPU" : "MISMATCH vs CPU");
    if (!same) std::exit(1);
    rows->push_back(e);
    rows->push_back(d);
  }

  // Public API, one chunk per call (allocation + host<->device body copies included).
  for (const std::string& name : ApiCodecs()) {
    auto p = kk::CodecParams::Parse(name);
    if (!p.ok()) continue;
    kk::ChunkInput ci;
    ci.data = in;
    ci.space = kk::MemorySpace::kDevice;
    ci.layout = kLayout;
    ci.num_tokens = kTokens;
    std::vector<uint8_t> payload;
    const absl::Status st = kk::Encode(*p, ci, &payload);
    if (!st.ok()) {
      std::fprintf(stderr, "api %s: %s (skipped)\n", name.c_str(), st.ToString().c_str());
      continue;
    }
    Row e{"gpu-api", name, "encode", double(chunk_bytes), double(payload.size())};
    e.seconds = WallMedian(2, 7, [&] { (void)kk::Encode(*p, ci, &payload); });
    Row d{"gpu-api", name, "decode", double(chunk_bytes), double(payload.size())};
    d.seconds = WallMedian(2, 7, [&] { (void)kk::Decode(payload, t); });
    e.ratio = e.GBps() / copy_GBps;
    d.ratio = d.GBps() / copy_GBps;
    std::fprintf(stderr, "api %-28s encode %7.1f GB/s (%.2f)  decode %7.1f GB/s (%.2f)\n",
                 name.c_str(), e.GBps(), e.ratio, d.GBps(), d.ratio);
    rows->push_back(e);
    rows->push_back(d);
  }
  cudaFree(in);
  cudaFree(out);
  cudaFree(body);
  return copy_GBps;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  std::string mode = kk::CudaDeviceCount() > 0 ? "both" : "cpu";
  const char* json = nullptr;
  uint32_t chunks = 4;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--mode") && i + 1 < argc) mode = argv[++i];
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    else if (!std::strcmp(argv[i], "--chunks") && i + 1 < argc) chunks = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--codec") && i + 1 < argc) g_api_codecs.push_back(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: %s [--mode gpu|cpu|both] [--chunks N] [--json PATH] [--codec TEXT ...]\n",
                   argv[0]);
      return 2;
    }
  }
  if (chunks < 2) chunks = 2;  // >= 64 MiB of fp16 per measurement
  std::vector<Row> rows;
  double copy_GBps = 0;
  std::string device = "cpu";
  if (mode == "gpu" || mode == "both") {
#ifdef KVTIER_HAVE_CUDA
    if (kk::CudaDeviceCount() == 0) {
      std::fprintf(stderr, "no CUDA device visible\n");
      return 1;
    }
    device = kk::CudaDeviceDescription(0);
    copy_GBps = RunGpu(chunks, &rows);
#else
    std::fprintf(stderr, "built without CUDA\n");
    return 1;
#endif
  }
  if (mode == "cpu" || mode == "both") RunCpu(&rows);

  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::string j = "{\n  \"tool\": \"codec_speed\",\n  \"date\": \"" + std::string(date) +
                  "\",\n  \"device\": \"" + device + "\",\n  \"shape\": \"" +
                  kLayout.DebugString() + " x 256 tokens\",\n  \"chunks_per_gpu_measurement\": " +
                  std::to_string(chunks) + ",\n  \"d2d_copy_GBps_read_plus_write\": " +
                  std::to_string(copy_GBps) + ",\n  \"results\": [\n";
  printf("%-8s %-28s %-7s %10s %12s %10s\n", "mode", "codec", "op", "GB/s", "fp16 GB/s", "vs copy");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    printf("%-8s %-28s %-7s %10.2f %12.2f %10.3f\n", r.mode.c_str(), r.codec.c_str(),
           r.op.c_str(), r.GBps(), r.Fp16GBps(), r.ratio);
    char buf[512];
    std::snprintf(buf, sizeof(buf),
                  "    {\"mode\": \"%s\", \"codec\": \"%s\", \"op\": \"%s\", \"fp16_bytes\": %.0f, "
                  "\"payload_bytes\": %.0f, \"seconds\": %.6g, \"GBps_fp16_plus_payload\": %.3f, "
                  "\"GBps_fp16\": %.3f, \"ratio_to_copy\": %.4f}%s\n",
                  r.mode.c_str(), r.codec.c_str(), r.op.c_str(), r.fp16_bytes, r.payload_bytes,
                  r.seconds, r.GBps(), r.Fp16GBps(), r.ratio, i + 1 < rows.size() ? "," : "");
    j += buf;
  }
  j += "  ]\n}\n";
  if (json) {
    FILE* f = std::fopen(json, "w");
    if (!f) return 1;
    std::fputs(j.c_str(), f);
    std::fclose(f);
  }
  return 0;
}
