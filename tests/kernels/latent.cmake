# Tests for kernels/latent (kvtier_add_test).
