# Sources of kernels/src/paged (target_sources on kvtier_kernels).
