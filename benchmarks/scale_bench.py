"""Scale-out, shown: 1, 2 and 3 workers (the learner singleton among them) on
a 6-partition topic against the real local broker and Redis.

For each worker count it starts that many ``hpmf stream`` processes on a
fresh topic, prefix and group, waits until the group has settled (every
partition assigned, every worker holding some), produces a backlog of
events keyed by user, and times the consumption from the first event
consumed to the last (the sum of the workers' ``events_consumed_total``).
While the backlog drains one more worker joins, and the longest time in
which no worker consumed anything around that join is the **rebalance
pause**. Then it checks exactness (every user's count in Redis equals what
was produced; the workers' applied events sum to the total) and reads each
worker's CPU time from /proc, so capacity can be planned by CPU seconds per
1,000 events.

On a 2-core machine that also runs Kafka and Redis (and, here, other jobs)
more workers cannot mean more events per second: the figures are about
correctness and overhead, not speed-up.

    .venv/bin/python -m benchmarks.scale_bench      # KAFKA_PORT / REDIS_PORT as for the tests
    HPMF_SCALE_EVENTS=30000 HPMF_SCALE_WORKERS=1,2,3 HPMF_PARTITION_ASSIGNOR=cooperative-sticky ...
    HPMF_REDIS_CLUSTER=true HPMF_REDIS_URL=redis://127.0.0.1:7000/0 ...   # against the local Redis Cluster
"""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from benchmarks.env import BOOTSTRAP, REDIS_URL, ROOT
from streamer.cli.replay import produce
from streamer.cli.stream import stream_argv
from streamer.event import encode_event
from streamer.service.connections import redis_client
from streamer.service.kafka_admin import delete_group, delete_topics, ensure_topics

PARTITIONS = 6
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def make_events(
    n: int, users: int, seed: int
) -> tuple[list[tuple[bytes, bytes]], collections.Counter[str]]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    counts: collections.Counter[str] = collections.Counter()
    out = []
    for i in range(n):
        u = f"u{rng.randrange(users)}"
        counts[u] += 1
        out.append(
            (
                u.encode(),
                encode_event(
                    f"s{seed}-{i}",
                    u,
                    f"v{rng.randrange(2000)}",
                    round(rng.expovariate(1 / 20), 2),
                    now,
                ),
            )
        )
    return out, counts


