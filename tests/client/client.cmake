# Tests for client/client (kvtier_add_test).
