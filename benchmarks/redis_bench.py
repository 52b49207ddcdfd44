"""Redis footprint and rebuild benchmarks (issue 14, items 2 and 3), against
the real local broker and a **private** redis-server (its own port, no
persistence, started and stopped by this suite by PID) so that
``used_memory`` is this deployment's alone: ``python -m benchmarks.run redis``.

1. **Steady** (``redis.steady_*``): a worker (default settings, one worker,
   4 partitions) consumes a steady ``RATE`` (2,000) events/s for
   ``DURATION_S`` seconds over ``VIDEOS`` (10,000) videos drawn uniformly
   (every video is in the catalogue within seconds) and ``USERS`` (50,000)
   users. At the end: Redis ``INFO memory`` ``used_memory`` against the live
   data = the sum of ``MEMORY USAGE`` of every user record plus that of the
   one current global record. Target (issue 14): used_memory <= 2 x live.
   The rest is broken down: the learner's hash (checkpoint + snapshot), the
   other published global versions, the statistics stream.
2. **Flood** (``redis.flood_*``): the same, and 20,000 events with new,
   never-repeated video ids mixed into the first quarter of the run (the
   issue's "20,000 new video ids" row). Same target.
3. **Legacy** (``redis.legacy_*``, with ``HPMF_BENCH_REDIS_LEGACY=1``): the
   steady run with the old behaviour restored by settings
   (``--global-keep-versions 1000000 --max-videos 0``: every superseded
   version lives ``global_ttl_s`` = 1 h, no catalogue cap), for the
   before/after comparison.
4. **Rebuild** (``redis.rebuild_*``): ``REBUILD_USERS`` (200,000) users with
   two events each are produced and consumed by a worker; then the private
   Redis is killed (kill -9) and restarted empty while the worker runs. Timed
   from the restart to the moment every partition is marked rebuilt
   (``/readyz`` 200 again); the users' counts are then checked exactly.

The issue asks for 10 minutes per memory run. ``make bench`` uses
``HPMF_BENCH_REDIS_S`` (default 120 s): at that the steady, flood and
rebuild runs took ~20 minutes together on this shared 2-core machine
(load average ~10), the legacy runs ~10 more; the non-user part of Redis no longer grows
with time (a fixed number of global versions, a capped catalogue, a stream
trimmed at every publish), so the ratio at 120 s is not flattered by the
shorter run: users accumulate over a longer one, which lowers the ratio.
``HPMF_BENCH_REDIS_S=600`` runs the issue's 10 minutes.

Knobs: HPMF_BENCH_REDIS_S, HPMF_BENCH_REDIS_RATE, HPMF_BENCH_REDIS_USERS,
HPMF_BENCH_REDIS_VIDEOS, HPMF_BENCH_REBUILD_USERS, HPMF_BENCH_REDIS_ONLY
(comma list of steady,flood,rebuild), HPMF_BENCH_REDIS_LEGACY=1.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis

from benchmarks.env import BOOTSTRAP, PY, ROOT
from streamer.cli.replay import produce
from streamer.cli.stream import stream_argv
from streamer.event import encode_event
from streamer.reader.redis_record import global_current_key, global_key
from streamer.service.kafka_admin import delete_topics, ensure_topics
from streamer.service.rebuild import marker_key

DURATION_S = float(os.environ.get("HPMF_BENCH_REDIS_S", "120"))
RATE = float(os.environ.get("HPMF_BENCH_REDIS_RATE", "2000"))
USERS = int(os.environ.get("HPMF_BENCH_REDIS_USERS", "50000"))
VIDEOS = int(os.environ.get("HPMF_BENCH_REDIS_VIDEOS", "10000"))
FLOOD = 20_000
REBUILD_USERS = int(os.environ.get("HPMF_BENCH_REBUILD_USERS", "200000"))
ONLY = [x for x in os.environ.get("HPMF_BENCH_REDIS_ONLY", "steady,flood,rebuild").split(",") if x]
LEGACY = os.environ.get("HPMF_BENCH_REDIS_LEGACY", "") == "1"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server of this benchmark's own: no persistence, killed by PID."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not on PATH")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="hpmf-bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis(port=self.port)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                self.dir,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if self.client.ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_worker(
    topic: str, redis_url: str, port: int, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    settings = {
        "kafka_bootstrap": BOOTSTRAP,
        "redis_url": redis_url,
        "topic": topic,
        "group_id": f"w-{topic}",
        "redis_prefix": "hpmf",
        "metrics_port": port,
        "log_level": "WARNING",
    }
    cmd = [*stream_argv(PY, settings), *extra]
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=fh)


def ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
    except OSError:
        return False


def wait(
    cond: object, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode} while waiting for {what}")
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def lag_zero(port: int) -> bool:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return False
    # One gauge per partition (hpmf_stream_consumer_lag{topic=...,partition=...});
    # caught up when there is at least one and every one is 0.
    lags = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hpmf_stream_consumer_lag{")
    ]
    return bool(lags) and all(x == 0 for x in lags)


def applied(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("hpmf_stream_applied_events_total "):
            return float(line.split()[1])
    return 0.0


def steady_events(n: int, tag: str, flood: int = 0, seed: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """``n`` events over USERS users and VIDEOS videos (uniform); with ``flood``,
    that many events spread evenly over the first quarter of the run (or over
    the first ``flood`` events if the run is that short) carry a new,
    never-repeated video id."""
    rng = random.Random(seed)
    window = min(n, max(n // 4, flood))
    k = 0
    for i in range(n):
        uid = f"u{rng.randrange(USERS)}"
        if flood and i < window and (i * flood) // window != ((i + 1) * flood) // window:
            vid = f"flood-{tag}-{k}"
            k += 1
        else:
            vid = f"v{rng.randrange(VIDEOS)}"
        yield (
            uid.encode(),
            encode_event(
                f"{tag}-{i}", uid, vid, round(rng.expovariate(1 / 25), 2), int(time.time() * 1000)
            ),
        )


def memory_usage(client: redis.Redis, keys: list[bytes]) -> int:
    total = 0
    for k in range(0, len(keys), 2000):
        pipe = client.pipeline(transaction=False)
        for key in keys[k : k + 2000]:
            pipe.memory_usage(key, samples=0)
        total += sum(int(x or 0) for x in pipe.execute())
    return total


def footprint(client: redis.Redis, prefix: str = "hpmf") -> dict[str, float]:
    info = client.info("memory")
    users = [k for k in client.scan_iter(match=f"{prefix}:u:*", count=5000)]
    versions = [k for k in client.scan_iter(match=f"{prefix}:g:{{*}}", count=1000)]
    cur = int(client.get(global_current_key(prefix)) or -1)
    cur_key = global_key(prefix, cur).encode()
    users_b = memory_usage(client, users)
    global_b = memory_usage(client, [cur_key])
    others_b = memory_usage(client, [k for k in versions if k != cur_key])
    learner_b = memory_usage(client, [f"{prefix}:learner".encode()])
    stream_b = memory_usage(client, [f"{prefix}:gstats".encode()])
    n_videos = int(client.hget(cur_key, "n_videos") or 0)
    live = users_b + global_b
    return {
        "used_memory_mb": info["used_memory"] / 2**20,
        "live_mb": live / 2**20,
        "users_mb": users_b / 2**20,
        "global_mb": global_b / 2**20,
        "other_versions_mb": others_b / 2**20,
        "learner_mb": learner_b / 2**20,
        "stream_mb": stream_b / 2**20,
        "ratio": info["used_memory"] / max(live, 1),
        "users": float(len(users)),
        "global_versions": float(len(versions)),
        "n_videos": float(n_videos),
    }


def memory_run(name: str, flood: int, extra: tuple[str, ...], logdir: Path) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-redis-{name}-{tag}"
    ensure_topics(BOOTSTRAP, {topic: 4, f"{topic}.dlq": 4})
    srv = PrivateRedis()
    srv.start()
    port = free_port()
    proc = start_worker(topic, srv.url, port, logdir / f"{name}.log", *extra)
    try:
        wait(lambda: ready(port), 120, "worker ready", proc)
        n = int(RATE * DURATION_S)
        t0 = time.monotonic()
        produce(BOOTSTRAP, topic, steady_events(n, tag, flood), rate=RATE, progress=False)
        produce_s = time.monotonic() - t0
        wait(lambda: lag_zero(port), 300, "worker caught up", proc)
        time.sleep(2.0)  # a publish after the last batch
        fp = footprint(srv.client)
        fp["rate"] = n / produce_s
        fp["duration_s"] = produce_s
        fp["events"] = float(n)
        print(
            f"   {name}: used_memory {fp['used_memory_mb']:.1f} MB, live {fp['live_mb']:.1f} MB "
            f"(users {fp['users_mb']:.1f} + global {fp['global_mb']:.2f}), ratio {fp['ratio']:.2f}, "
            f"{fp['global_versions']:.0f} versions, {fp['n_videos']:.0f} videos",
            flush=True,
        )
        return {f"redis.{name}_{k}": float(v) for k, v in fp.items()}
    finally:
        stop(proc)
        srv.close()
        delete_topics(BOOTSTRAP, [topic, f"{topic}.dlq", f"{topic}.checkpoints"])


def rebuild_run(logdir: Path) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-rebuild-{tag}"
    ensure_topics(BOOTSTRAP, {topic: 4, f"{topic}.dlq": 4})
    n_users = REBUILD_USERS
    rng = random.Random(1)

    def events() -> Iterator[tuple[bytes, bytes]]:
        order = [u for u in range(n_users) for _ in range(2)]
        rng.shuffle(order)
        now = int(time.time() * 1000)
        for i, u in enumerate(order):
            uid = f"u{u}"
            yield (
                uid.encode(),
                encode_event(f"{tag}-{i}", uid, f"v{rng.randrange(VIDEOS)}", 10.0, now),
            )

    produce(BOOTSTRAP, topic, events(), progress=False, linger_ms=20)
    srv = PrivateRedis()
    srv.start()
    port = free_port()
    proc = start_worker(topic, srv.url, port, logdir / "rebuild.log", "--checkpoint-every-s", "5")
    try:
        t0 = time.monotonic()
        # Every event applied (the lag gauge reads 0 before the first batch).
        wait(lambda: applied(port) >= 2 * n_users, 1800, "first pass consumed", proc)
        first_s = time.monotonic() - t0
        time.sleep(6.0)  # a Kafka checkpoint after the last publish
        users_before = sum(1 for _ in srv.client.scan_iter(match="hpmf:u:*", count=5000))
        srv.kill()
        srv.start()  # empty
        t1 = time.monotonic()
        wait(
            lambda: srv.client.get(global_current_key("hpmf")) is not None,
            120,
            "globals republished",
            proc,
        )
        globals_s = time.monotonic() - t1
        marker = marker_key("hpmf")
        wait(lambda: len(srv.client.hkeys(marker)) == 5 and ready(port), 1800, "rebuild done", proc)
        rebuild_s = time.monotonic() - t1
        load1 = os.getloadavg()[0]
        users_after = sum(1 for _ in srv.client.scan_iter(match="hpmf:u:*", count=5000))
        sample = [f"u{u}" for u in random.Random(2).sample(range(n_users), 2000)]
        pipe = srv.client.pipeline(transaction=False)
        for u in sample:
            pipe.hget(f"hpmf:u:{{{u}}}", "n")
        wrong = sum(1 for n in pipe.execute() if n != b"2")
        print(
            f"   rebuild: {n_users} users ({2 * n_users} events): first pass {first_s:.1f} s, "
            f"globals back {globals_s:.1f} s, rebuilt in {rebuild_s:.1f} s; users {users_before} -> {users_after}, "
            f"{wrong} of 2000 sampled counts wrong; load average {load1:.1f}",
            flush=True,
        )
        return {
            "redis.rebuild_users": float(n_users),
            "redis.rebuild_events": float(2 * n_users),
            "redis.rebuild_first_pass_s": first_s,
            "redis.rebuild_globals_s": globals_s,
            "redis.rebuild_s": rebuild_s,
            "redis.rebuild_events_per_s": 2 * n_users / rebuild_s,
            "redis.rebuild_users_before": float(users_before),
            "redis.rebuild_users_after": float(users_after),
            "redis.rebuild_sample_wrong": float(wrong),
            "redis.rebuild_loadavg_1m": load1,
        }
    finally:
        stop(proc)
        srv.close()
        delete_topics(BOOTSTRAP, [topic, f"{topic}.dlq", f"{topic}.checkpoints"])


def run() -> dict[str, float]:
    logdir = Path(tempfile.mkdtemp(prefix="hpmf-bench-redis-logs-"))
    out: dict[str, float] = {
        "redis.duration_target_s": DURATION_S,
        "redis.rate_target": RATE,
        "redis.users_population": float(USERS),
        "redis.videos": float(VIDEOS),
    }
    if "steady" in ONLY:
        out |= memory_run("steady", 0, (), logdir)
    if "flood" in ONLY:
        out |= memory_run("flood", FLOOD, (), logdir)
    if LEGACY:
        out |= memory_run(
            "legacy", 0, ("--global-keep-versions", "1000000", "--max-videos", "0"), logdir
        )
        out |= memory_run(
            "legacy_flood",
            FLOOD,
            ("--global-keep-versions", "1000000", "--max-videos", "0"),
            logdir,
        )
    if "rebuild" in ONLY:
        out |= rebuild_run(logdir)
    print(f"   logs in {logdir}")
    return out


if __name__ == "__main__":
    for k, v in sorted(run().items()):
        print(f"{k}  {v:.4g}")
