"""Redis unreachable mid-stream: the worker retries with backoff, commits
nothing meanwhile, and recovers when Redis returns -- counts stay exact.

Uses a private redis-server (its own port, append-only file fsynced on every
write so a kill -9 loses nothing) started and killed by this test by PID; the
shared Redis is not touched. Kafka outages: tests/test_stream_kafka_outage.py."""

from __future__ import annotations

import shutil
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest
import redis
from test_stream_support import (
    create_topic,
    free_port,
    log_records,
    make_events,
    produce,
    running,
    start_private_redis,
    stopped_summaries,
    user_counts,
    wait_exit,
    wait_for,
    worker_cmd,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def probe(port: int, path: str) -> int:
    try:
        return int(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:  # not listening (yet)
        return 0


def probe_for(port: int, seconds: float) -> list[tuple[int, int]]:
    """(/healthz, /readyz) status codes every 0.2 s for ``seconds``."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append((probe(port, "/healthz"), probe(port, "/readyz")))
        time.sleep(0.2)
    return out


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")
def test_redis_outage_is_retried_and_nothing_is_lost(kafka_bootstrap, topic_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    url = f"redis://127.0.0.1:{port}/0"
    create_topic(kafka_bootstrap, topic_name)
    events, counts = make_events(3000, 150, seed=7)
    users = sorted(counts)
    client = redis.Redis(port=port)
    log = tmp_path / "worker.log"
    mport = free_port()
    # Liveness within 2 s, and an outage twice as long: /healthz must hold.
    cmd = worker_cmd(
        kafka_bootstrap,
        url,
        topic_name,
        "outage",
        "--stop-when-idle-s",
        "4",
        "--retry-max-backoff-s",
        "0.5",
        "--metrics-port",
        str(mport),
        "--live-after-s",
        "2",
    )
    producer = threading.Thread(target=produce, args=(kafka_bootstrap, topic_name, events, 500.0))
    srv = start_private_redis(port, str(data), durable=True)
    try:
        with running(cmd, log) as proc:
            producer.start()
            wait_for(
                lambda: sum(user_counts(client, "outage", users).values()) > 500, 60, "progress"
            )
            srv.send_signal(signal.SIGKILL)  # Redis gone mid-stream
            srv.wait(timeout=10)
            probes = probe_for(mport, 4.0)
            assert proc.poll() is None  # the worker waits, it does not die
            srv = start_private_redis(
                port, str(data), durable=True
            )  # back, with its append-only file
            wait_for(lambda: probe(mport, "/readyz") == 200, 20, "ready again once Redis is back")
            producer.join(timeout=60)
            assert wait_exit(proc, 90, log) == 0
        assert user_counts(client, "outage", users) == dict(counts)
        # Live all through the outage (the loop turned while it waited), not ready during it.
        assert [c for c, _ in probes if c != 200] == [], probes
        assert 503 in [r for _, r in probes], probes
        text = log.read_text()
        # Whichever Redis call the outage hit (user read/write, global step,
        # lease) was retried with backoff and logged.
        retried = [
            r
            for r in log_records(log)
            if "failed, retrying" in str(r.get("msg")) and "ConnectionError" in str(r.get("error"))
        ]
        assert retried, text[-2000:]
        summary = stopped_summaries(log)[-1]
        # Every event applied once; a write whose reply was lost would show as a replay skip.
        assert summary["applied"] + summary["skipped_replay"] == 3000
        assert summary["events"] >= 3000
    finally:
        producer.join(timeout=60)
        if srv.poll() is None:
            srv.send_signal(signal.SIGKILL)
            srv.wait(timeout=10)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")
def test_a_full_redis_is_waited_for_not_crashed_on(kafka_bootstrap, topic_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """maxmemory with noeviction (what docs/operations.md recommends): once
    Redis is full the worker's writes are refused; it waits (live, not
    ready), and when memory is raised it goes on, counts exact."""
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    srv = start_private_redis(port, str(data), durable=True)
    client = redis.Redis(port=port)
    mport = free_port()
    create_topic(kafka_bootstrap, topic_name)
    events, counts = make_events(3000, 1500, seed=8)
    users = sorted(counts)
    log = tmp_path / "worker.log"
    cmd = worker_cmd(
        kafka_bootstrap,
        f"redis://127.0.0.1:{port}/0",
        topic_name,
        "full",
        "--stop-when-idle-s",
        "3",
        "--retry-max-backoff-s",
        "0.3",
        "--metrics-port",
        str(mport),
    )
    try:
        with running(cmd, log) as proc:
            wait_for(lambda: probe(mport, "/readyz") == 200, 60, "worker ready")
            used = int(client.info("memory")["used_memory"])
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", str(used + 200_000))  # room for a few hundred users
            produce(kafka_bootstrap, topic_name, events)
            wait_for(lambda: b"OutOfMemoryError" in log.read_bytes(), 60, "writes refused")
            probes = probe_for(mport, 1.0)
            assert proc.poll() is None and all(h == 200 for h, _ in probes), probes
            assert probes[-1][1] == 503  # not ready while Redis refuses writes
            client.config_set("maxmemory", "0")  # memory added
            assert wait_exit(proc, 90, log) == 0
        assert user_counts(client, "full", users) == dict(counts)
        summary = stopped_summaries(log)[-1]
        assert summary["applied"] + summary["skipped_replay"] == 3000
    finally:
        if srv.poll() is None:
            srv.send_signal(signal.SIGKILL)
            srv.wait(timeout=10)
