#!/usr/bin/env bash
# promtool (Prometheus' rule checker) for tests/test_deploy.py, from Debian's
# prometheus package, installed only if missing. RUNLEVEL=1 keeps the
# package from starting a Prometheus server; nothing is started here.
# Failing to install is not an error: the test then skips its promtool part
# and says why (the parse test of the rules runs either way).
set -uo pipefail
command -v promtool >/dev/null && exit 0
command -v apt-get >/dev/null || { echo "[promtool] apt-get not found; promtool checks will be skipped"; exit 0; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "[promtool] installing Debian's prometheus package for promtool (first run only)"
export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
$sudo apt-get install -y -q --no-install-recommends prometheus > /dev/null 2>&1 \
  || { $sudo apt-get update -q > /dev/null 2>&1 && $sudo apt-get install -y -q --no-install-recommends prometheus > /dev/null 2>&1; } \
  || echo "[promtool] could not install it; promtool checks will be skipped"
exit 0
