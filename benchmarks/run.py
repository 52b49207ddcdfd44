"""``make bench``: run every benchmark suite against the real local services and
write their figures to benchmarks/results.json (a flat JSON object) and a table.

Each suite is a module ``benchmarks.<name>_bench`` with ``run() -> dict[str, float]``
whose keys are prefixed with the suite name (``model.``, ``stream.``, ``lookup.``).
Run one suite alone with ``python -m benchmarks.run model``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

SUITES = ("model", "stream", "lookup")
RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"


def main(argv: list[str]) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads; see streamer/cli.py
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
        results.update(figures)
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
