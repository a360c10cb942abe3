# Tests for service/service (kvtier_add_test).
