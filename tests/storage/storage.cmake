# Tests for storage/storage (kvtier_add_test).
