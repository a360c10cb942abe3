# Tests for kernels/paged (kvtier_add_test).
kvtier_add_test(NAME kernels_paged_test SOURCES kernels/paged_test.cc
                LIBS kvtier::kernels LABELS unit)
if(KVTIER_HAVE_CUDA)
  kvtier_add_test(NAME kernels_paged_gpu_test SOURCES kernels/paged_gpu_test.cc
                  LIBS kvtier::kernels CUDA::cudart GPU)
endif()
