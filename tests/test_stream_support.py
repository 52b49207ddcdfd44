"""Helpers shared by the streaming integration tests (no tests here).

Workers run as real subprocesses (``python -m streamer.cli stream``) against
the real broker and Redis, isolated by topic, consumer group and key prefix,
and are always killed by PID in a ``finally``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = (
    str(ROOT / ".venv" / "bin" / "python")
    if (ROOT / ".venv" / "bin" / "python").exists()
    else sys.executable
)


def make_events(
    n: int, n_users: int, seed: int = 0, id_prefix: str = "e", start: int = 0
) -> tuple[list[tuple[bytes, bytes]], collections.Counter[str]]:
    """``n`` valid events over ``n_users`` users, and the count per user."""
    from streamer.event import encode_event

    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out: list[tuple[bytes, bytes]] = []
    counts: collections.Counter[str] = collections.Counter()
    for i in range(start, start + n):
        u = f"user-{rng.randrange(n_users)}"
        counts[u] += 1
        out.append(
            (
                u.encode(),
                encode_event(
                    f"{id_prefix}{i}",
                    u,
                    f"vid-{rng.randrange(80)}",
                    round(rng.expovariate(1 / 20), 2),
                    now,
                ),
            )
        )
    return out, counts


def produce(
    bootstrap: str, topic: str, events: list[tuple[bytes, bytes]], rate: float = 0.0
) -> None:
    from streamer.cli.replay import produce as _produce

    _produce(bootstrap, topic, events, rate=rate, progress=False)


def create_topic(bootstrap: str, topic: str, partitions: int = 4) -> None:
    from streamer.service.kafka_admin import ensure_topics

    ensure_topics(bootstrap, {topic: partitions, f"{topic}.dlq": partitions})


def worker_cmd(bootstrap: str, redis_url: str, topic: str, prefix: str, *extra: str) -> list[str]:
    """``hpmf stream`` for a test: small batches, 3 factors, short Kafka timeouts."""
    from streamer.cli.stream import stream_argv

    settings = {
        "kafka_bootstrap": bootstrap,
        "redis_url": redis_url,
        "topic": topic,
        "group_id": f"g-{topic}",
        "redis_prefix": prefix,
        "metrics_port": 0,
        "batch_max_events": 128,
        "batch_max_age_ms": 30,
        "n_factors": 3,
        "session_timeout_ms": 6000,
        "learner_lease_ms": 2000,
    }
    return [*stream_argv(PYTHON, settings), *extra]


@contextmanager
def running(
    cmd: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a worker; kill it by PID on the way out whatever happened."""
    full_env = {**os.environ, **(env or {})}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, env=full_env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float, log_path: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"worker did not exit in {timeout} s; log tail:\n{log_path.read_text()[-3000:]}"
        ) from None


def user_counts(client: Any, prefix: str, users: list[str]) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for u in users:
        pipe.hget(f"{prefix}:u:{{{u}}}", "n")
    return {u: int(n) if n is not None else 0 for u, n in zip(users, pipe.execute(), strict=True)}


def wait_for(cond: Any, timeout: float, what: str, step: float = 0.1) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def log_records(log_path: Path) -> list[dict[str, Any]]:
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with suppress(ValueError):
                out.append(json.loads(line))
    return out


def stopped_summaries(log_path: Path) -> list[dict[str, Any]]:
    return [r for r in log_records(log_path) if r.get("msg") == "stopped"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_private_redis(port: int, data_dir: str, durable: bool) -> subprocess.Popen[bytes]:
    """A Redis server of the test's own (to stop, restart or empty it):
    ``durable`` keeps an append-only file fsynced on every write (it comes
    back with its data after a restart), otherwise nothing is persisted (it
    comes back empty)."""
    import redis

    persist = (
        ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    )
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", data_dir]
        + ["--save", "", *persist, "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)

    def pings() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    wait_for(pings, 10, "private redis up")
    return proc
