# Tests for kernels/turboquant (kvtier_add_test).
kvtier_add_test(NAME kernels_turboquant_test SOURCES kernels/turboquant_test.cc
                LIBS kvtier::kernels LABELS unit)
target_include_directories(kernels_turboquant_test PRIVATE ${PROJECT_SOURCE_DIR}/kernels/src)
kvtier_add_test(NAME kernels_turboquant_codec_test SOURCES kernels/turboquant_codec_test.cc
                LIBS kvtier::kernels LABELS unit)
target_include_directories(kernels_turboquant_codec_test PRIVATE ${PROJECT_SOURCE_DIR}/kernels/src)
if(KVTIER_HAVE_CUDA)
  kvtier_add_test(NAME kernels_turboquant_gpu_test SOURCES kernels/turboquant_gpu_test.cc
                  LIBS kvtier::kernels CUDA::cudart GPU)
  target_include_directories(kernels_turboquant_gpu_test PRIVATE ${PROJECT_SOURCE_DIR}/kernels/src)
endif()
kvtier_add_test(NAME kernels_turboquant_fixed_test SOURCES kernels/turboquant_fixed_test.cc
                LIBS kvtier::kernels LABELS unit)
target_include_directories(kernels_turboquant_fixed_test PRIVATE ${PROJECT_SOURCE_DIR}/kernels/src)
