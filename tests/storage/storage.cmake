# Tests for storage/ (kvtier_add_test). Internal headers come from storage/src.
set(_kvtier_storage_src ${PROJECT_SOURCE_DIR}/storage/src)

function(kvtier_storage_test name)
  kvtier_add_test(NAME ${name} ${ARGN})
  target_include_directories(${name} PRIVATE ${_kvtier_storage_src} ${CMAKE_CURRENT_SOURCE_DIR}/storage)
  if(KVTIER_SANITIZE MATCHES "thread")
    set_tests_properties(${name} PROPERTIES ENVIRONMENT
      "TSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/storage/tsan_suppressions.txt")
  endif()
endfunction()

kvtier_storage_test(storage_range_allocator_test SOURCES storage/range_allocator_test.cc
                    LIBS kvtier::storage LABELS unit)
kvtier_storage_test(storage_eviction_policy_test SOURCES storage/eviction_policy_test.cc
                    LIBS kvtier::storage LABELS unit)
kvtier_storage_test(storage_tier_contract_test SOURCES storage/tier_contract_test.cc
                    LIBS kvtier::storage LABELS unit)
if(KVTIER_HAVE_CUDA)
  kvtier_storage_test(storage_tier_contract_gpu_test SOURCES storage/tier_contract_test.cc
                      LIBS kvtier::storage GPU)
  target_compile_definitions(storage_tier_contract_gpu_test PRIVATE KVTIER_STORAGE_GPU_CONTRACT=1)
endif()
kvtier_storage_test(storage_tier_manager_test SOURCES storage/tier_manager_test.cc
                    LIBS kvtier::storage LABELS unit)
kvtier_storage_test(storage_disk_faults_test SOURCES storage/disk_faults_test.cc
                    LIBS kvtier::storage LABELS unit)
kvtier_storage_test(storage_stress_test SOURCES storage/stress_test.cc
                    LIBS kvtier::storage LABELS unit TIMEOUT 120)
kvtier_storage_test(storage_own_keys_test SOURCES storage/own_keys_test.cc
                    LIBS kvtier::storage LABELS unit)

# Smoke test of the trace replay (first 500 requests): fails if policy "lru" differs from the
# exact-LRU model on the real trace; skipped when ../shared/data is not beside the checkout.
if(TARGET replay)
  add_test(NAME storage_replay_smoke
           COMMAND replay ${PROJECT_SOURCE_DIR}/../shared/data/mooncake_synthetic_trace.jsonl --quick)
  set_tests_properties(storage_replay_smoke PROPERTIES LABELS integration TIMEOUT 120
                       SKIP_RETURN_CODE 77)
endif()
