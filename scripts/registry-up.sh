#!/usr/bin/env bash
# Start a Confluent-compatible schema registry (Apicurio Registry, in-memory storage) for
# development and tests, from Maven Central; no Docker needed.
#
#   scripts/registry-up.sh
#
# Needs Java 21+ (Apicurio 3.x is compiled for 21; when the default java is older, the newest
# JDK 21+ under /usr/lib/jvm is used) and, the first time only, mvn. Idempotent: when the
# registry is already up it just prints the address. The last line of stdout is the base URL
# of the Confluent-compatible API, e.g. http://127.0.0.1:8081/apis/ccompat/v7 (give it to
# confluent_kafka's SchemaRegistryClient as 'url'); progress messages go to stderr.
#
# Storage is an in-memory H2 database: every start is empty, and schema ids start at 1.
# Listens on 127.0.0.1 only; no authentication; no UI; OpenTelemetry export off.
#
# Environment:
#   REGISTRY_PORT             HTTP port of the APIs                        [8081]
#   REGISTRY_MANAGEMENT_PORT  Quarkus management port (/q/health, /q/metrics) on
#                             127.0.0.1; 0 picks a free one                [0]
#   REGISTRY_HOME_DIR         logs, work files and pid; relative paths are taken from
#                             the repository root                          [.registry]
#   REGISTRY_HEAP_OPTS        JVM heap flags                               [-Xms64m -Xmx384m]
#   REGISTRY_START_TIMEOUT    seconds to wait for GET /apis/ccompat/v7/subjects -> 200 [120]
#   REGISTRY_COMPATIBILITY    global compatibility level, NONE, BACKWARD, FULL_TRANSITIVE, ...
#                             (Confluent's default; Apicurio's own is NONE)  [BACKWARD]
#   MVN, JAVA                 override the mvn / java executables (JAVA must be 21+)
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
REG_SRC="$REPO_ROOT/registry"
APP_DIR="$REG_SRC/target/quarkus-app"
APP_JAR="$APP_DIR/quarkus-run.jar"
APP_STAMP="$REG_SRC/target/.pom.cksum"
CDS_DIR="$REG_SRC/target/cds"
MIN_JAVA=21

