#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker+controller) on loopback.
#
#   deploy/local/kafka.sh fetch    download the broker jars with Maven (cached)
#   deploy/local/kafka.sh start    format storage if needed, start, wait until ready
#   deploy/local/kafka.sh stop     stop the broker we started, by its PID
#   deploy/local/kafka.sh status   say whether it runs
#
# Environment: KAFKA_VERSION (4.1.1), KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093),
# HPMF_CACHE (~/.cache/hpmf: jars), HPMF_RUN (./.run: pid, log), KAFKA_DATA (tmp dir),
# KAFKA_MVN_OPTS (extra Maven flags, e.g. a settings file: "-s my-settings.xml"),
# KAFKA_EXTRA_PROPERTIES (broker properties appended, one a line; tests use it for an authorizer).
#
# SASL (off by default): KAFKA_SASL_MECHANISM=PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
# adds a SASL_PLAINTEXT listener on 127.0.0.1:KAFKA_SASL_PORT (KAFKA_PORT + 2)
# beside the plain one, with one user KAFKA_SASL_USER / KAFKA_SASL_PASSWORD
# (hpmf / hpmf-secret). SCRAM users are written when the storage is formatted,
# so use a fresh KAFKA_DATA for a SCRAM broker. Clients: HPMF_KAFKA_SECURITY_PROTOCOL=
# SASL_PLAINTEXT HPMF_KAFKA_SASL_MECHANISM=... HPMF_KAFKA_SASL_USERNAME=... and
# the password (docs/operations.md, "Secured connections").
# With KAFKA_TLS_KEYSTORE_PEM (one PEM file: the server's unencrypted PKCS#8
# key and its certificate chain) a SASL_SSL listener on KAFKA_SASL_SSL_PORT
# (KAFKA_PORT + 3) is added too, same mechanism and user.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
SLF4J_VERSION=${SLF4J_VERSION:-1.7.36}  # must match the slf4j-api that kafka_2.13 brings
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
CACHE=${HPMF_CACHE:-$HOME/.cache/hpmf}
RUN=${HPMF_RUN:-$ROOT/.run}
JARS="$CACHE/kafka-$KAFKA_VERSION/libs"
DATA=${KAFKA_DATA:-${TMPDIR:-/tmp}/hpmf-kafka-$KAFKA_PORT}
SASL_MECHANISM=${KAFKA_SASL_MECHANISM:-}
SASL_PORT=${KAFKA_SASL_PORT:-$((KAFKA_PORT + 2))}
SASL_USER=${KAFKA_SASL_USER:-hpmf}
SASL_PASSWORD=${KAFKA_SASL_PASSWORD:-hpmf-secret}
TLS_KEYSTORE=${KAFKA_TLS_KEYSTORE_PEM:-}
SASL_SSL_PORT=${KAFKA_SASL_SSL_PORT:-$((KAFKA_PORT + 3))}
PIDFILE="$RUN/kafka.pid"
LOG="$RUN/kafka.log"

say() { echo "[kafka] $*"; }
die() { echo "[kafka] error: $*" >&2; exit 1; }

need_java() {
    command -v java >/dev/null || die "Java not found. Install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless) and retry."
    local v
    v=$(java -version 2>&1 | awk -F'"' '/version/ {print $2}' | cut -d. -f1)
    [ "${v:-0}" -ge 17 ] 2>/dev/null || die "Kafka $KAFKA_VERSION needs Java 17 or newer; 'java -version' says ${v:-unknown}. Point PATH or JAVA_HOME at a Java 17+ install."
}

fetch() {
    [ -f "$JARS/.complete" ] && return 0
    command -v mvn >/dev/null || die "Maven (mvn) not found; it fetches the Kafka jars. Install it (Debian: apt-get install maven) and retry."
    need_java
    say "fetching Apache Kafka $KAFKA_VERSION jars with Maven into $JARS (first run only, ~1 min)"
    local work="$CACHE/kafka-$KAFKA_VERSION"
    mkdir -p "$work"
    cat > "$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.hpmf</groupId><artifactId>kafka-broker-libs</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>$SLF4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
    rm -rf "$JARS"
    # shellcheck disable=SC2086  # KAFKA_MVN_OPTS is a list of extra Maven flags
    if ! (cd "$work" && mvn -B -q ${KAFKA_MVN_OPTS:-} dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=libs > "$work/mvn.log" 2>&1); then
        tail -20 "$work/mvn.log" >&2
        die "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (full log: $work/mvn.log). Check that Maven Central is reachable (proxy/mirror in ~/.m2/settings.xml) and retry."
    fi
    ls "$JARS"/kafka_2.13-*.jar >/dev/null 2>&1 || die "Maven finished but no kafka_2.13 jar is in $JARS"
    touch "$JARS/.complete"
    say "fetched $(ls "$JARS" | wc -l) jars"
}

running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null && grep -q "kafka.Kafka" "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$pid"; return 0
    fi
    rm -f "$PIDFILE"; return 1
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

JAVA_OPTS=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
    -Dorg.slf4j.simpleLogger.defaultLogLevel=info
    -Dorg.slf4j.simpleLogger.log.org.apache.kafka=warn
    -Dorg.slf4j.simpleLogger.showDateTime=true
    -cp "$JARS/*")  # the classpath wildcard is quoted: java expands it itself
