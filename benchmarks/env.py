"""Where the benchmarks find the local services and the project's Python, in
one place: the ports ``make up`` uses (``KAFKA_PORT``, ``REDIS_PORT``) unless
``HPMF_KAFKA_BOOTSTRAP`` / ``HPMF_REDIS_URL`` say otherwise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

BOOTSTRAP = os.environ.get(
    "HPMF_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
)
REDIS_URL = os.environ.get(
    "HPMF_REDIS_URL", f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0"
)
ROOT = Path(__file__).resolve().parents[1]
#: The project's environment when there is one (the services are started with it).
PY = (
    str(ROOT / ".venv" / "bin" / "python")
    if (ROOT / ".venv" / "bin" / "python").exists()
    else sys.executable
)
