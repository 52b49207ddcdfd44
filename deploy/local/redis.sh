#!/usr/bin/env bash
# Local Redis server on loopback, from Debian's redis-server package.
#
#   deploy/local/redis.sh start    install redis-server if missing, start, wait for PONG
#   deploy/local/redis.sh stop     stop the server we started, by its PID
#   deploy/local/redis.sh status
#   deploy/local/redis.sh install  install redis-server if missing (redis_cluster.sh uses it)
#
# Environment: REDIS_PORT (6379), HPMF_RUN (./.run: pid, log).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
REDIS_PORT=${REDIS_PORT:-6379}
RUN=${HPMF_RUN:-$ROOT/.run}
PIDFILE="$RUN/redis.pid"
LOG="$RUN/redis.log"

say() { echo "[redis] $*"; }
die() { echo "[redis] error: $*" >&2; exit 1; }

install() {
    command -v redis-server >/dev/null && return 0
    say "redis-server not found; installing Debian's redis-server package"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    command -v apt-get >/dev/null || die "apt-get not found: install a Redis server (>= 6) by hand and put redis-server on PATH."
    # RUNLEVEL=1 keeps the package's init script from starting a system-wide
    # server on port 6379: the project starts and stops its own.
    if ! (export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
          $sudo apt-get install -y -q --no-install-recommends redis-server > "$RUN/redis-apt.log" 2>&1 \
          || { $sudo apt-get update -q > /dev/null 2>&1 && $sudo apt-get install -y -q --no-install-recommends redis-server >> "$RUN/redis-apt.log" 2>&1; }); then
        tail -5 "$RUN/redis-apt.log" >&2
        die "could not install redis-server with apt-get (log: $RUN/redis-apt.log)"
    fi
}

running_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null && grep -q "redis-server" "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$pid"; return 0
    fi
    rm -f "$PIDFILE"; return 1
}

start() {
    if pid=$(running_pid); then say "already running (pid $pid) on 127.0.0.1:$REDIS_PORT"; return 0; fi
    mkdir -p "$RUN"
    install
    if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then
        die "port 127.0.0.1:$REDIS_PORT is already in use by another process. Stop it, or choose another port: REDIS_PORT=16379 make up"
    fi
    local t0
    t0=$(date +%s.%N)
    # No persistence: Redis holds derived state (posteriors) that the stream
    # can rebuild; an in-memory server keeps the benchmarks honest.
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
        --pidfile "$PIDFILE" --logfile "$LOG" --dir "$RUN" \
        --save "" --appendonly no --protected-mode yes
    for _ in $(seq 1 100); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ] && pid=$(running_pid); then
            say "started (pid $pid) on 127.0.0.1:$REDIS_PORT in $(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s; log $LOG"
            return 0
        fi
        sleep 0.1
    done
    tail -5 "$LOG" >&2 || true
    die "redis-server did not answer PING within 10 s (log: $LOG)"
}

stop() {
    local pid
    if ! pid=$(running_pid); then say "not running"; return 0; fi
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; say "stopped (pid $pid)"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    say "killed (pid $pid)"
}

status() {
    if pid=$(running_pid); then say "running (pid $pid) on 127.0.0.1:$REDIS_PORT"; else say "not running"; return 3; fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    install) mkdir -p "$RUN"; install ;;
    *) echo "usage: $0 start|stop|status|install" >&2; exit 2 ;;
esac
