# Tests for kernels/codecs (kvtier_add_test). They include the internal headers of
# kernels/src (numeric conversions, format constants) besides the public API.
set(_codec_test_includes ${PROJECT_SOURCE_DIR}/kernels/src ${CMAKE_CURRENT_SOURCE_DIR}/kernels
                          ${PROJECT_SOURCE_DIR}/fuzz)
foreach(_t params roundtrip malformed target corpus reference)
  kvtier_add_test(NAME kernels_codec_${_t}_test SOURCES kernels/codec_${_t}_test.cc
                  LIBS kvtier::kernels LABELS unit)
  target_include_directories(kernels_codec_${_t}_test PRIVATE ${_codec_test_includes})
endforeach()
target_compile_definitions(kernels_codec_corpus_test PRIVATE
                           KVTIER_PAYLOAD_CORPUS="${PROJECT_SOURCE_DIR}/fuzz/corpus/payload")
if(KVTIER_HAVE_CUDA)
  kvtier_add_test(NAME kernels_codec_gpu_test SOURCES kernels/codec_gpu_test.cc
                  LIBS kvtier::kernels CUDA::cudart GPU)
  target_include_directories(kernels_codec_gpu_test PRIVATE ${_codec_test_includes})
endif()

# GpuStager (kvtier/kernels/gpu_stager.h): option checks and the no-GPU refusal run everywhere; the
# byte-for-byte comparison with the CPU reference needs a GPU.
kvtier_add_test(NAME kernels_gpu_stager_test SOURCES kernels/gpu_stager_test.cc
                LIBS kvtier::kernels LABELS unit)
if(KVTIER_HAVE_CUDA)
  kvtier_add_test(NAME kernels_gpu_stager_gpu_test SOURCES kernels/gpu_stager_gpu_test.cc
                  LIBS kvtier::kernels GPU)
  target_include_directories(kernels_gpu_stager_gpu_test PRIVATE ${_codec_test_includes})
endif()
