#!/usr/bin/env bash
# Installs the Debian packages kvtier's build, tests and benchmarks need; installs nothing when they
# are all present. Idempotent. Needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang
  # libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libabsl-dev prometheus-cpp-dev libspdlog-dev libfmt-dev libssl-dev
  libcli11-dev libtomlplusplus-dev libisal-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # Python bindings and their tests
  python3-dev pybind11-dev python3-numpy python3-pytest
  # services the integration tests and benchmarks start on loopback
  prometheus redis-server
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
