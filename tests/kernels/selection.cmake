# Tests for kernels/selection (kvtier_add_test).
kvtier_add_test(NAME kernels_selection_test SOURCES kernels/selection_test.cc
                LIBS kvtier::kernels LABELS unit)
