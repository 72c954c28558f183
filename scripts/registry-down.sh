#!/usr/bin/env bash
# Stop the schema registry started by scripts/registry-up.sh and delete its home dir
# (pid file, logs, work files). Its storage is in memory, so nothing else is lost.
#
#   scripts/registry-down.sh
#
# SIGTERM (clean shutdown), then SIGKILL after REGISTRY_STOP_TIMEOUT seconds [20].
# Succeeds when no registry is running. Uses REGISTRY_HOME_DIR like registry-up.sh [.registry].
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
APP_JAR="$REPO_ROOT/registry/target/quarkus-app/quarkus-run.jar"
HOME_DIR="${REGISTRY_HOME_DIR:-.registry}"
[[ "$HOME_DIR" == /* ]] || HOME_DIR="$REPO_ROOT/$HOME_DIR"
PID_FILE="$HOME_DIR/registry.pid"
STOP_TIMEOUT="${REGISTRY_STOP_TIMEOUT:-20}"

say() { echo "registry-down: $*" >&2; }

for arg in "$@"; do
  case "$arg" in
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) say "unknown argument: $arg"; exit 2 ;;
  esac
done

is_our_registry() {
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r "/proc/$1/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF "$APP_JAR"
  else
    ps -p "$1" -o args= 2>/dev/null | grep -qF "$APP_JAR"
  fi
}

pid=""
[[ -f "$PID_FILE" ]] && pid="$(tr -dc '0-9' <"$PID_FILE")"

if [[ -n "$pid" ]] && is_our_registry "$pid"; then
  say "stopping registry (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.25
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
  say "no registry running${pid:+ (stale pid file: $pid)}"
fi

if [[ -d "$HOME_DIR" ]]; then
  say "removing $HOME_DIR"
  rm -rf -- "$HOME_DIR"
fi
