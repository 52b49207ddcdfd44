#!/usr/bin/env bash
# Make ./.venv usable: a small per-clone virtual environment whose heavy
# dependencies (torch is several GB) live in a cached environment outside the
# clone, keyed on the lock file, so repeated `make test` and CI runs reuse it
# instead of downloading torch again.
#
#   ~/.cache/hpmf/venv-<hash of requirements.lock>        torch, pyro, ... at the
#                                                        lock's exact versions,
#                                                        hash-checked (shared)
#   ./.venv                                              this clone, editable
#                                                        install of hpmf, sees
#                                                        the cached site-packages
#                                                        through a .pth file
#
# requirements.lock (dependencies and dev extras, exact versions and hashes)
# is made from pyproject.toml by `make lock` (deploy/local/lock.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${HPMF_CACHE:-$HOME/.cache/hpmf}
PY=${PYTHON:-python3}

if ! command -v "$PY" >/dev/null; then
    echo "error: $PY not found; install Python >= 3.11 or set PYTHON=/path/to/python3" >&2
    exit 1
fi
"$PY" - <<'PYEOF' || { echo "error: Python >= 3.11 is required (have $("$PY" --version))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYEOF

# The key covers exactly what pip installs into the cached environment: the
# lock file (every version and hash) and the Python it is installed for.
LOCK=requirements.lock
[ -f "$LOCK" ] || { echo "error: $ROOT/$LOCK is missing; make it with 'make lock'" >&2; exit 1; }
WANT=$("$PY" deploy/local/deps_hash.py)
HAVE=$(sed -n 's/^# pyproject.toml dependencies: //p' "$LOCK")
if [ "$WANT" != "$HAVE" ]; then
    echo "error: pyproject.toml's dependencies changed since $LOCK was made; run 'make lock' (it keeps the locked versions that still fit) and commit $LOCK" >&2
    exit 1
fi
KEY=$( { "$PY" -c 'import sys; print(sys.version.split()[0])'; cat "$LOCK"; } | sha256sum | cut -c1-12)
SHARED="$CACHE/venv-$KEY"

if [ ! -f "$SHARED/.complete" ]; then
    echo "[venv] creating cached environment $SHARED from $LOCK (first run downloads torch, several GB; minutes)"
    rm -rf "$SHARED"
    mkdir -p "$CACHE"
    "$PY" -m venv "$SHARED"
    # Exactly the lock: every package pinned and hash-checked, and pip refuses
    # any dependency the lock does not list. (The venv's own pip does the
    # install; it is not upgraded from the network first.)
    "$SHARED/bin/python" -m pip install --require-hashes --progress-bar off -r "$LOCK"
    "$SHARED/bin/python" -m pip check
    cp "$LOCK" "$SHARED/requirements.lock"
    touch "$SHARED/.complete"
else
    echo "[venv] reusing cached environment $SHARED"
fi

SITE_SHARED=$("$SHARED/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.shared 2>/dev/null)" != "$SHARED" ]; then
    rm -rf .venv
    "$PY" -m venv --without-pip .venv
    SITE_LOCAL=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$SITE_SHARED" > "$SITE_LOCAL/hpmf-shared-deps.pth"
    echo "$SHARED" > .venv/.shared
fi
if [ ! -x .venv/bin/hpmf ] || [ pyproject.toml -nt .venv/bin/hpmf ]; then
    # --no-build-isolation: setuptools comes from the cached environment, so
    # this step needs no network and takes about a second.
    .venv/bin/python -m pip --python .venv/bin/python install --quiet --no-deps --no-build-isolation -e "$ROOT" 2>/dev/null \
      || "$SHARED/bin/python" -m pip --python .venv/bin/python install --quiet --no-deps --no-build-isolation -e "$ROOT"
    touch .venv/bin/hpmf
fi
echo "[venv] ready: .venv/bin/python, .venv/bin/hpmf"
