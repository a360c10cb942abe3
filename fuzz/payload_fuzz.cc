// libFuzzer target for the payload decoder: InspectPayload and Decode must reject any input with
// a status, never crash, read out of bounds or hit undefined behaviour (build with
// -DKVTIER_FUZZ=ON, clang, and KVTIER_SANITIZE=address,undefined; see fuzz/CMakeLists.txt).
#include <cstddef>
#include <cstdint>

#include "payload_fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)kvtier::fuzz::RunPayloadInput(data, size);
  return 0;
}
