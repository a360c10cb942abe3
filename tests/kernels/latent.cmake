# Tests for kernels/latent (kvtier_add_test).
kvtier_add_test(NAME kernels_latent_test SOURCES kernels/latent_test.cc
                LIBS kvtier::kernels LABELS unit)
target_include_directories(kernels_latent_test PRIVATE ${PROJECT_SOURCE_DIR}/kernels/src)
