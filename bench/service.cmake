# Benchmarks: service. rpc_bench starts its own kvtierd and redis-server (docs/BENCHMARKS.md,
# "## Daemon RPC").
if(KVTIER_BUILD_TESTS)
  add_executable(rpc_bench rpc_bench.cc)
  target_link_libraries(rpc_bench PRIVATE kvtier_daemon_process kvtier_rpc_util kvtier::client
                                          kvtier::kernels
                                          CLI11::CLI11 fmt::fmt)
  target_compile_definitions(rpc_bench PRIVATE KVTIER_KVTIERD="$<TARGET_FILE:kvtierd>")
  add_dependencies(rpc_bench kvtierd)
endif()