PORT="${REGISTRY_PORT:-8081}"
MGMT_PORT="${REGISTRY_MANAGEMENT_PORT:-0}"
HOST=127.0.0.1
BASE_URL="http://$HOST:$PORT"
API_URL="$BASE_URL/apis/ccompat/v7"
HOME_DIR="${REGISTRY_HOME_DIR:-.registry}"
[[ "$HOME_DIR" == /* ]] || HOME_DIR="$REPO_ROOT/$HOME_DIR"
HEAP_OPTS="${REGISTRY_HEAP_OPTS:--Xms64m -Xmx384m}"
START_TIMEOUT="${REGISTRY_START_TIMEOUT:-120}"
COMPATIBILITY="${REGISTRY_COMPATIBILITY:-BACKWARD}"
MVN="${MVN:-mvn}"

PID_FILE="$HOME_DIR/registry.pid"
LOG_DIR="$HOME_DIR/logs"
STDOUT_LOG="$LOG_DIR/registry.out"
WORK_DIR="$HOME_DIR/work"

say() { echo "registry-up: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

[[ "$PORT" =~ ^[1-9][0-9]{0,4}$ ]] && ((PORT <= 65535)) || die "invalid REGISTRY_PORT: $PORT"
[[ "$MGMT_PORT" =~ ^(0|[1-9][0-9]{0,4})$ ]] && ((MGMT_PORT <= 65535)) || die "invalid REGISTRY_MANAGEMENT_PORT: $MGMT_PORT"
[[ "$PORT" != "$MGMT_PORT" ]] || die "REGISTRY_PORT and REGISTRY_MANAGEMENT_PORT must differ"
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "invalid REGISTRY_START_TIMEOUT: $START_TIMEOUT"
[[ "$COMPATIBILITY" =~ ^(NONE|BACKWARD|BACKWARD_TRANSITIVE|FORWARD|FORWARD_TRANSITIVE|FULL|FULL_TRANSITIVE)$ ]] \
  || die "invalid REGISTRY_COMPATIBILITY: $COMPATIBILITY"
command -v curl >/dev/null 2>&1 || die "curl not found"

# --- helpers ---------------------------------------------------------------------------

# Feature version of the java executable $1 (17, 21, 25, ...), or nothing.
java_major() {
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.* version "\([0-9][0-9.]*\).*/\1/p' | head -n 1)" || return 0
  v="${v#1.}"         # 1.8 -> 8
  echo "${v%%.*}"
}

# A java executable of version MIN_JAVA or later: $JAVA, $JAVA_HOME, the one on PATH, else
# the newest under /usr/lib/jvm.
find_java() {
  local j m best="" best_m=0
  if [[ -n "${JAVA:-}" ]]; then
    command -v "$JAVA" >/dev/null 2>&1 || die "JAVA=$JAVA not found"
    m="$(java_major "$JAVA")"
    ((${m:-0} >= MIN_JAVA)) || die "JAVA=$JAVA is Java ${m:-?}; Apicurio Registry 3 needs $MIN_JAVA+"
    echo "$JAVA"; return
  fi
  for j in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java 2>/dev/null || true)"; do
    [[ -n "$j" && -x "$j" ]] || continue
    m="$(java_major "$j")"
    if ((${m:-0} >= MIN_JAVA)); then echo "$j"; return; fi
  done
  for j in /usr/lib/jvm/*/bin/java; do
    [[ -x "$j" ]] || continue
    m="$(java_major "$j")"
    if ((${m:-0} >= MIN_JAVA && ${m:-0} > best_m)); then best="$j"; best_m="$m"; fi
  done
  [[ -n "$best" ]] || die "no Java $MIN_JAVA+ found (set JAVA or JAVA_HOME; Apicurio Registry 3 needs $MIN_JAVA+)"
  echo "$best"
}

# HTTP status of GET $1 (000 when nothing answers).
http_status() {
  curl -s -o /dev/null -m 3 -w '%{http_code}' "$1" 2>/dev/null || true
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  # shellcheck disable=SC2016 # $0/$1 expand in the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# Pid of our registry if the pid file names a live JVM running our quarkus-run.jar, else empty.
our_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 0
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$APP_JAR" || return 0
  else
    ps -p "$pid" -o args= 2>/dev/null | grep -qF "$APP_JAR" || return 0
  fi
  echo "$pid"
}

log_tail() {
  if [[ -s "$STDOUT_LOG" ]]; then
    echo "----- tail of $STDOUT_LOG -----" >&2
    tail -n 40 "$STDOUT_LOG" >&2
  fi
}

# Wait until the registry with pid $1 answers GET /subjects with 200; then print the URL.
wait_ready() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  while [[ "$(http_status "$API_URL/subjects")" != 200 ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log_tail
      rm -f "$PID_FILE"
      die "registry (pid $pid) exited during startup; logs in $LOG_DIR"
    fi
    if ((SECONDS >= deadline)); then
      log_tail
      die "registry (pid $pid) not ready after ${START_TIMEOUT}s; it is still running (scripts/registry-down.sh stops it)"
    fi
    sleep 0.25
  done
  say "registry ready (pid $pid, logs in $LOG_DIR)"
  echo "$API_URL"
}

# --- 1. application (unpacked once; again only if registry/pom.xml changes) ----------------
pom_sum="$(cksum <"$REG_SRC/pom.xml")"
if [[ ! -f "$APP_JAR" || ! -f "$APP_STAMP" || "$(cat "$APP_STAMP")" != "$pom_sum" ]]; then
  command -v "$MVN" >/dev/null 2>&1 || die "registry app missing in $APP_DIR and mvn not found"
  say "fetching Apicurio Registry from Maven Central into $APP_DIR ..."
  rm -rf "$APP_DIR" "$APP_STAMP" "$CDS_DIR"
  "$MVN" -B -q -f "$REG_SRC/pom.xml" package >&2 || die "mvn -f registry/pom.xml package failed"
  [[ -f "$APP_JAR" ]] || die "no $APP_JAR after mvn package"
  echo "$pom_sum" >"$APP_STAMP"
fi

JAVA_BIN="$(find_java)"
JAVA_MAJOR="$(java_major "$JAVA_BIN")"

mkdir -p "$HOME_DIR" "$LOG_DIR" "$WORK_DIR" "$CDS_DIR"

# Serialise concurrent runs (e.g. parallel test workers) on the same home dir.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$HOME_DIR/.up.lock"
  flock -w $((START_TIMEOUT + 30)) 9 || die "timed out waiting for another registry-up"
fi

# --- 2. already running? -------------------------------------------------------------------
pid="$(our_pid)"
if [[ -n "$pid" ]]; then
  if [[ "$(http_status "$API_URL/subjects")" == 200 ]]; then
    say "already running (pid $pid)"
    echo "$API_URL"
    exit 0
  fi
  say "already starting (pid $pid); waiting"
  wait_ready "$pid"
  exit 0
fi
rm -f "$PID_FILE"

if port_open "$PORT"; then
  if [[ "$(http_status "$API_URL/subjects")" == 200 ]]; then
    say "a schema registry not started from $HOME_DIR already answers on $API_URL; using it"
    echo "$API_URL"
    exit 0
  fi
  die "port $PORT is in use by something that is not a Confluent-compatible schema registry"
fi
if [[ "$MGMT_PORT" != 0 ]] && port_open "$MGMT_PORT"; then
  die "management port $MGMT_PORT is in use (set REGISTRY_MANAGEMENT_PORT, or 0 for any free port)"
fi

# Keep the previous run's log aside.
if [[ -f "$STDOUT_LOG" ]]; then mv -f "$STDOUT_LOG" "$STDOUT_LOG.prev"; fi

# --- 3. start ------------------------------------------------------------------------------
# System properties (ordinal 400) override the application.properties inside the app.
#  - HTTP and management interface on loopback only.
#  - Global compatibility rule: Confluent's default, BACKWARD (Apicurio's own is NONE).
#  - Storage: SQL on in-memory H2 (the built-in default, made explicit); a small pool.
#  - Auth: off (apicurio.authn.enabled, OIDC tenant, basic client credentials, RBAC).
#  - Nothing leaves the machine: OpenTelemetry SDK off (no OTLP export to localhost:4317),
#    no Kafka event sink, no Elasticsearch indexing; Apicurio's (local, in-database) schema
#    usage telemetry off as well.
#  - Quieter console: no per-request access log.
app_opts=(
  -Dquarkus.http.host="$HOST"
  -Dquarkus.http.port="$PORT"
  -Dquarkus.management.host="$HOST"
  -Dquarkus.management.port="$MGMT_PORT"
  -Dapicurio.rules.global.compatibility="$COMPATIBILITY"
  -Dapicurio.storage.kind=sql
  -Dapicurio.storage.sql.kind=h2
  -Dapicurio.datasource.jdbc.initial-size=2
  -Dapicurio.datasource.jdbc.min-size=2
  -Dapicurio.datasource.jdbc.max-size=20
  -Dapicurio.storage.snapshot.location="$WORK_DIR"
  -Dapicurio.import.work-dir="$WORK_DIR"
  -Dapicurio.authn.enabled=false
  -Dapicurio.authn.basic-client-credentials.enabled=false
  -Dapicurio.auth.role-based-authorization=false
  -Dquarkus.oidc.tenant-enabled=false
  -Dquarkus.otel.sdk.disabled=true
  -Dapicurio.events.kafka.config.bootstrap.servers=
  -Dapicurio.search.index.enabled=false
  -Dapicurio.usage.telemetry.enabled=false
  -Dquarkus.http.access-log.enabled=false
  -Djava.io.tmpdir="$WORK_DIR"
)
# JVM: small and quick to start. C1 only (TieredStopAtLevel=1) and the serial GC start
# fastest here and keep RSS near 200 MB; a dynamic CDS archive, written when the first run
# exits and checked (and rewritten if stale) by every later run, takes roughly another
# second off the start.
jvm_opts=(
  -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k -XX:ReservedCodeCacheSize=64m
  -XX:+AutoCreateSharedArchive -XX:SharedArchiveFile="$CDS_DIR/registry-java$JAVA_MAJOR.jsa"
  -Xlog:cds=off -Xlog:cds+dynamic=off
  -Djava.awt.headless=true
)
# A new session (setsid) keeps the registry out of the caller's process group and stdio;
# fd 9 (the lock) is closed for it so the lock is released when this script exits.
detach=()
command -v setsid >/dev/null 2>&1 && detach=(setsid)
# shellcheck disable=SC2086 # HEAP_OPTS is a list of flags
nohup ${detach[@]+"${detach[@]}"} "$JAVA_BIN" $HEAP_OPTS "${jvm_opts[@]}" "${app_opts[@]}" \
  -jar "$APP_JAR" \
  </dev/null >"$STDOUT_LOG" 2>&1 9>&- &
pid=$!
echo "$pid" >"$PID_FILE"
say "starting registry (pid $pid, Java $JAVA_MAJOR: $JAVA_BIN) on $BASE_URL"
wait_ready "$pid"
