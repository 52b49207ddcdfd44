"""``make demo``: the main job, end to end, against the real local Kafka and Redis.

1. Draw a synthetic ad-supported VOD watch stream from the model (``hpmf simulate``).
2. Reset the demo's topic, its consumer group and its Redis keys, so every run starts from nothing.
3. Start the streaming service (``hpmf stream``) as its own process.
4. Replay the stream into Kafka, keyed by user (``hpmf replay``), with a progress bar.
5. Follow the service's metrics endpoint until it has consumed every event.
6. Stop the service with SIGTERM (it finishes its batch, commits, exits 0).
7. Print what another service reads from Redis (``hpmf lookup``) for a heavy
   watcher, a light one and a brand-new user; then how well the served top-5
   lists match the simulator's truth (saved beside the events) next to "most
   popular", and the lists of two users whose true tastes differ
   (:mod:`streamer.evaluation.demo_truth`).

Every step logs what it does and where its output goes (``.run/demo/``).
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / ".run" / "demo"
HPMF = [sys.executable, "-m", "streamer.cli"]


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def sh(args: list[str], **kw: object) -> None:
    subprocess.run(args, check=True, cwd=ROOT, **kw)  # type: ignore[call-overload]


def consumed(port: int) -> float:
    """Events the service has consumed so far, from its Prometheus endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith("hpmf_stream_events_consumed_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def port_taken(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pick_users(events: Path) -> tuple[str, str]:
    """The heaviest watcher and a light one (2 events) in the file."""
    with events.open() as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)
        counts = Counter(r[0] for r in rows)
    heavy = counts.most_common(1)[0][0]
    light = next((u for u, c in counts.items() if c == 2), min(counts, key=counts.__getitem__))
    return heavy, light


