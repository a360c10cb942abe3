# Tests for kernels/codecs (kvtier_add_test).
