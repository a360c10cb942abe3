// HostTargetView: the TargetView of a host DecodeTarget (shared by both builds).
#include "codecs/device_memory.h"

namespace kvtier::kernels::internal {

TargetView HostTargetView(const DecodeTarget& target) {
  TargetView v;
  v.layer_base = reinterpret_cast<char* const*>(target.layer_base.data());
  v.stride_kv = target.stride_kv;
  v.stride_head = target.stride_head;
  v.stride_token = target.stride_token;
  v.block_table = target.block_table;
  v.block_size = target.block_size;
  v.stride_block = target.stride_block;
  v.chunk_stride = 0;
  uint64_t bits = static_cast<uint64_t>(target.stride_kv | target.stride_head |
                                        target.stride_token | target.stride_block);
  for (void* p : target.layer_base) bits |= reinterpret_cast<uintptr_t>(p);
  v.align16 = (bits & 15) == 0;
  return v;
}

}  // namespace kvtier::kernels::internal
