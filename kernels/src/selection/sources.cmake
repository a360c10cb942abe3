# Sources of kernels/src/selection (target_sources on kvtier_kernels).
target_sources(kvtier_kernels PRIVATE
  src/selection/compacted.cc
  src/selection/options.cc
  src/selection/selection.cc
  src/selection/selection_cpu.cc)
if(KVTIER_HAVE_CUDA)
  target_sources(kvtier_kernels PRIVATE src/selection/selection_cuda.cu)
else()
  target_sources(kvtier_kernels PRIVATE src/selection/selection_nocuda.cc)
endif()
