// fp8: E4M3 codes with one fp32 scale per row (layer, K|V, head, token) = amax / 448
// (docs/FORMAT.md, "fp8"). CPU reference; the CUDA kernels are in fp8.cu.
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec_impl.h"
#include "codecs/codec_cuda.h"
#include "codecs/cpu_simd.h"
#include "codecs/device_memory.h"
#include "codecs/stream_shape.h"

namespace kvtier::kernels::internal {
namespace {

template <typename Elem>
void EncodeRows(const StreamShape& s, const void* input, uint8_t* body) {
  using T = typename Elem::Storage;
  const Fp8Geometry g = Fp8Geometry::Make(s);
  const T* in = static_cast<const T*>(input);
  uint8_t* scales = body + g.scales_offset;
  uint8_t* codes = body + g.codes_offset;
  const uint64_t rows = s.Rows();
  for (uint64_t r = 0; r < rows; ++r) {
    const T* x = in + r * s.width;
    float amax = 0.0f;
    // amax = fmaxf over |x| starting from 0 (NaNs ignored), as a select that stays branch-free.
    for (uint32_t d = 0; d < s.width; ++d) {
      const float a = fabsf(Elem::ToFloat(x[d]));
      amax = a > amax ? a : amax;
    }
    const Fp8RowParams p = MakeFp8Row(amax);
    std::memcpy(scales + r * 4, &p.scale, 4);  // little-endian hosts only (checked in codec.cc)
    uint8_t* c = codes + r * s.width;
    for (uint32_t d = 0; d < s.width; ++d) c[d] = Fp8Quantize(Elem::ToFloat(x[d]), p);
  }
}

struct E4M3Table {
  float v[256];
  E4M3Table() {
    for (int i = 0; i < 256; ++i) v[i] = E4M3ToFloat(static_cast<uint8_t>(i));
  }
};

template <typename Elem>
void DecodeRows(const StreamShape& s, const uint8_t* body, const TargetView& view) {
  using T = typename Elem::Storage;
  static const E4M3Table table;
  const Fp8Geometry g = Fp8Geometry::Make(s);
  const uint8_t* scales = body + g.scales_offset;
  const uint8_t* codes = body + g.codes_offset;
  const bool simd = s.width % 8 == 0 && CpuHasAvx2F16c();
  for (uint32_t st = 0; st < s.num_streams; ++st) {
    uint32_t l, kv, h;
    s.Decompose(st, &l, &kv, &h);
    for (uint32_t t = 0; t < s.tokens; ++t) {
      const uint64_t r = uint64_t{st} * s.tokens + t;
      float scale;
      std::memcpy(&scale, scales + r * 4, 4);
      const uint8_t* c = codes + r * s.width;
      T* out = reinterpret_cast<T*>(view.Row(l, kv, h, t));
      if (kSimdCode<Elem> != 0 && simd) {
        Fp8DecodeRowAvx2(kSimdCode<Elem>, c, scale, out, s.width);
        continue;
      }
      for (uint32_t d = 0; d < s.width; ++d) out[d] = Elem::FromFloat(table.v[c[d]] * scale);
    }
  }
}

class Fp8CodecImpl final : public CodecImpl {
 public:
  absl::Status CheckCompatible(const CodecParams&, const ChunkShape&) const override {
    return absl::OkStatus();
  }

  size_t BodySize(const CodecParams&, const ChunkShape& shape) const override {
    return Fp8Geometry::Make(MakeStreamShape(shape)).body_bytes;
  }

  absl::Status EncodeHost(const CodecParams&, const ChunkShape& shape, const void* input,
                          absl::Span<uint8_t> body) const override {
    const StreamShape s = MakeStreamShape(shape);
    if (!DispatchElem(DTypeCode(shape.layout.dtype),
                      [&](auto e) { EncodeRows<decltype(e)>(s, input, body.data()); })) {
      return Unsupported(shape);
    }
    return absl::OkStatus();
  }

  absl::Status DecodeHost(const CodecParams&, const ChunkShape& shape,
                          absl::Span<const uint8_t> body,
                          const DecodeTarget& target) const override {
    const StreamShape s = MakeStreamShape(shape);
    const TargetView view = HostTargetView(target);
    if (!DispatchElem(DTypeCode(shape.layout.dtype),
                      [&](auto e) { DecodeRows<decltype(e)>(s, body.data(), view); })) {
      return Unsupported(shape);
    }
    return absl::OkStatus();
  }

  absl::Status EncodeDevice(const CodecParams&, const ChunkShape& shape, const void* device_input,
                            void* device_body) const override {
#ifdef KVTIER_CODECS_CUDA
    const StreamShape s = MakeStreamShape(shape);
    return FinishLaunch(cuda::LaunchFp8Encode(DTypeCode(shape.layout.dtype), s, device_input, 0,
                                              device_body, 0, 1, nullptr),
                        "fp8 encode");
#else
    (void)shape, (void)device_input, (void)device_body;
    return absl::UnimplementedError("kvtier was built without CUDA");
#endif
  }

  absl::Status DecodeDevice(const CodecParams&, const ChunkShape& shape, const void* device_body,
                            const DecodeTarget& target) const override {
#ifdef KVTIER_CODECS_CUDA
    const StreamShape s = MakeStreamShape(shape);
    auto dt = UploadTarget(target, shape.num_tokens);
    if (!dt.ok()) return dt.status();
    return FinishLaunch(cuda::LaunchFp8Decode(DTypeCode(shape.layout.dtype), s, device_body, 0,
                                              dt->view, 1, nullptr),
                        "fp8 decode");
#else
    (void)shape, (void)device_body, (void)target;
    return absl::UnimplementedError("kvtier was built without CUDA");
#endif
  }

 private:
  static absl::Status Unsupported(const ChunkShape& shape) {
    return absl::InvalidArgumentError(
        absl::StrCat("fp8: unsupported dtype ", DTypeName(shape.layout.dtype)));
  }
};

}  // namespace

const CodecImpl& Fp8Codec() {
  static const Fp8CodecImpl* impl = new Fp8CodecImpl();
  return *impl;
}

}  // namespace kvtier::kernels::internal
