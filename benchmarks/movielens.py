"""Fetch MovieLens 100K from the recbole 1.2.1 wheel on PyPI (it ships the data).

    python -m benchmarks.movielens      # prints the path of ml-100k.inter

The file is extracted into .data/ (git-ignored) once; the wheel is fetched with
pip's ordinary client and removed afterwards. The data is never committed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"


def movielens_100k() -> Path:
    """Path of ml-100k.inter, downloading the recbole wheel the first time."""
    out = DATA / "ml-100k.inter"
    if out.exists():
        return out
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        print("[data] downloading the recbole==1.2.1 wheel for MovieLens 100K ...", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--only-binary=:all:",
                "-d",
                tmp,
                "recbole==1.2.1",
            ],
            check=True,
        )
        wheel = next(Path(tmp).glob("recbole-1.2.1-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            out.write_bytes(z.read(MEMBER))
    print(f"[data] MovieLens 100K at {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    print(movielens_100k())
