# Benchmarks: selection.
# selection_quality (CPU): quality of SnapKV / PyramidKV / H2O / StreamingLLM against the oracle
# and random selection on synthetic KV (docs/QUALITY.md, "## Token selection").
add_executable(selection_quality selection_quality.cc)
target_link_libraries(selection_quality PRIVATE kvtier::kernels)

# selection_speed (GPU): SnapKV / PyramidKV selection time as a ratio to reading K once at copy
# bandwidth (docs/BENCHMARKS.md, "## Token selection: speed"). Uses the internal phase timer.
if(KVTIER_HAVE_CUDA)
  add_executable(selection_speed selection_speed.cu)
  target_include_directories(selection_speed PRIVATE ${PROJECT_SOURCE_DIR}/kernels/src)
  target_link_libraries(selection_speed PRIVATE kvtier::kernels CUDA::cudart)
  kvtier_register_gpu_binary(selection_speed)
endif()
