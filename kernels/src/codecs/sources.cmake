# Sources of kernels/src/codecs (target_sources on kvtier_kernels).
