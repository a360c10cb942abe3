# Tests for client/ (kvtier_add_test): SDK retry policy and CLI pieces (unit); SDK, CLI and Python
# module against a real kvtierd started by each test on a temporary Unix socket (integration).
kvtier_add_test(NAME client_retry_test SOURCES client/retry_test.cc
                LIBS kvtier::client LABELS unit)
kvtier_add_test(NAME client_cli_units_test SOURCES client/cli_units_test.cc
                LIBS kvtier_cli_lib LABELS unit)
