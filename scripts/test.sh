#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs dependencies, configures, builds and runs
# every ctest test (labels: unit, integration, gpu, slow). GPU tests skip with a reason when no GPU
# is visible. Extra arguments go to ctest (e.g. -L unit, -R codec).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
BUILD_DIR=${KVTIER_BUILD_DIR:-build}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${KVTIER_TEST_JOBS:-2}" "$@"
