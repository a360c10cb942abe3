# Sources of kernels/src/turboquant (target_sources on kvtier_kernels).
