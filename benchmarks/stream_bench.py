"""Streaming benchmarks against the real local broker and Redis
(``python -m benchmarks.run stream``). Everything is measured side by side in
one run, on its own topics, consumer groups and Redis prefix (deleted after).

1. Throughput. ``THROUGHPUT_EVENTS`` events (20,000 users, 2,000 videos) are
   produced to a 4-partition topic first. A bare kafka-python consumer (same
   fetch settings, no decoding) reads them all; then one worker (``hpmf
   stream`` subprocess, default settings) reads the same topic under another
   group and does the whole job (validate, Redis read, model, Redis write,
   commit, global step). Rates are events / wall-clock from the first record
   to the last. ``stream.throughput_ratio`` = worker / bare. Then the floor
   stages of :mod:`benchmarks.stream_floor` read the same topic: the least
   work the contract asks of any worker, without a model
   (``stream.floor_*``).

2. Freshness at a steady 2,000 events/s for ``FRESHNESS_S`` seconds into a
   running worker: the worker observes, per applied event, Redis-write-
   acknowledged time minus the Kafka record timestamp (set by the producer at
   send); the bench scrapes that histogram after a warm-up and at the end and
   takes p50/p99 of the difference (Prometheus ``histogram_quantile``,
   linear within buckets).

3. Memory. ``MEMORY_EVENTS`` events (default 1,000,000) from 200,000 users
   who churn (each is active in a sliding window of the stream, then gone) are
   produced while one worker consumes; the worker's VmRSS is sampled from
   /proc every 0.5 s. Growth = median RSS over the last 10% of the events
   against the median over 10-20% (after the catalogue and buffers warmed up).

Environment knobs: HPMF_BENCH_THROUGHPUT_EVENTS, HPMF_BENCH_FRESHNESS_S,
HPMF_BENCH_MEMORY_EVENTS, HPMF_BENCH_MEMORY_USERS, HPMF_BENCH_FRESHNESS_RATE (default 2000),
HPMF_BENCH_ONLY (comma list of throughput,freshness,memory).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from benchmarks.env import BOOTSTRAP, PY, REDIS_URL, ROOT
from benchmarks.stream_floor import floor
from streamer.cli.replay import produce
from streamer.cli.stream import stream_argv
from streamer.event import encode_event
from streamer.service.connections import kafka_security, redis_client
from streamer.service.kafka_admin import delete_topics, ensure_topics
from streamer.service.metrics import histogram_quantile, parse_histogram

THROUGHPUT_EVENTS = int(os.environ.get("HPMF_BENCH_THROUGHPUT_EVENTS", "100000"))
FRESHNESS_S = float(os.environ.get("HPMF_BENCH_FRESHNESS_S", "30"))
FRESHNESS_RATE = float(os.environ.get("HPMF_BENCH_FRESHNESS_RATE", "2000"))
MEMORY_EVENTS = int(os.environ.get("HPMF_BENCH_MEMORY_EVENTS", "1000000"))
MEMORY_USERS = int(os.environ.get("HPMF_BENCH_MEMORY_USERS", "200000"))


def synthetic(
    n: int, n_users: int, n_videos: int, tag: str, churn: bool = False, seed: int = 0
) -> Iterator[tuple[bytes, bytes]]:
    """Valid events; with ``churn`` user k is active only around event k*n/n_users."""
    rng = random.Random(seed)
    window = max(1, n_users // 20)
    for i in range(n):
        if churn:
            centre = i * n_users // n
            u = min(n_users - 1, max(0, centre + rng.randrange(-window // 2, window // 2 + 1)))
        else:
            u = rng.randrange(n_users)
        uid = f"u{u}"
        yield (
            uid.encode(),
            encode_event(
                f"{tag}-{i}",
                uid,
                f"v{int(rng.paretovariate(1.2)) % n_videos}",
                round(rng.expovariate(1 / 25), 2),
                int(time.time() * 1000),
            ),
        )


def bare_consumer_rate(topic: str, n: int) -> float:
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"bare-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=512,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=100,
        **kafka_security(),
    )
    got, t0 = 0, None
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            if t0 is None:
                t0 = time.monotonic()
            got += len(recs)
    dt = time.monotonic() - (t0 or time.monotonic())
    c.close()
    if got < n:
        raise RuntimeError(f"bare consumer read {got} of {n}")
    return n / dt


def start_worker(
    topic: str, prefix: str, port: int, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    settings = {
        "kafka_bootstrap": BOOTSTRAP,
        "redis_url": REDIS_URL,
        "topic": topic,
        "group_id": f"w-{topic}",
        "redis_prefix": prefix,
        "metrics_port": port,
        "log_level": "WARNING",
    }
    cmd = [*stream_argv(PY, settings), *extra]
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=fh)


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("worker not ready in time")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def throughput(tag: str, prefix: str, logdir: Path) -> dict[str, float]:
    topic = f"bench-tp-{tag}"
    ensure_topics(BOOTSTRAP, {topic: 4, f"{topic}.dlq": 4})
    n = THROUGHPUT_EVENTS
    produce(BOOTSTRAP, topic, synthetic(n, 20_000, 2_000, tag), progress=False, linger_ms=20)
    bare = bare_consumer_rate(topic, n)
    port = free_port()
    proc = start_worker(topic, prefix + "tp", port, logdir / "throughput.log")
    try:
        t0 = None
        end = time.monotonic() + 600
        done = 0.0
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}")
            try:
                done = counter(scrape(port), "hpmf_stream_events_consumed_total")
            except OSError:
                done = 0.0
            now = time.monotonic()
            if done > 0 and t0 is None:
                t0, first = now, done  # first scrape with progress: rate over the rest
            if done >= n:
                break
            time.sleep(0.1)
        if done < n or t0 is None:
            raise RuntimeError(f"worker consumed {done} of {n}")
        rate = (n - first) / (time.monotonic() - t0)
        stop(proc)
        # What any worker could reach at most on this topic (see stream_floor.py).
        floor_figures = floor(BOOTSTRAP, REDIS_URL, topic, n, tag)
    finally:
        stop(proc)
        delete_topics(BOOTSTRAP, [topic, f"{topic}.dlq", f"{topic}.checkpoints"])
    return floor_figures | {
        "stream.events_per_s": round(rate, 1),
        "stream.bare_consumer_events_per_s": round(bare, 1),
        "stream.throughput_ratio": round(rate / bare, 3),
        "stream.throughput_events": float(n),
    }


def freshness(tag: str, prefix: str, logdir: Path) -> dict[str, float]:
    topic = f"bench-fr-{tag}"
    ensure_topics(BOOTSTRAP, {topic: 4, f"{topic}.dlq": 4})
    port = free_port()
    proc = start_worker(topic, prefix + "fr", port, logdir / "freshness.log")
    name = "hpmf_stream_freshness_seconds"
    try:
        wait_ready(port, proc)
        n = int(FRESHNESS_RATE * FRESHNESS_S)
        warm = int(FRESHNESS_RATE * min(5.0, FRESHNESS_S / 4))
        events = synthetic(n, 20_000, 2_000, tag, seed=1)
        produce(
            BOOTSTRAP,
            topic,
            (next(events) for _ in range(warm)),
            rate=FRESHNESS_RATE,
            progress=False,
        )
        time.sleep(0.5)
        b0, c0 = parse_histogram(scrape(port), name)
        t0 = time.monotonic()
        produce(BOOTSTRAP, topic, events, rate=FRESHNESS_RATE, progress=False)
        achieved = (n - warm) / (time.monotonic() - t0)
        time.sleep(1.0)
        b1, c1 = parse_histogram(scrape(port), name)
    finally:
        stop(proc)
        delete_topics(BOOTSTRAP, [topic, f"{topic}.dlq", f"{topic}.checkpoints"])
    delta = [b - a for a, b in zip(c0, c1, strict=True)]
    return {
        "stream.freshness_p50_ms": round(histogram_quantile(0.5, b1, delta) * 1000, 1),
        "stream.freshness_p99_ms": round(histogram_quantile(0.99, b1, delta) * 1000, 1),
        "stream.freshness_rate_events_per_s": round(achieved, 1),
        "stream.freshness_events": float(delta[-1]),
    }


def memory(tag: str, prefix: str, logdir: Path) -> dict[str, float]:
    topic = f"bench-mem-{tag}"
    ensure_topics(BOOTSTRAP, {topic: 4, f"{topic}.dlq": 4})
    n = MEMORY_EVENTS
    port = free_port()
    # Short user expiry: churned users leave Redis too (the worker keeps none).
    proc = start_worker(topic, prefix + "mem", port, logdir / "memory.log", "--user-ttl-s", "120")
    samples: list[tuple[float, int]] = []  # (events consumed, rss kB)
    try:
        wait_ready(port, proc)
        producer = threading.Thread(
            target=produce,
            args=(BOOTSTRAP, topic, synthetic(n, MEMORY_USERS, 2_000, tag, churn=True, seed=2)),
            kwargs={"progress": False, "linger_ms": 20},
            daemon=True,
        )
        producer.start()
        end = time.monotonic() + 3600
        done = 0.0
        while done < n and time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}")
            done = counter(scrape(port), "hpmf_stream_events_consumed_total")
            samples.append((done, rss_kb(proc.pid)))
            time.sleep(0.5)
        producer.join(timeout=60)
        if done < n:
            raise RuntimeError(f"worker consumed {done} of {n}")
    finally:
        stop(proc)
        delete_topics(BOOTSTRAP, [topic, f"{topic}.dlq", f"{topic}.checkpoints"])
    base = [r for d, r in samples if 0.1 * n <= d < 0.2 * n]
    last = [r for d, r in samples if d >= 0.9 * n]
    b, f = statistics.median(base), statistics.median(last)
    return {
        "stream.memory_growth_pct": round(100.0 * (f - b) / b, 2),
        "stream.memory_rss_mb_start": round(b / 1024, 1),
        "stream.memory_rss_mb_end": round(f / 1024, 1),
        "stream.memory_rss_mb_max": round(max(r for _, r in samples) / 1024, 1),
        "stream.memory_events": float(n),
        "stream.memory_users": float(MEMORY_USERS),
    }


def _cleanup(prefix: str) -> None:
    client = redis_client(url=REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i : i + 1000])
    client.close()


def run() -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    prefix = f"bench-{tag}-"
    logdir = ROOT / ".run" / f"stream-bench-{tag}"
    logdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, float] = {}
    only = os.environ.get("HPMF_BENCH_ONLY", "throughput,freshness,memory").split(",")
    try:
        for name, fn in (("throughput", throughput), ("freshness", freshness), ("memory", memory)):
            if name in only:
                t0 = time.monotonic()
                out.update(fn(tag, prefix, logdir))
                # The machine is shared: say how busy it was (1-min load average, 2 cores).
                out[f"stream.{name}_loadavg_1m"] = float(
                    Path("/proc/loadavg").read_text().split()[0]
                )
                print(
                    f"   stream {name}: {json.dumps({k: v for k, v in out.items()})} ({time.monotonic() - t0:.0f} s)",
                    flush=True,
                )
    finally:
        _cleanup(prefix)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
