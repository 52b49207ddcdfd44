#!/usr/bin/env bash
# Local three-master Redis Cluster on loopback, from Debian's redis-server
# package (the same binary deploy/local/redis.sh uses), for the cluster mode
# of the service (HPMF_REDIS_CLUSTER=true, docs/operations.md).
#
#   deploy/local/redis_cluster.sh start    start three nodes, create the cluster, wait for cluster_state:ok
#   deploy/local/redis_cluster.sh stop     stop the nodes we started, by their PIDs
#   deploy/local/redis_cluster.sh status
#
# Environment: REDIS_CLUSTER_PORT (7000; the nodes use it and the next two
# ports, and each one's cluster bus port + 10000), HPMF_RUN (./.run: pids,
# logs, node configs under redis-cluster/).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BASE=${REDIS_CLUSTER_PORT:-7000}
PORTS=("$BASE" "$((BASE + 1))" "$((BASE + 2))")
RUN=${HPMF_RUN:-$ROOT/.run}
DIR="$RUN/redis-cluster"

say() { echo "[redis-cluster] $*"; }
die() { echo "[redis-cluster] error: $*" >&2; exit 1; }

pidfile() { echo "$DIR/node-$1.pid"; }

node_pid() {  # the PID of the node on port $1 if it is ours and alive
    local f pid
    f=$(pidfile "$1")
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null && grep -q "redis-server" "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$pid"; return 0
    fi
    rm -f "$f"; return 1
}

cluster_ok() {
    redis-cli -h 127.0.0.1 -p "$BASE" cluster info 2>/dev/null | grep -q "^cluster_state:ok"
}

all_running() {
    local p
    for p in "${PORTS[@]}"; do node_pid "$p" > /dev/null || return 1; done
}

start() {
    if all_running && cluster_ok; then say "already running on 127.0.0.1:${PORTS[0]}-${PORTS[2]}"; return 0; fi
    # A half-started cluster (a node died, or create never finished) is
    # stopped and started afresh: the nodes hold no data worth keeping
    # (no persistence, as for the single server).
    stop > /dev/null
    command -v redis-server > /dev/null || bash deploy/local/redis.sh install
    command -v redis-cli > /dev/null || die "redis-cli not found (Debian's redis-tools package)"
    local p
    for p in "${PORTS[@]}"; do
        for q in "$p" "$((p + 10000))"; do
            if (exec 3<>"/dev/tcp/127.0.0.1/$q") 2>/dev/null; then
                die "port 127.0.0.1:$q is already in use by another process. Choose other ports: REDIS_CLUSTER_PORT=17000 (uses it, the next two, and each + 10000)"
            fi
        done
    done
    mkdir -p "$DIR"
    local t0
    t0=$(date +%s.%N)
    for p in "${PORTS[@]}"; do
        rm -f "$DIR/nodes-$p.conf"  # a fresh cluster each start: no data survives a stop anyway
        redis-server --bind 127.0.0.1 --port "$p" --daemonize yes \
            --pidfile "$(pidfile "$p")" --logfile "$DIR/node-$p.log" --dir "$DIR" \
            --cluster-enabled yes --cluster-config-file "nodes-$p.conf" --cluster-node-timeout 5000 \
            --save "" --appendonly no --protected-mode yes
    done
    for p in "${PORTS[@]}"; do
        for _ in $(seq 1 100); do
            [ "$(redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null)" = "PONG" ] && node_pid "$p" > /dev/null && break
            sleep 0.1
        done
        [ "$(redis-cli -h 127.0.0.1 -p "$p" ping 2>/dev/null)" = "PONG" ] || { tail -5 "$DIR/node-$p.log" >&2 || true; die "node 127.0.0.1:$p did not answer PING within 10 s"; }
    done
    local nodes=()
    for p in "${PORTS[@]}"; do nodes+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes > "$DIR/create.log" 2>&1 \
        || { tail -5 "$DIR/create.log" >&2; die "redis-cli --cluster create failed (log: $DIR/create.log)"; }
    for _ in $(seq 1 150); do
        if cluster_ok; then
            say "started 3 masters on 127.0.0.1:${PORTS[0]}-${PORTS[2]} in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s; logs $DIR"
            return 0
        fi
        sleep 0.1
    done
    die "the cluster did not reach cluster_state:ok within 15 s (logs: $DIR)"
}

stop() {
    local p pid any=0
    for p in "${PORTS[@]}"; do
        pid=$(node_pid "$p") || continue
        any=1
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$(pidfile "$p")"
        say "stopped node 127.0.0.1:$p (pid $pid)"
    done
    [ "$any" = 1 ] || say "not running"
}

status() {
    if all_running && cluster_ok; then say "running on 127.0.0.1:${PORTS[0]}-${PORTS[2]} (cluster_state:ok)"; else say "not running"; return 3; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
