# Benchmarks: client.
