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
  src/codecs/cpu_simd.cc
  src/codecs/gpu_stager.cc
)
# The CPU reference must compute exactly what the kernels compute: no FMA contraction on the host
# side, none on the device side (the kernels also spell their arithmetic with __fmul_rn & co.).
set_source_files_properties(src/codecs/fp8_codec.cc src/codecs/kivi_codec.cc src/codecs/cpu_simd.cc
                            PROPERTIES COMPILE_OPTIONS "-ffp-contract=off")
if(KVTIER_HAVE_CUDA)
  target_sources(kvtier_kernels PRIVATE
    src/codecs/device_memory_cuda.cc
    src/codecs/raw.cu
    src/codecs/fp8.cu
    src/codecs/kivi.cu
  )
  set_source_files_properties(src/codecs/raw.cu src/codecs/fp8.cu src/codecs/kivi.cu
                              PROPERTIES COMPILE_OPTIONS "--fmad=false")
  # The codec .cc files call the launchers of codec_cuda.h only when these kernels are built.
  set_source_files_properties(src/codecs/raw_codec.cc src/codecs/fp8_codec.cc
                              src/codecs/kivi_codec.cc PROPERTIES COMPILE_DEFINITIONS
                              KVTIER_CODECS_CUDA=1)
else()
  target_sources(kvtier_kernels PRIVATE src/codecs/device_memory_none.cc)
endif()

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
