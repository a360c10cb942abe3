# Sources of kernels/src/latent (target_sources on kvtier_kernels).
