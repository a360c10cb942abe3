#!/usr/bin/env bash
# Configures and builds kvtier into build/ (or $KVTIER_BUILD_DIR). Extra arguments go to cmake.
# KVTIER_TARGETS="a b" builds only those targets (default: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${KVTIER_BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ] || [ $# -gt 0 ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja "$@"
fi
if [ -n "${KVTIER_TARGETS:-}" ]; then
  # shellcheck disable=SC2086
  cmake --build "$BUILD_DIR" -j "${KVTIER_JOBS:-$(nproc)}" --target $KVTIER_TARGETS
else
  cmake --build "$BUILD_DIR" -j "${KVTIER_JOBS:-$(nproc)}"
fi
