# Codec quality tool (CPU): synthetic KV + TurboQuant paper reproduction. Not a test (no label);
# results go to docs/QUALITY.md.
add_executable(quality quality.cc synthetic_kv.cc)
target_link_libraries(quality PRIVATE kvtier::kernels CLI11::CLI11 fmt::fmt)
# numeric.h (fp16 conversions shared with the codecs) is an internal kernels header.
target_include_directories(quality PRIVATE ${PROJECT_SOURCE_DIR}/kernels/src)
