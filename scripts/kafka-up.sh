#!/usr/bin/env bash
# Start a single-node Apache Kafka broker (KRaft: broker + controller in one JVM) for
# development and tests, from Maven Central jars; no Docker needed.
#
#   scripts/kafka-up.sh            # or: make kafka-up
#
# Needs java (17+) and, the first time only, mvn. Idempotent: when the broker is already
# up it just prints the address. The last line of stdout is the bootstrap address,
# e.g. 127.0.0.1:9092; progress messages go to stderr.
#
# Environment:
#   KAFKA_PORT             client (PLAINTEXT) port                 [9092]
#   KAFKA_CONTROLLER_PORT  KRaft controller port                   [KAFKA_PORT+1]
#   KAFKA_HOME_DIR         data, config, logs and pid; relative paths are taken from
#                          the repository root                     [.kafka]
#   KAFKA_HEAP_OPTS        JVM heap flags                          [-Xms256m -Xmx512m]
#   KAFKA_START_TIMEOUT    seconds to wait for "Kafka Server started" [90]
#   MVN, JAVA              override the mvn / java executables
#
# Secured listeners, besides PLAINTEXT (both need a broker keystore):
#   KAFKA_SASL_SSL_PORT    SASL_SSL listener (SCRAM-SHA-512 and PLAIN)
#   KAFKA_MTLS_PORT        SSL listener that requires a client certificate (mutual TLS)
#   KAFKA_BROKER_KEYSTORE  PKCS12 file with the broker's key and certificate chain
#   KAFKA_BROKER_KEYSTORE_PASSWORD  its password
#   KAFKA_BROKER_CLIENT_CA PEM file of the CA that signs client certificates [KAFKA_MTLS_PORT]
#   KAFKA_BROKER_USERS     "name:password[,name:password]": SCRAM-SHA-512 users added when the data
#                          dir is formatted, and PLAIN users of the SASL_SSL listener
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
KAFKA_SRC="$REPO_ROOT/kafka"
JARS_DIR="$KAFKA_SRC/jars"
JARS_STAMP="$JARS_DIR/.pom.cksum"

