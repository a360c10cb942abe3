#!/usr/bin/env bash
# kvtier in one command: installs what is missing (scripts/install-deps.sh), builds kvtierd and the
# demo client (scripts/build.sh), starts kvtierd on its embedded defaults (gRPC on
# unix:./data/kvtierd.sock and 127.0.0.1:7470, metrics on http://127.0.0.1:7471/metrics, host tier
# + RocksDB under ./data), runs the demo (a synthetic multi-turn conversation's KV cache stored
# and fetched; prints compression ratio and hit rate), and keeps the daemon running until Ctrl-C.
#
#   scripts/run.sh            # demo, then the daemon keeps serving until Ctrl-C
#   scripts/run.sh --once     # demo, then a graceful stop (same: KVTIER_RUN_DEMO_ONLY=1)
#   scripts/run.sh [--once] -- <kvtier_demo flags>   e.g. -- --codec kivi:b=4,g=32 --turns 10
# KVTIER_BUILD_DIR picks the build directory (default build/); KVTIER_DATA_DIR the data directory
# (default ./data).
set -euo pipefail
cd "$(dirname "$0")/.."

once=${KVTIER_RUN_DEMO_ONLY:-0}
demo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --once) once=1; shift ;;
    --) shift; demo_args=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

BUILD_DIR=${KVTIER_BUILD_DIR:-build}
DATA_DIR=${KVTIER_DATA_DIR:-./data}
scripts/install-deps.sh
KVTIER_BUILD_DIR=$BUILD_DIR KVTIER_TARGETS="kvtierd kvtier_demo" scripts/build.sh
KVTIERD=$BUILD_DIR/service/kvtierd
DEMO=$BUILD_DIR/service/kvtier_demo

mkdir -p "$DATA_DIR"
SOCK=$DATA_DIR/kvtierd.sock
if [ -S "$SOCK" ] && "$DEMO" --target "unix:$SOCK" --wait 1 --health-only >/dev/null 2>&1; then
  echo "run.sh: a kvtierd already serves unix:$SOCK; stop it first (or set KVTIER_DATA_DIR)" >&2
  exit 1
fi

LOG=$DATA_DIR/kvtierd.log
echo "run.sh: starting kvtierd (log: $LOG)"
"$KVTIERD" --service.data_dir="$DATA_DIR" --server.unix_socket="$SOCK" >>"$LOG" 2>&1 &
DAEMON=$!
stop_daemon() {
  if kill -0 "$DAEMON" 2>/dev/null; then
    kill -TERM "$DAEMON"
    wait "$DAEMON" || true
    echo "run.sh: kvtierd stopped"
  fi
}
trap stop_daemon EXIT
trap 'exit 130' INT TERM

if ! "$DEMO" --target "unix:$SOCK" --metrics-url http://127.0.0.1:7471/metrics \
    "${demo_args[@]}"; then
  echo "run.sh: the demo failed; last daemon log lines:" >&2
  tail -20 "$LOG" >&2
  exit 1
fi

if [ "$once" = "1" ]; then
  exit 0
fi
echo
echo "kvtierd keeps running: gRPC unix:$SOCK and 127.0.0.1:7470, metrics http://127.0.0.1:7471/metrics"
echo "Press Ctrl-C to stop it (graceful drain)."
wait "$DAEMON"
