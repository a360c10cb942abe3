# Tests for service/ (kvtierd). Integration tests start the real kvtierd binary on a temporary
# Unix socket / 127.0.0.1 port 0 (tests/service/daemon_process.h).
add_library(kvtier_daemon_process STATIC service/daemon_process.cc)
target_include_directories(kvtier_daemon_process PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/service)
target_link_libraries(kvtier_daemon_process PUBLIC kvtier::proto gRPC::grpc++ absl::statusor
                                                   absl::strings)

kvtier_add_test(NAME service_config_test SOURCES service/config_test.cc
                LIBS kvtier::service kvtier_daemon_process LABELS unit)
target_include_directories(service_config_test PRIVATE ${PROJECT_SOURCE_DIR}/service/src)
kvtier_add_test(NAME service_connection_limiter_test SOURCES service/connection_limiter_test.cc
                LIBS kvtier::service kvtier_daemon_process LABELS unit)
target_include_directories(service_connection_limiter_test PRIVATE
                           ${PROJECT_SOURCE_DIR}/service/src)

# Integration tests: each binary starts its own daemons.
foreach(t rpc lifecycle metrics health connections shared_memory)
  kvtier_add_test(NAME service_${t}_test SOURCES service/${t}_test.cc
                  LIBS kvtier_daemon_process kvtier_rpc_util kvtier::kernels kvtier::common
                  LABELS integration TIMEOUT 120)
  target_compile_definitions(service_${t}_test PRIVATE
                             KVTIER_KVTIERD="$<TARGET_FILE:kvtierd>")
  add_dependencies(service_${t}_test kvtierd)
endforeach()

# kvtierd with its codecs on the GPU (service.codec_device = gpu): same bytes as the CPU reference.
# kvtierd goes into the GPU bundle with it (run.sh exports KVTIER_KVTIERD).
if(KVTIER_HAVE_CUDA)
  kvtier_add_test(NAME service_gpu_codec_gpu_test SOURCES service/gpu_codec_gpu_test.cc
                  LIBS kvtier_daemon_process kvtier_rpc_util kvtier::kernels kvtier::common GPU
                  TIMEOUT 120)
  target_compile_definitions(service_gpu_codec_gpu_test PRIVATE
                             KVTIER_KVTIERD="$<TARGET_FILE:kvtierd>")
  add_dependencies(service_gpu_codec_gpu_test kvtierd)
  kvtier_register_gpu_binary(kvtierd)
endif()
