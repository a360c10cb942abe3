#!/usr/bin/env bash
# Collects kvtier's GPU tests, benchmarks and tools, plus the non-system shared libraries they
# load, into gpu-bundle/ (git-ignored) with a runner, for the GPU machine (see docs/BENCHMARKS.md,
# "Running on the GPU machine"). The GPU machine has CUDA and NCCL but no gRPC/RocksDB/Abseil.
#
#   scripts/gpu-bundle.sh [TARGET...]  # configure (CUDA ON, sm_90) into build-gpu/, build the
#                                      # named GPU targets (default: all), bundle them
#   KVTIER_GPU_BUILD_DIR / KVTIER_BUNDLE_DIR choose other folders (both must be git-ignored:
#   build*/ and gpu-bundle*/ are), so several people can bundle side by side.
#   then, on the GPU machine:  gpu-bundle/run.sh tests            # every GPU test, logs to $OUT
#                              gpu-bundle/run.sh exec gpu_ceilings --json $OUT/ceilings.json
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${KVTIER_GPU_BUILD_DIR:-build-gpu}
BUNDLE=${KVTIER_BUNDLE_DIR:-gpu-bundle}
TARGETS=("$@")

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DKVTIER_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES="${KVTIER_CUDA_ARCHS:-90}"
fi
if [ ${#TARGETS[@]} -gt 0 ]; then
  cmake --build "$BUILD_DIR" -j "${KVTIER_JOBS:-$(nproc)}" --target "${TARGETS[@]}"
else
  cmake --build "$BUILD_DIR" -j "${KVTIER_JOBS:-$(nproc)}"
fi

manifest="$BUILD_DIR/gpu-binaries.txt"
[ -s "$manifest" ] || { echo "gpu-bundle: $manifest is empty (built without CUDA?)" >&2; exit 1; }

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
# Libraries the GPU machine provides itself (GPU.md): glibc, the C++ runtime, CUDA driver, NCCL.
system_lib='^(linux-vdso|ld-linux|libc\.|libm\.|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libcuda\.|libnccl)'
while read -r bin; do
  [ -n "$bin" ] || continue
  if [ ${#TARGETS[@]} -gt 0 ] && [[ ! " ${TARGETS[*]} " == *" $(basename "$bin") "* ]]; then continue; fi
  cp "$bin" "$BUNDLE/bin/"
  ldd "$bin" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    if ! [[ "$name" =~ $system_lib ]]; then cp -nL "$path" "$BUNDLE/lib/" 2>/dev/null || true; fi
  done
done < "$manifest"
# The CUDA runtime is linked statically by default; copy libcudart too if a binary needs it.

cat > "$BUNDLE/run.sh" <<'RUNNER'
#!/usr/bin/env bash
# kvtier GPU bundle runner. Writes logs and results under $OUT (or ./gpu-out).
#   run.sh tests                 every GPU test binary; gtest JSON per binary; summary table last
#   run.sh exec NAME [ARGS...]   one binary with the bundle's libraries
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export LD_LIBRARY_PATH="$HERE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_NVLS_ENABLE=0
# Tests that start the daemon find it here (the build path they were compiled with is not on
# the GPU machine).
[ -x "$HERE/bin/kvtierd" ] && export KVTIER_KVTIERD="$HERE/bin/kvtierd"
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
case "${1:-tests}" in
  tests)
    status=0
    summary=""
    for t in "$HERE"/bin/*_test; do
      name=$(basename "$t")
      "$t" --gtest_output="json:$OUT/$name.json" > "$OUT/$name.log" 2>&1
      rc=$?
      [ $rc -eq 0 ] || status=1
      line=$(grep -E '^\[  (PASSED|FAILED)  \]' "$OUT/$name.log" | tr '\n' ' ')
      summary+=$(printf '%-40s rc=%-3d %s' "$name" "$rc" "$line")$'\n'
      [ $rc -eq 0 ] || tail -40 "$OUT/$name.log"
    done
    printf '%s' "$summary"
    exit $status ;;
  exec)
    shift
    name=$1; shift
    exec "$HERE/bin/$name" "$@" ;;
  *) echo "usage: run.sh tests | exec NAME [ARGS...]" >&2; exit 2 ;;
esac
RUNNER
chmod +x "$BUNDLE/run.sh"
du -sh "$BUNDLE"
echo "gpu-bundle: $(wc -l < "$manifest") binaries in $BUNDLE/"
