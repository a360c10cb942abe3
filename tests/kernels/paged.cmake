# Tests for kernels/paged (kvtier_add_test).
