# Sources of kernels/src/turboquant (target_sources on kvtier_kernels).
# The CPU reference must not fuse multiply-adds: the CUDA kernels reproduce its exact operation
# order with __fadd_rn/__fmul_rn, so CPU and GPU codes are bit-identical.
set(_kvtier_tq_cpu src/turboquant/tq_tables.cc src/turboquant/tq_codec.cc)
target_sources(kvtier_kernels PRIVATE ${_kvtier_tq_cpu})
set_source_files_properties(${_kvtier_tq_cpu} PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")
if(KVTIER_HAVE_CUDA)
  target_sources(kvtier_kernels PRIVATE src/turboquant/tq_cuda.cu)
  set_source_files_properties(src/turboquant/tq_cuda.cu PROPERTIES COMPILE_OPTIONS "--fmad=false")
else()
  target_sources(kvtier_kernels PRIVATE src/turboquant/tq_nocuda.cc)
endif()
