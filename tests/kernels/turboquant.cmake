# Tests for kernels/turboquant (kvtier_add_test).
