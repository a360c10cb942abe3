# Tests for kernels/selection (kvtier_add_test).
