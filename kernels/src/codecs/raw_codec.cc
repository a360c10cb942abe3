// raw: the canonical chunk bytes, unchanged (docs/FORMAT.md, "raw"). Still checksummed.
#include <cstring>

#include "codec_impl.h"
#include "codecs/codec_cuda.h"
#include "codecs/device_memory.h"
#include "codecs/stream_shape.h"

namespace kvtier::kernels::internal {
namespace {

class RawCodecImpl final : public CodecImpl {
 public:
  absl::Status CheckCompatible(const CodecParams&, const ChunkShape&) const override {
    return absl::OkStatus();
  }

  size_t BodySize(const CodecParams&, const ChunkShape& shape) const override {
    return shape.layout.ChunkBytes(shape.num_tokens);
  }

  absl::Status EncodeHost(const CodecParams&, const ChunkShape&, const void* input,
                          absl::Span<uint8_t> body) const override {
    std::memcpy(body.data(), input, body.size());
    return absl::OkStatus();
  }

  absl::Status DecodeHost(const CodecParams&, const ChunkShape& shape,
                          absl::Span<const uint8_t> body,
                          const DecodeTarget& target) const override {
    const StreamShape s = MakeStreamShape(shape);
    const TargetView view = HostTargetView(target);
    const size_t row_bytes = size_t{s.width} * s.elem_size;
    const uint8_t* src = body.data();
    for (uint32_t st = 0; st < s.num_streams; ++st) {
      uint32_t l, kv, h;
      s.Decompose(st, &l, &kv, &h);
      for (uint32_t t = 0; t < s.tokens; ++t, src += row_bytes) {
        std::memcpy(view.Row(l, kv, h, t), src, row_bytes);
      }
    }
    return absl::OkStatus();
  }

  absl::Status EncodeDevice(const CodecParams&, const ChunkShape& shape, const void* device_input,
                            void* device_body) const override {
#ifdef KVTIER_CODECS_CUDA
    const StreamShape s = MakeStreamShape(shape);
    return FinishLaunch(
        cuda::LaunchRawEncode(s, device_input, 0, device_body, 0, 1, nullptr), "raw encode");
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
    return FinishLaunch(cuda::LaunchRawDecode(s, device_body, 0, dt->view, 1, nullptr),
                        "raw decode");
#else
    (void)shape, (void)device_body, (void)target;
    return absl::UnimplementedError("kvtier was built without CUDA");
#endif
  }
};

}  // namespace

const CodecImpl& RawCodec() {
  static const RawCodecImpl* impl = new RawCodecImpl();
  return *impl;
}

}  // namespace kvtier::kernels::internal
