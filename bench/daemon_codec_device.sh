#!/usr/bin/env bash
# kvtierd ingest and fetch with its codecs on the CPU and on the GPU (service.codec_device), side
# by side on one machine: for each setting, starts kvtierd (host tier of 8 GiB, TCP and metrics
# on free loopback ports), runs `kvtier bench` Puts of tensors (encoded by the daemon) and tensor Gets
# (decoded by the daemon), and writes the reports as JSON.
#
#   bench/daemon_codec_device.sh BIN_DIR OUT_DIR [CODEC] [CONCURRENCY] [SECONDS]
#
# BIN_DIR holds kvtierd and kvtier (e.g. a GPU bundle's bin/ after scripts/gpu-bundle.sh with
# the kvtierd and kvtier targets). Results: OUT_DIR/{put,get}_<setting>.json. Extra kvtierd flags
# (e.g. --service.gpu_codec_slots=8) come from $KVTIERD_FLAGS; MODES (default "put get") picks
# the bench modes; SETTINGS (default "cpu gpu") the daemons, in order: cpu, gpu, and gpu_legacy
# (GPU codecs through the staging path before per-slot streams and pinned buffers, selected
# with KVTIER_GPU_STAGING=legacy, to compare both in one run).
set -euo pipefail
BIN=$1
OUT=$2
CODEC=${3:-kivi:b=2,g=32}
CONC=${4:-8}
SECS=${5:-4}
mkdir -p "$OUT"
for dev in ${SETTINGS:-cpu gpu}; do
  case "$dev" in
    cpu | gpu) codec_device=$dev staging= ;;
    gpu_legacy) codec_device=gpu staging=legacy ;;
    *) echo "daemon_codec_device.sh: unknown setting $dev" >&2; exit 2 ;;
  esac
  dir=$(mktemp -d)
  KVTIER_GPU_STAGING=$staging \
  "$BIN/kvtierd" --service.data_dir="$dir" --server.unix_socket="$dir/kvtierd.sock" --server.tcp_address=127.0.0.1:0 --metrics.address=127.0.0.1:0 \
    --service.codec_device="$codec_device" --storage.host.capacity_bytes=$((8 << 30)) ${KVTIERD_FLAGS:-} \
    > "$OUT/kvtierd_$dev.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    "$BIN/kvtierd" --server.unix_socket="$dir/kvtierd.sock" --health-check >/dev/null 2>&1 && break
    sleep 0.1
  done
  for mode in ${MODES:-put get}; do
    "$BIN/kvtier" --target "unix:$dir/kvtierd.sock" bench --codec "$CODEC" --mode "$mode" \
      --concurrency "$CONC" --duration "$SECS" --seed 7 --json-out "$OUT/${mode}_$dev.json" \
      | sed "s/^/[$dev $mode] /"
  done
  kill -TERM "$pid"
  wait "$pid" || true
  grep -hE "codecs on the|KVTIER_GPU_STAGING" "$OUT/kvtierd_$dev.log" | sed "s/^/[$dev] /" || true
  rm -rf "$dir"
done
