#!/usr/bin/env bash
# The Dockerfile's install steps, run in a fresh virtual environment on this
# machine (no Docker engine here), then the image's entry command from
# outside the source tree with the image's environment.
#
#   deploy/image/check-steps.sh VENV_DIR [LOCK_FILE]
#
# Each pip line below is the Dockerfile's, with /opt/hpmf replaced by
# VENV_DIR (tests/test_deploy.py checks that they stay the same). The first
# run downloads the locked torch and its CUDA wheels (several GB).
# Afterwards: VENV_DIR/bin/hpmf stream ... against the local services.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${1:?usage: $0 VENV_DIR [LOCK_FILE]}
LOCK=${2:-requirements.lock}
[ -f "$LOCK" ] || { echo "error: $LOCK not found (the lock file the Dockerfile installs)" >&2; exit 1; }
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
# What the build stage has in /src: the lock, the project metadata, the packages.
cp "$LOCK" "$SRC/requirements.lock"
cp -r pyproject.toml README.md model streamer "$SRC/"
cd "$SRC"
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
python3 -m venv "$VENV"
"$VENV/bin/pip" install --require-hashes --no-deps -r requirements.lock
"$VENV/bin/pip" install --no-deps --no-build-isolation .
"$VENV/bin/python" -c "import streamer.service.worker, model.online"
cd /
"$VENV/bin/hpmf" --help > /dev/null
echo "[image-steps] installed into $VENV; the entry command runs from / (no source tree)"
