# Benchmarks: selection.