class Worker:
    def __init__(self, name: str, topic: str, prefix: str, logdir: Path) -> None:
        self.name, self.port = name, free_port()
        settings = {
            "kafka_bootstrap": BOOTSTRAP,
            "redis_url": REDIS_URL,
            "topic": topic,
            "group_id": f"g-{topic}",
            "redis_prefix": prefix,
            "metrics_port": self.port,
            "worker_id": name,
            "lag_refresh_s": 1,
            "session_timeout_ms": 10000,
        }
        cmd = stream_argv(sys.executable, settings)
        self.log = (logdir / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=self.log)

    def metrics(self) -> dict[str, float]:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited with {self.proc.returncode}")
        return scrape(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def consumed(workers: list[Worker]) -> float:
    return sum(w.metrics().get("hpmf_stream_events_consumed_total", 0) for w in workers)


def run(
    n_workers: int, n_events: int, logdir: Path, join_rate: float, join_s: float
) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    topic, prefix = f"scale-{n_workers}-{tag}", f"scale{n_workers}{tag}"
    ensure_topics(BOOTSTRAP, {topic: PARTITIONS, f"{topic}.dlq": PARTITIONS})
    backlog, counts = make_events(n_events, 20_000, seed=n_workers)
    n_join = int(join_rate * join_s)
    steady, counts2 = make_events(n_join, 20_000, seed=100 + n_workers)
    counts.update(counts2)
    total = n_events + n_join
    workers = [Worker(f"w{i}", topic, prefix, logdir) for i in range(n_workers)]
    r = redis_client(url=REDIS_URL)
    try:

        def settled() -> bool:
            held = [w.metrics().get("hpmf_stream_assigned_partitions", 0) for w in workers]
            return sum(held) == PARTITIONS and all(h > 0 for h in held)

        wait(settled, 300, f"{n_workers} workers settled on {PARTITIONS} partitions")
        # 1. Capacity: a backlog drained by the settled group.
        cpu0 = {w.name: cpu_s(w.proc.pid) for w in workers}
        produce(BOOTSTRAP, topic, backlog, progress=False, linger_ms=20)
        t_first = t_last = first = None
        end = time.monotonic() + 900
        while time.monotonic() < end:
            done, now = consumed(workers), time.monotonic()
            if done > 0 and t_first is None:
                t_first, first = now, done
            if done >= n_events:
                t_last = now
                break
            time.sleep(0.05)
        if t_first is None or t_last is None or first is None:
            raise RuntimeError(f"backlog not consumed: {consumed(workers)} of {n_events}")
        cpu = sum(cpu_s(w.proc.pid) - cpu0[w.name] for w in workers)
        # 2. A worker joins a steady stream: the longest stretch without progress.
        producer = threading.Thread(
            target=produce,
            args=(BOOTSTRAP, topic, steady),
            kwargs={"rate": join_rate, "progress": False},
        )
        producer.start()
        workers.append(Worker(f"w{len(workers)}", topic, prefix, logdir))
        pause, last_move, prev = 0.0, time.monotonic(), n_events
        end = time.monotonic() + 600
        while time.monotonic() < end:
            done, now = consumed(workers), time.monotonic()
            if done > prev:
                pause = max(pause, now - last_move)
                last_move, prev = now, done
            if done >= total:
                break
            time.sleep(0.05)
        producer.join(timeout=120)
        joiner_held = workers[-1].metrics().get("hpmf_stream_assigned_partitions", 0)
    finally:
        for w in workers:
            w.stop()
    # Exactness, after a clean stop of every worker.
    pipe = r.pipeline(transaction=False)
    users = sorted(counts)
    for u in users:
        pipe.hget(f"{prefix}:u:{{{u}}}", "n")
    got = {u: int(v) if v is not None else 0 for u, v in zip(users, pipe.execute(), strict=True)}
    applied = 0
    for w in workers:
        for line in Path(w.log.name).read_text().splitlines():
            if '"msg": "stopped"' in line:
                applied += json.loads(line)["applied"]
    # {prefix}:* too: the global keys on a Redis Cluster (HPMF_REDIS_CLUSTER=true).
    keys = [
        k for pat in (f"{prefix}:*", f"{{{prefix}}}:*") for k in r.scan_iter(match=pat, count=1000)
    ]
    for i in range(0, len(keys), 500):
        r.delete(*keys[i : i + 500])
    delete_topics(BOOTSTRAP, [topic, f"{topic}.dlq"])
    delete_group(BOOTSTRAP, f"g-{topic}")
    return {
        "workers": n_workers,
        "backlog_events": n_events,
        "events_per_s": round((n_events - first) / max(t_last - t_first, 1e-9), 1),
        "cpu_s_per_1000_events": round(cpu / n_events * 1000, 3),
        "join_stream_events": n_join,
        "join_pause_s": round(pause, 2),
        "joiner_partitions": joiner_held,
        "counts_exact": float(got == dict(counts)),
        "applied_total": float(applied),
        "events_total": float(total),
    }


def main() -> int:
    n_events = int(os.environ.get("HPMF_SCALE_EVENTS", "30000"))
    counts = [int(x) for x in os.environ.get("HPMF_SCALE_WORKERS", "1,2,3").split(",")]
    logdir = ROOT / ".run" / "scale-bench"
    logdir.mkdir(parents=True, exist_ok=True)
    rate = float(os.environ.get("HPMF_SCALE_JOIN_RATE", "1000"))
    join_s = float(os.environ.get("HPMF_SCALE_JOIN_S", "40"))
    rows = []
    for k in counts:
        rows.append(run(k, n_events, logdir, rate, join_s))
        print(json.dumps(rows[-1]), flush=True)
    return (
        0
        if all(r["counts_exact"] == 1.0 and r["applied_total"] == r["events_total"] for r in rows)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
