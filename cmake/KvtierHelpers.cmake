# Helpers shared by every component's CMakeLists.txt.

# kvtier_add_test(NAME <name> SOURCES <src...> [LIBS <lib...>] [LABELS <label...>] [GPU]
#                 [TIMEOUT <s>] [ARGS <arg...>])
#
# One GoogleTest binary registered as one ctest test. LABELS are ctest labels (unit, integration,
# gpu, slow). GPU tests link kvtier_gpu_test_main, which exits 77 with a reason when no CUDA device
# is visible; ctest reports that as "Skipped".
function(kvtier_add_test)
  cmake_parse_arguments(T "GPU" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS;ARGS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  if(T_GPU)
    target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} kvtier_gpu_test_main GTest::gtest GTest::gmock)
    list(APPEND T_LABELS gpu)
  else()
    target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest_main GTest::gmock)
  endif()
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} ${T_ARGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
                       SKIP_RETURN_CODE 77)
  if(T_GPU)
    set_property(GLOBAL APPEND PROPERTY KVTIER_GPU_BINARIES ${T_NAME})
  endif()
endfunction()

# kvtier_register_gpu_binary(<target>): adds a benchmark or tool to the GPU bundle manifest.
function(kvtier_register_gpu_binary target)
  set_property(GLOBAL APPEND PROPERTY KVTIER_GPU_BINARIES ${target})
endfunction()