PORT="${KAFKA_PORT:-9092}"
[[ "$PORT" =~ ^[1-9][0-9]{0,4}$ ]] || { echo "kafka-up: ERROR: invalid KAFKA_PORT: $PORT" >&2; exit 1; }
CPORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
HOST=127.0.0.1
BOOTSTRAP="$HOST:$PORT"
HOME_DIR="${KAFKA_HOME_DIR:-.kafka}"
[[ "$HOME_DIR" == /* ]] || HOME_DIR="$REPO_ROOT/$HOME_DIR"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-}"
MTLS_PORT="${KAFKA_MTLS_PORT:-}"
KEYSTORE="${KAFKA_BROKER_KEYSTORE:-}"
KEYSTORE_PASSWORD="${KAFKA_BROKER_KEYSTORE_PASSWORD:-}"
CLIENT_CA="${KAFKA_BROKER_CLIENT_CA:-}"
USERS="${KAFKA_BROKER_USERS:-}"
MVN="${MVN:-mvn}"
if [[ -n "${JAVA:-}" ]]; then :
elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"
else JAVA=java
fi

PID_FILE="$HOME_DIR/kafka.pid"
CONF_FILE="$HOME_DIR/server.properties"
LOG_DIR="$HOME_DIR/logs"
SERVER_LOG="$LOG_DIR/server.log"
STDOUT_LOG="$LOG_DIR/broker.out"
DATA_DIR="$HOME_DIR/data"
CLUSTER_ID_FILE="$HOME_DIR/cluster.id"

say() { echo "kafka-up: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

for p in "$PORT" "$CPORT" $SASL_SSL_PORT $MTLS_PORT; do
  if ! [[ "$p" =~ ^[1-9][0-9]{0,4}$ ]] || ((p > 65535)); then die "invalid port: $p"; fi
done
[[ "$PORT" != "$CPORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"
command -v "$JAVA" >/dev/null 2>&1 || die "java not found (install a JDK 17+ or set JAVA_HOME)"
if [[ -n "$SASL_SSL_PORT$MTLS_PORT" ]]; then
  [[ -r "$KEYSTORE" ]] || die "KAFKA_SASL_SSL_PORT and KAFKA_MTLS_PORT need KAFKA_BROKER_KEYSTORE (a readable PKCS12 file)"
  [[ -n "$KEYSTORE_PASSWORD" ]] || die "KAFKA_BROKER_KEYSTORE needs KAFKA_BROKER_KEYSTORE_PASSWORD"
fi
[[ -z "$SASL_SSL_PORT" || -n "$USERS" ]] || die "KAFKA_SASL_SSL_PORT needs KAFKA_BROKER_USERS (name:password)"
[[ -z "$MTLS_PORT" || -r "$CLIENT_CA" ]] || die "KAFKA_MTLS_PORT needs KAFKA_BROKER_CLIENT_CA (a readable PEM file)"

# --- helpers ---------------------------------------------------------------------------

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  # shellcheck disable=SC2016 # $0/$1 expand in the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# True if a Kafka broker answers on 127.0.0.1:$1: send an ApiVersions v0 request
# (api_key 18, correlation id 1, null client id) and check the response's correlation id.
kafka_answers() {
  local reply
  # shellcheck disable=SC2016 # $0/$1 expand in the inner bash
  reply="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x01\xff\xff" >&3
    head -c 8 <&3 | od -An -tx1' "$HOST" "$1" 2>/dev/null)" || return 1
  reply="${reply//[[:space:]]/}"
  [[ "$reply" == ????????00000001 ]] # 4-byte size, then correlation id 1
}

# Pid of our broker if the pid file names a live kafka.Kafka process, else empty.
our_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 0
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 0
  else
    ps -p "$pid" -o args= 2>/dev/null | grep -q 'kafka\.Kafka' || return 0
  fi
  echo "$pid"
}

log_tail() {
  local f
  for f in "$STDOUT_LOG" "$SERVER_LOG"; do
    [[ -s "$f" ]] || continue
    echo "----- tail of $f -----" >&2
    tail -n 40 "$f" >&2
  done
}

# Wait until the broker with pid $1 logs "Kafka Server started"; then print the address.
wait_ready() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  while ! grep -q 'Kafka Server started' "$SERVER_LOG" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log_tail
      rm -f "$PID_FILE"
      die "broker (pid $pid) exited during startup; logs in $LOG_DIR"
    fi
    if ((SECONDS >= deadline)); then
      log_tail
      die "broker (pid $pid) not ready after ${START_TIMEOUT}s; it is still running (scripts/kafka-down.sh stops it)"
    fi
    sleep 0.5
  done
  say "broker ready (pid $pid, data in $HOME_DIR)"
  echo "$BOOTSTRAP"
}

# --- 1. jars (fetched once; refetched only if kafka/pom.xml changes) -----------------------
pom_sum="$(cksum <"$KAFKA_SRC/pom.xml")"
if [[ ! -f "$JARS_STAMP" || "$(cat "$JARS_STAMP")" != "$pom_sum" ]]; then
  command -v "$MVN" >/dev/null 2>&1 || die "jars missing in $JARS_DIR and mvn not found"
  say "fetching broker jars from Maven Central into $JARS_DIR ..."
  rm -rf "$JARS_DIR"
  "$MVN" -B -q -f "$KAFKA_SRC/pom.xml" dependency:copy-dependencies >&2 \
    || die "mvn dependency:copy-dependencies failed"
  compgen -G "$JARS_DIR/kafka_2.13-*.jar" >/dev/null || die "no kafka_2.13 jar in $JARS_DIR after fetch"
  echo "$pom_sum" >"$JARS_STAMP"
fi

mkdir -p "$HOME_DIR" "$LOG_DIR" "$DATA_DIR"

# Serialise concurrent runs (e.g. parallel test workers) on the same data dir.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$HOME_DIR/.up.lock"
  flock -w $((START_TIMEOUT + 30)) 9 || die "timed out waiting for another kafka-up"
fi

# --- 2. already running? -------------------------------------------------------------------
pid="$(our_pid)"
if [[ -n "$pid" ]]; then
  if grep -q 'Kafka Server started' "$SERVER_LOG" 2>/dev/null; then
    say "already running (pid $pid)"
    echo "$BOOTSTRAP"
    exit 0
  fi
  say "already starting (pid $pid); waiting"
  wait_ready "$pid"
  exit 0
fi
rm -f "$PID_FILE"

if port_open "$PORT"; then
  if kafka_answers "$PORT"; then
    say "a Kafka broker not started from $HOME_DIR already answers on $BOOTSTRAP; using it"
    echo "$BOOTSTRAP"
    exit 0
  fi
  die "port $PORT is in use by something that is not a Kafka broker"
fi
port_open "$CPORT" && die "controller port $CPORT is in use (set KAFKA_CONTROLLER_PORT)"

# --- 3. config -----------------------------------------------------------------------------
# The controller and the broker's own traffic stay PLAINTEXT on loopback; clients may use the
# secured listeners.
listeners="PLAINTEXT://$HOST:$PORT"
protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
[[ -z "$SASL_SSL_PORT" ]] || { listeners+=",SASL_SSL://$HOST:$SASL_SSL_PORT"; protocols+=",SASL_SSL:SASL_SSL"; }
[[ -z "$MTLS_PORT" ]] || { listeners+=",MTLS://$HOST:$MTLS_PORT"; protocols+=",MTLS:SSL"; }
cat >"$CONF_FILE" <<EOF
# Written by scripts/kafka-up.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CPORT
listeners=$listeners,CONTROLLER://$HOST:$CPORT
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$DATA_DIR

# single node: every replication factor / ISR is 1
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
auto.create.topics.enable=true
delete.topic.enable=true

# fast and small for tests
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.segment.bytes=16777216
# Keep records whatever their age: replayed captures carry old timestamps, and time-based
# retention would delete them minutes after they are produced.
log.retention.ms=-1
log.retention.check.interval.ms=60000
log.cleaner.dedupe.buffer.size=16777216
EOF
if [[ -n "$SASL_SSL_PORT$MTLS_PORT" ]]; then
  cat >>"$CONF_FILE" <<EOF

ssl.keystore.type=PKCS12
ssl.keystore.location=$KEYSTORE
ssl.keystore.password=$KEYSTORE_PASSWORD
EOF
fi
if [[ -n "$SASL_SSL_PORT" ]]; then
  plain_users=""
  IFS=',' read -ra pairs <<<"$USERS"
  for pair in "${pairs[@]}"; do plain_users+=" user_${pair%%:*}=\"${pair#*:}\""; done
  cat >>"$CONF_FILE" <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain_users;
EOF
fi
if [[ -n "$MTLS_PORT" ]]; then
  cat >>"$CONF_FILE" <<EOF
listener.name.mtls.ssl.client.auth=required
listener.name.mtls.ssl.truststore.type=PEM
listener.name.mtls.ssl.truststore.location=$CLIENT_CA
EOF
fi

# Keep the previous run's logs aside so readiness is judged on this run's log only.
for f in "$SERVER_LOG" "$STDOUT_LOG"; do
  if [[ -f "$f" ]]; then mv -f "$f" "$f.prev"; fi
done
rm -f "$SERVER_LOG".[0-9]*

# --- 4. format storage once per data dir -------------------------------------------------------
if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
  if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
    # 16 random bytes as unpadded base64url = a 22-character Kafka Uuid. Reject a leading
    # '-' (the CLI would read it as an option), like Kafka's own Uuid.randomUuid() does.
    cid="-"
    while [[ "$cid" == -* ]]; do
      cid="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
    echo "$cid" >"$CLUSTER_ID_FILE"
  fi
  cid="$(cat "$CLUSTER_ID_FILE")"
  say "formatting $DATA_DIR (cluster id $cid)"
  scram=()  # SCRAM credentials live in the KRaft metadata, so they are added at format time
  if [[ -n "$SASL_SSL_PORT" ]]; then
    IFS=',' read -ra pairs <<<"$USERS"
    for pair in "${pairs[@]}"; do scram+=(--add-scram "SCRAM-SHA-512=[name=${pair%%:*},password=${pair#*:}]"); done
  fi
  "$JAVA" -Xmx256m -cp "$JARS_DIR/*" \
    -Dlog4j.configuration="file:$KAFKA_SRC/log4j.properties" -Dkafka.logs.dir="$LOG_DIR" \
    kafka.tools.StorageTool format -t "$cid" -c "$CONF_FILE" --ignore-formatted ${scram[@]+"${scram[@]}"} >&2 \
    || die "kafka.tools.StorageTool format failed"
fi

# --- 5. start ------------------------------------------------------------------------------
# A new session (setsid) keeps the broker out of the caller's process group and stdio;
# fd 9 (the lock) is closed for it so the lock is released when this script exits.
detach=()
command -v setsid >/dev/null 2>&1 && detach=(setsid)
# shellcheck disable=SC2086 # HEAP_OPTS is a list of flags
nohup ${detach[@]+"${detach[@]}"} "$JAVA" $HEAP_OPTS \
  -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
  -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
  -Dlog4j.configuration="file:$KAFKA_SRC/log4j.properties" -Dkafka.logs.dir="$LOG_DIR" \
  -cp "$JARS_DIR/*" kafka.Kafka "$CONF_FILE" \
  </dev/null >"$STDOUT_LOG" 2>&1 9>&- &
pid=$!
echo "$pid" >"$PID_FILE"
say "starting broker (pid $pid) on $BOOTSTRAP, controller on $HOST:$CPORT"
wait_ready "$pid"
