# Benchmarks: codecs.
