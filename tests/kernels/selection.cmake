# Tests for kernels/selection (kvtier_add_test).
kvtier_add_test(NAME kernels_selection_test SOURCES kernels/selection_test.cc
                LIBS kvtier::kernels LABELS unit)
kvtier_add_test(NAME kernels_compacted_test SOURCES kernels/compacted_test.cc
                LIBS kvtier::kernels LABELS unit)
if(KVTIER_HAVE_CUDA)
  kvtier_add_test(NAME kernels_selection_gpu_test SOURCES kernels/selection_gpu_test.cc
                  LIBS kvtier::kernels CUDA::cudart GPU)
  # The batched-launch test calls the internal timed entry point.
  target_include_directories(kernels_selection_gpu_test PRIVATE ${PROJECT_SOURCE_DIR}/kernels/src)
endif()
