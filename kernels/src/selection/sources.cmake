# Sources of kernels/src/selection (target_sources on kvtier_kernels).
target_sources(kvtier_kernels PRIVATE
  src/selection/options.cc
  src/selection/selection.cc
  src/selection/selection_cpu.cc
  src/selection/selection_nocuda.cc)
