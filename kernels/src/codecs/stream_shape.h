// Internal: StreamShape of a ChunkShape (see geometry.h). Host only. Not a public header.
#ifndef KVTIER_KERNELS_SRC_CODECS_STREAM_SHAPE_H_
#define KVTIER_KERNELS_SRC_CODECS_STREAM_SHAPE_H_

#include <type_traits>

#include "codec_impl.h"
#include "codecs/geometry.h"

namespace kvtier::kernels::internal {

inline StreamShape MakeStreamShape(const ChunkShape& c) {
  StreamShape s;
  s.mha = c.layout.kind == LayoutKind::kMha;
  s.num_layers = c.layout.num_layers;
  s.heads = s.mha ? c.layout.num_kv_heads : 1;
  s.num_streams = s.mha ? 2 * s.num_layers * s.heads : s.num_layers;
  s.tokens = c.num_tokens;
  s.width = c.layout.VectorDim();
  s.elem_size = static_cast<uint32_t>(DTypeSize(c.layout.dtype));
  return s;
}

inline uint8_t DTypeCode(DType t) { return static_cast<uint8_t>(t); }

// The dtype code of cpu_simd.h's row decoders for an element type, 0 where they do not apply.
template <typename Elem>
inline constexpr uint8_t kSimdCode = std::is_same_v<Elem, Fp16Elem>   ? 1
                                     : std::is_same_v<Elem, Bf16Elem> ? 2
                                                                      : 0;

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_SRC_CODECS_STREAM_SHAPE_H_