kjava() { java "${JAVA_OPTS[@]}" "$@"; }

start() {
    if pid=$(running_pid); then say "already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"; return 0; fi
    need_java
    fetch
    local ports=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT")
    [ -n "$SASL_MECHANISM" ] && ports+=("$SASL_PORT")
    [ -n "$SASL_MECHANISM" ] && [ -n "$TLS_KEYSTORE" ] && ports+=("$SASL_SSL_PORT")
    for p in "${ports[@]}"; do
        if port_busy "$p"; then die "port 127.0.0.1:$p is already in use by another process. Stop it, or choose other ports: KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 make up"; fi
    done
    mkdir -p "$RUN" "$DATA"
    local props="$RUN/kafka-server.properties"
    local listeners="PLAINTEXT://127.0.0.1:$KAFKA_PORT" protomap="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    local sasl_props="" format_args=()
    if [ -n "$SASL_MECHANISM" ]; then
        local lname module users=""
        lname=$(echo "$SASL_MECHANISM" | tr '[:upper:]' '[:lower:]')
        case "$SASL_MECHANISM" in
            PLAIN) module=org.apache.kafka.common.security.plain.PlainLoginModule
                   users=" user_$SASL_USER=\"$SASL_PASSWORD\"" ;;
            SCRAM-SHA-256|SCRAM-SHA-512) module=org.apache.kafka.common.security.scram.ScramLoginModule
                   format_args=(--add-scram "$SASL_MECHANISM=[name=$SASL_USER,password=$SASL_PASSWORD]") ;;
            *) die "KAFKA_SASL_MECHANISM must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (got $SASL_MECHANISM)" ;;
        esac
        listeners="$listeners,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT"
        protomap="$protomap,SASL_PLAINTEXT:SASL_PLAINTEXT"
        sasl_props="sasl.enabled.mechanisms=$SASL_MECHANISM
listener.name.sasl_plaintext.$lname.sasl.jaas.config=$module required$users;"
        if [ -n "$TLS_KEYSTORE" ]; then
            [ -r "$TLS_KEYSTORE" ] || die "KAFKA_TLS_KEYSTORE_PEM=$TLS_KEYSTORE is not a readable file"
            listeners="$listeners,SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
            protomap="$protomap,SASL_SSL:SASL_SSL"
            sasl_props="$sasl_props
listener.name.sasl_ssl.$lname.sasl.jaas.config=$module required$users;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$TLS_KEYSTORE"
        fi
    fi
    cat > "$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=$listeners,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protomap
$sasl_props
log.dirs=$DATA
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
PROPS
    # Extra broker properties, one a line (a test's private broker with an authorizer).
    [ -z "${KAFKA_EXTRA_PROPERTIES:-}" ] || printf '%s\n' "$KAFKA_EXTRA_PROPERTIES" >> "$props"
    local t0
    t0=$(date +%s.%N)
    if [ ! -f "$DATA/meta.properties" ]; then
        local cid
        cid=$(kjava kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
        kjava kafka.tools.StorageTool format -t "$cid" -c "$props" "${format_args[@]}" > "$RUN/kafka-format.log" 2>&1 \
            || { cat "$RUN/kafka-format.log" >&2; die "formatting KRaft storage in $DATA failed (log: $RUN/kafka-format.log). Remove $DATA and retry."; }
    fi
    : > "$LOG"
    # setsid: the broker gets its own session so Ctrl-C in a shell that ran
    # `make up` does not take it down with it; `make down` stops it by PID.
    setsid java "${JAVA_OPTS[@]}" kafka.Kafka "$props" >> "$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    local pid=$!
    for _ in $(seq 1 600); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -20 "$LOG" >&2
            rm -f "$PIDFILE"
            die "the broker exited during start-up (log: $LOG). If the log mentions the storage or cluster id, remove $DATA and retry."
        fi
        if grep -q "Kafka Server started" "$LOG" && port_busy "$KAFKA_PORT"; then
            [ -n "$SASL_MECHANISM" ] && say "SASL_PLAINTEXT ($SASL_MECHANISM, user $SASL_USER) on 127.0.0.1:$SASL_PORT"
            [ -n "$SASL_MECHANISM" ] && [ -n "$TLS_KEYSTORE" ] && say "SASL_SSL ($SASL_MECHANISM, user $SASL_USER) on 127.0.0.1:$SASL_SSL_PORT"
            say "started (pid $pid) on 127.0.0.1:$KAFKA_PORT in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s; data $DATA; log $LOG"
            return 0
        fi
        sleep 0.1
    done
    die "the broker did not become ready within 60 s (log: $LOG)"
}

stop() {
    local pid
    if ! pid=$(running_pid); then say "not running"; return 0; fi
    kill -TERM "$pid"
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; say "stopped (pid $pid)"; return 0; }
        sleep 0.1
    done
    say "broker did not stop in 30 s; killing pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
}

status() {
    if pid=$(running_pid); then say "running (pid $pid) on 127.0.0.1:$KAFKA_PORT"; else say "not running"; return 3; fi
}

case "${1:-}" in
    fetch) fetch ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
