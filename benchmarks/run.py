"""``make bench``: run every benchmark suite against the real local services and
write their figures to benchmarks/results.json (a flat JSON object) and a table.

Each suite is a module ``benchmarks.<name>_bench`` with ``run() -> dict[str, float]``
whose keys are prefixed with the suite name (``model.``, ``stream.``, ``lookup.``, ``rank.``, ``redis.``,
``service.``).
Run one suite alone with ``python -m benchmarks.run model``: the other suites'
figures stay in the file, so each suite also records ``<suite>.commit`` (the
git commit it ran, ``-dirty`` with uncommitted changes) and ``<suite>.date``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SUITES = ("model", "stream", "lookup", "rank", "redis", "service")
RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"


def commit() -> str:
    """The checked-out commit, ``-dirty`` if the tree has changes; "unknown" outside git."""
    root = RESULTS.parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def main(argv: list[str]) -> int:
    os.environ.setdefault(
        "OMP_NUM_THREADS", "1"
    )  # before torch loads; see streamer/cli/__init__.py
    suites = argv or list(SUITES)
    results: dict[str, object] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    failed = []
    for name in suites:
        t0 = time.time()
        print(f"== benchmark suite: {name}", flush=True)
        try:
            figures = importlib.import_module(f"benchmarks.{name}_bench").run()
        except Exception as exc:  # a failing suite must not hide the others' figures
            print(f"!! suite {name} failed: {exc!r}", file=sys.stderr)
            failed.append(name)
            continue
        for key in [k for k in results if k.startswith(f"{name}.")]:
            del results[key]  # a rerun replaces the suite's figures, none left stale
        results.update(figures)
        results[f"{name}.commit"] = commit()
        results[f"{name}.date"] = time.strftime("%Y-%m-%d")
        print(f"   ({time.time() - t0:.0f} s)")
    results["machine"] = machine()
    results["date"] = time.strftime("%Y-%m-%d")
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    width = max(len(k) for k in results)
    print(f"\n{'figure':<{width}}  value")
    for k in sorted(results):
        v = results[k]
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(f"\nwritten to {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
