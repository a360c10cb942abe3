# Benchmarks: codecs. codec_speed measures encode/decode throughput (GPU: batched launchers vs
# device-to-device copy; CPU: GB/s of fp16 per core). Results: bench/results/, docs/BENCHMARKS.md.
add_executable(codec_speed codec_speed.cc)
target_link_libraries(codec_speed PRIVATE kvtier::kernels)
# The batched launchers (codec_cuda.h) are internal kernels headers.
target_include_directories(codec_speed PRIVATE ${PROJECT_SOURCE_DIR}/kernels/src)
if(KVTIER_HAVE_CUDA)
  target_link_libraries(codec_speed PRIVATE CUDA::cudart)
  kvtier_register_gpu_binary(codec_speed)
endif()
