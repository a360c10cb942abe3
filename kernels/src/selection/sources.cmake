# Sources of kernels/src/selection (target_sources on kvtier_kernels).
