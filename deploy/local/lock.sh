#!/usr/bin/env bash
# `make lock`: regenerate requirements.lock from pyproject.toml: every package
# the dependencies, the service extras and the dev extras need, at exact versions, with the hashes
# of their files, for the Python that runs it (this machine kind: Linux x86_64,
# CPython 3.11).
#
#   make lock                  keep every locked version that pyproject.toml still
#                              allows; add what is new, drop what is gone
#   make lock UPGRADE=1        move every package to the newest version allowed
#   make lock UPGRADE=torch,redis   move only these (and what they need)
#
# The tool that writes the lock (uv, pinned below) is for developers only: it
# lives in its own small environment in the cache, never in the project's.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${HPMF_CACHE:-$HOME/.cache/hpmf}
PY=${PYTHON:-python3}
UV_VERSION=${UV_VERSION:-0.13.8}
TOOLS="$CACHE/tools-uv-$UV_VERSION"
LOCK=requirements.lock

if [ ! -x "$TOOLS/bin/uv" ]; then
    echo "[lock] installing uv $UV_VERSION into $TOOLS (once)"
    rm -rf "$TOOLS"
    "$PY" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet "uv==$UV_VERSION"
fi

args=()
case "${UPGRADE:-}" in
    "" | 0) ;;
    1 | all) args+=(--upgrade) ;;
    *) for p in ${UPGRADE//,/ }; do args+=(--upgrade-package "$p"); done ;;
esac

# uv keeps the versions already in $LOCK unless told to upgrade them.
"$TOOLS/bin/uv" pip compile pyproject.toml --extra service --extra dev --generate-hashes --python "$PY" \
    --custom-compile-command "make lock" --quiet "${args[@]}" -o "$LOCK"
# Record which pyproject.toml dependency list the lock was made from (venv.sh checks it).
sed -i "2a # pyproject.toml dependencies: $("$PY" deploy/local/deps_hash.py)" "$LOCK"
echo "[lock] $LOCK: $(grep -c '^[A-Za-z]' "$LOCK") packages, pinned with hashes"
