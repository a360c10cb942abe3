# Benchmarks: client (paged-layout helpers on the GPU; the load generator is `kvtier bench`).
if(KVTIER_HAVE_CUDA)
  add_executable(paged_bench paged_bench.cc)
  target_link_libraries(paged_bench PRIVATE kvtier::kernels CUDA::cudart)
  kvtier_register_gpu_binary(paged_bench)
endif()
