# Benchmarks: storage. replay (trace replay, docs/BENCHMARKS.md "Trace replay") and storage_bench
# (index lookups, host-tier and disk-tier throughput, docs/BENCHMARKS.md "Storage").
add_executable(replay replay.cc)
target_link_libraries(replay PRIVATE kvtier::storage fmt::fmt)
add_executable(storage_bench storage_bench.cc)
target_link_libraries(storage_bench PRIVATE kvtier::storage benchmark::benchmark)
