# Tests for client/ (kvtier_add_test): SDK retry policy and CLI pieces (unit); SDK, CLI and Python
# module against a real kvtierd started by each test on a temporary Unix socket (integration).
kvtier_add_test(NAME client_retry_test SOURCES client/retry_test.cc
                LIBS kvtier::client LABELS unit)
kvtier_add_test(NAME client_cli_units_test SOURCES client/cli_units_test.cc
                LIBS kvtier_cli_lib LABELS unit)

# Integration: the SDK against a real kvtierd (tests/service/daemon_process.h starts it).
kvtier_add_test(NAME client_sdk_test SOURCES client/sdk_test.cc
                LIBS kvtier::client kvtier_cli_lib kvtier_daemon_process
                LABELS integration TIMEOUT 180)
target_compile_definitions(client_sdk_test PRIVATE KVTIER_KVTIERD="$<TARGET_FILE:kvtierd>")
add_dependencies(client_sdk_test kvtierd)

# Integration: the `kvtier` CLI on real invocations against a real kvtierd.
kvtier_add_test(NAME client_cli_test SOURCES client/cli_test.cc
                LIBS kvtier_cli_lib kvtier_daemon_process LABELS integration TIMEOUT 180)
target_compile_definitions(client_cli_test PRIVATE KVTIER_KVTIERD="$<TARGET_FILE:kvtierd>"
                                                   KVTIER_CLI="$<TARGET_FILE:kvtier>")
add_dependencies(client_cli_test kvtierd kvtier)

# Integration: the Python module under pytest, against a real kvtierd the test starts.
# (Not under sanitizers: an instrumented extension cannot be loaded into a plain interpreter.)
if(TARGET kvtier_python AND NOT KVTIER_SANITIZE)
  add_test(NAME client_python_test
           COMMAND ${PYTHON_EXECUTABLE} -m pytest -q -p no:cacheprovider
                   ${CMAKE_CURRENT_SOURCE_DIR}/client/test_python.py)
  set_tests_properties(client_python_test PROPERTIES
    LABELS integration TIMEOUT 180
    ENVIRONMENT "PYTHONPATH=${KVTIER_PYTHON_DIR};KVTIERD=$<TARGET_FILE:kvtierd>")
endif()
