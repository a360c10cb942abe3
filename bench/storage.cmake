# Benchmarks: storage.
