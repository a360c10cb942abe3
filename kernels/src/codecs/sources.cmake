# Sources of kernels/src/codecs (target_sources on kvtier_kernels): payload format v1, layout,
# the codec dispatcher, and the raw / fp8 / kivi codecs (CPU reference + CUDA kernels).
target_sources(kvtier_kernels PRIVATE
  src/codecs/layout.cc
  src/codecs/codec_params.cc
  src/codecs/format.cc
  src/codecs/codec.cc
  src/codecs/target_view.cc
  src/codecs/raw_codec.cc
  src/codecs/fp8_codec.cc
  src/codecs/kivi_codec.cc
)
# The CPU reference must compute exactly what the kernels compute: no FMA contraction on the host
# side, none on the device side (the kernels also spell their arithmetic with __fmul_rn & co.).
set_source_files_properties(src/codecs/fp8_codec.cc src/codecs/kivi_codec.cc
                            PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")
# CUDA kernels: not in this commit yet (the next one adds raw.cu, fp8.cu, kivi.cu and
# device_memory_cuda.cc); until then device memory is Unimplemented in every build.
target_sources(kvtier_kernels PRIVATE src/codecs/device_memory_none.cc)

# TurboQuant lives in src/turboquant and defines internal::TurboQuantCodec(). The dispatcher
# references it only once that area lists sources; until then kTurboQuant is Unimplemented
# ("turboquant not built"). This is checked at the end of kernels/CMakeLists.txt (after every
# area's sources.cmake ran) rather than with a weak symbol, because kvtier_kernels is a static
# library and a weak reference would not pull the TurboQuant object out of the archive.
function(_kvtier_codecs_detect_turboquant)
  get_target_property(_srcs kvtier_kernels SOURCES)
  foreach(_s IN LISTS _srcs)
    if(_s MATCHES "(^|/)src/turboquant/[^/]+\\.(cc|cu|cpp)$")
      target_compile_definitions(kvtier_kernels PRIVATE KVTIER_HAVE_TURBOQUANT=1)
      return()
    endif()
  endforeach()
endfunction()
cmake_language(DEFER CALL _kvtier_codecs_detect_turboquant)