def reset(topic: str, dlq: str, group: str, prefix: str, bootstrap: str, redis_url: str) -> None:
    from streamer.service.connections import kafka_security, redis_client
    from streamer.service.kafka_admin import delete_group, delete_topics

    security = kafka_security()
    # The learner's durable checkpoint too: a new run must not start its
    # globals from an earlier run's (streamer/service/checkpoint_topic.py).
    delete_topics(bootstrap, [topic, dlq, f"{topic}.checkpoints"], config=security)
    # Its committed offsets too: otherwise the recreated topic may be read from
    # an earlier run's offsets and the service skips the first events.
    had_group = delete_group(bootstrap, group, config=security)
    client = redis_client(url=redis_url)
    # {prefix}:* too: the global keys' names on a Redis Cluster (HPMF_REDIS_CLUSTER).
    keys = [
        k
        for pattern in (f"{prefix}:*", f"{{{prefix}}}:*")
        for k in client.scan_iter(match=pattern, count=1000)
    ]
    for k in range(0, len(keys), 1000):
        client.delete(*keys[k : k + 1000])
    client.close()
    group_note = f", consumer group {group!r}" if had_group else ""
    say(
        f"reset: deleted topics {topic!r}, {dlq!r}{group_note} and {len(keys)} Redis keys under {prefix!r}:*"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m streamer.cli.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--days", type=int, default=2, help="days of simulated traffic (default 2)")
    p.add_argument(
        "--users-per-day", type=int, default=1500, help="new users per day (default 1500)"
    )
    p.add_argument("--rate", type=int, default=4000, help="replay rate, events/s (default 4000)")
    p.add_argument(
        "--choice-strength",
        type=float,
        default=2.0,
        help="how much taste drives which videos the simulated users start "
        "(hpmf simulate --choice-strength; default 2, 0 = popularity alone)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("DEMO_METRICS_PORT", "9464")),
        help="the service's metrics port (default: DEMO_METRICS_PORT or 9464)",
    )
    args = p.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    topic = os.environ.get("HPMF_TOPIC", "watch-events")
    dlq = os.environ.get("HPMF_DLQ_TOPIC", f"{topic}.dlq")
    group = os.environ.get("HPMF_GROUP_ID", "hpmf-stream")
    prefix = os.environ.get("HPMF_REDIS_PREFIX", "hpmf")
    bootstrap = os.environ.get(
        "HPMF_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
    )
    redis_url = os.environ.get(
        "HPMF_REDIS_URL", f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0"
    )
    env = {
        **os.environ,
        "HPMF_TOPIC": topic,
        "HPMF_DLQ_TOPIC": dlq,
        "HPMF_GROUP_ID": group,
        "HPMF_REDIS_PREFIX": prefix,
        "HPMF_KAFKA_BOOTSTRAP": bootstrap,
        "HPMF_REDIS_URL": redis_url,
    }
    if port_taken(
        args.metrics_port
    ):  # before anything is done: the service would die on it at step 3
        raise RuntimeError(
            f"port 127.0.0.1:{args.metrics_port} (the service's metrics) is already in use by another "
            f"process; choose another: DEMO_METRICS_PORT=<port> make demo"
        )
    RUN.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    events = RUN / "events.tsv"
    say(f"1/7 simulating {args.days} days of AVOD traffic into {events}")
    sh(
        [
            *HPMF,
            "simulate",
            str(events),
            "--days",
            str(args.days),
            "--users-per-day",
            str(args.users_per_day),
            "--seed",
            "7",
            "--choice-strength",
            str(args.choice_strength),
        ],
        env=env,
    )
    n_events = sum(1 for _ in events.open()) - 1
    heavy, light = pick_users(events)

    say("2/7 resetting the demo's Kafka topic and Redis keys")
    reset(topic, dlq, group, prefix, bootstrap, redis_url)

    log = RUN / "stream.log"
    say(
        f"3/7 starting the streaming service (log: {log}, metrics: http://127.0.0.1:{args.metrics_port}/metrics)"
    )
    with log.open("w") as logf:
        worker = subprocess.Popen(
            # A short stream: the choice learner recomputes its videos every
            # 1,000 events (the service default, 10,000, suits long streams).
            [
                *HPMF,
                "stream",
                "--metrics-port",
                str(args.metrics_port),
                "--transform",
                "log1p",
                "--choice-sweep-every",
                "1000",
            ],
            cwd=ROOT,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    try:
        say(f"4/7 replaying {n_events} watch events into Kafka topic {topic!r} at {args.rate}/s")
        sh([*HPMF, "replay", str(events), "--rate", str(args.rate), "--topic", topic], env=env)

        say("5/7 waiting for the service to consume every event")
        deadline = time.time() + 300
        with tqdm(total=n_events, unit="ev", desc="consumed") as bar:
            while (seen := consumed(args.metrics_port)) < n_events:
                bar.update(int(seen) - bar.n)
                if worker.poll() is not None:
                    raise RuntimeError(
                        f"the service exited early with code {worker.returncode}; see {log}"
                    )
                if time.time() > deadline:
                    raise RuntimeError(
                        f"the service consumed {seen:.0f} of {n_events} events in 5 min; see {log}"
                    )
                time.sleep(0.5)
            bar.update(n_events - bar.n)
        time.sleep(1.0)  # the last batch's Redis write and commit follow its consumption
    finally:
        say("6/7 stopping the service with SIGTERM (it finishes its batch and commits)")
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        say(f"service exited with code {worker.returncode}")

    say("7/7 what another service reads from Redis:")
    for label, user in (
        ("heavy watcher", heavy),
        ("light watcher (2 views)", light),
        ("brand-new user", "new-user-never-seen"),
    ):
        print(f"\n===== {label}: user {user} =====", flush=True)
        sh(
            [*HPMF, "lookup", user, "--k", "5", "--prefix", prefix, "--redis-url", redis_url],
            env=env,
        )
    print("", flush=True)
    say(
        "how well the served lists match the simulator's truth (recommend through Redis vs most popular):"
    )
    from streamer.cli.simulate import truth_path
    from streamer.evaluation.demo_truth import render, served_vs_truth, watched_by_user

    report = served_vs_truth(events, truth_path(events), redis_url, prefix)
    print(render(report, {u: len(v) for u, v in watched_by_user(events).items()}), flush=True)
    say(f"done in {time.time() - t_start:.0f} s")
    return 0 if worker.returncode == 0 else 1


def cli() -> int:
    """``main`` with a one-line error instead of a traceback when a step fails:
    a broker that never became ready, a step that found something wrong (the
    service exiting early, a consumer group still in use), or a subcommand
    that exited non-zero (it has printed its own error above)."""
    from streamer.service.kafka_admin import BrokerNotReadyError

    try:
        return main()
    except (BrokerNotReadyError, RuntimeError) as exc:
        print(f"[demo] error: {exc}", file=sys.stderr, flush=True)
    except subprocess.CalledProcessError as exc:
        print(
            f"[demo] error: hpmf {exc.cmd[3]} exited with code {exc.returncode} (its output is above)",
            file=sys.stderr,
            flush=True,
        )
    return 1


if __name__ == "__main__":
    sys.exit(cli())
