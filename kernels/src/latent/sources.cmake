# Sources of kernels/src/latent (target_sources on kvtier_kernels).
target_sources(kvtier_kernels PRIVATE src/latent/latent.cc)
