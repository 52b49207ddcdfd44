#!/usr/bin/env bash
# Run a command with the local Kafka broker and Redis server up, then stop
# whichever of them this script started (ones already running, e.g. from
# `make up`, are left running). Exit status is the command's.
#
#   deploy/local/with_services.sh COMMAND [ARGS...]
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
started=()
cleanup() {
    for svc in "${started[@]:-}"; do
        [ -n "$svc" ] && bash "$HERE/$svc.sh" stop
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for svc in redis redis_cluster kafka; do
    if ! bash "$HERE/$svc.sh" status > /dev/null 2>&1; then
        bash "$HERE/$svc.sh" start || exit 1
        started+=("$svc")
    fi
done
"$@"
