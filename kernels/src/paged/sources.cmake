# Sources of kernels/src/paged (target_sources on kvtier_kernels): paged-layout gather/scatter.
target_sources(kvtier_kernels PRIVATE src/paged/paged.cc src/paged/paged_host.cc)
if(KVTIER_HAVE_CUDA)
  target_sources(kvtier_kernels PRIVATE src/paged/paged_device.cu)
else()
  target_sources(kvtier_kernels PRIVATE src/paged/paged_device_none.cc)
endif()
