# Benchmarks: service.
