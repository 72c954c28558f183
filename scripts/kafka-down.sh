#!/usr/bin/env bash
# Stop the development broker started by scripts/kafka-up.sh (make kafka-down).
#
#   scripts/kafka-down.sh           # stop; keep topics and offsets
#   scripts/kafka-down.sh --wipe    # stop and delete the data dir (or KAFKA_WIPE=1)
#
# SIGTERM (clean shutdown), then SIGKILL after KAFKA_STOP_TIMEOUT seconds [30].
# Succeeds when no broker is running. Uses KAFKA_HOME_DIR like kafka-up.sh [.kafka].
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
HOME_DIR="${KAFKA_HOME_DIR:-.kafka}"
[[ "$HOME_DIR" == /* ]] || HOME_DIR="$REPO_ROOT/$HOME_DIR"
PID_FILE="$HOME_DIR/kafka.pid"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
WIPE="${KAFKA_WIPE:-0}"

say() { echo "kafka-down: $*" >&2; }

for arg in "$@"; do
  case "$arg" in
    --wipe) WIPE=1 ;;
    -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
    *) say "unknown argument: $arg"; exit 2 ;;
  esac
done

is_our_broker() {
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r "/proc/$1/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$1/cmdline" | grep -q 'kafka\.Kafka'
  else
    ps -p "$1" -o args= 2>/dev/null | grep -q 'kafka\.Kafka'
  fi
}

pid=""
[[ -f "$PID_FILE" ]] && pid="$(tr -dc '0-9' <"$PID_FILE")"

if [[ -n "$pid" ]] && is_our_broker "$pid"; then
  say "stopping broker (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "still running after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
  fi
  say "stopped"
else
  say "no broker running${pid:+ (stale pid file: $pid)}"
fi
rm -f "$PID_FILE"

if [[ "$WIPE" == 1 ]]; then
  if [[ -d "$HOME_DIR" ]]; then
    say "removing $HOME_DIR"
    rm -rf -- "$HOME_DIR"
  fi
fi
