"""``hpmf replay EVENTS --rate N``: produce an events file into Kafka.

Reads a CSV/TSV events file (``user_id video_id value timestamp``, the output
of ``hpmf simulate``; see :mod:`streamer.files.events_file`) and produces one event
per row to the watch-events topic, keyed by user id, at ``--rate`` events per
second (0: as fast as the producer goes), with a progress bar.

``event_id`` is ``<file name>:<row>`` (row in timestamp order), so replaying
the same file twice produces the same ids and the service skips the second
copy. ``ts`` is the wall clock at produce time by default (``--ts now``: the
file's clock is usually simulated days), or the file's timestamp taken as
epoch seconds (``--ts file``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from streamer.event import encode_event


class RateLimiter:
    """Token bucket: at most ``rate`` events per second on average, in small bursts."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    def wait(self, n: int = 1) -> None:
        self.sent += n
        if self.rate <= 0:
            return
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0.002:
            time.sleep(ahead)


def produce(
    bootstrap: str,
    topic: str,
    events: Iterable[tuple[bytes, bytes]],
    rate: float = 0.0,
    total: int | None = None,
    progress: bool = True,
    linger_ms: int = 5,
    config: dict[str, Any] | None = None,
) -> int:
    """Send (key, value) pairs to ``topic`` at ``rate``/s; returns the count sent.
    ``config``: the security settings (default: from the environment,
    :func:`streamer.service.connections.kafka_security`)."""
    from kafka import KafkaProducer
    from tqdm import tqdm

    from streamer.service.connections import kafka_security

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=linger_ms,
        batch_size=128 * 1024,
        **(config if config is not None else kafka_security()),
    )
    limiter = RateLimiter(rate)
    n = 0
    bar = tqdm(total=total, unit="ev", disable=not progress, mininterval=0.5)
    try:
        for key, value in events:
            producer.send(topic, key=key, value=value)
            n += 1
            if n % 64 == 0:
                limiter.wait(64)
                bar.update(64)
        producer.flush()
        bar.update(n - bar.n)
    finally:
        bar.close()
        producer.close(timeout=10)
    return n


def file_events(
    path: Path, limit: int | None, ts_mode: str
) -> tuple[int, Iterator[tuple[bytes, bytes]]]:
    from streamer.files.events_file import read_events

    ev = read_events(path)
    n = len(ev) if limit is None else min(limit, len(ev))
    name = path.name

    def gen() -> Iterator[tuple[bytes, bytes]]:
        for i in range(n):
            uid = str(ev.user_ids[i])
            ts = (
                int(time.time() * 1000) if ts_mode == "now" else int(float(ev.timestamps[i]) * 1000)
            )
            yield (
                uid.encode(),
                encode_event(f"{name}:{i}", uid, str(ev.video_ids[i]), float(ev.values[i]), ts),
            )

    return n, gen()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "events", type=Path, help="events file (CSV/TSV: user_id, video_id, value, timestamp)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=2000.0,
        help="events per second; 0 = unthrottled (default 2000)",
    )
    parser.add_argument("--limit", type=int, default=None, help="produce only the first N events")
    parser.add_argument("--topic", default=None, help="topic (default: HPMF_TOPIC or watch-events)")
    parser.add_argument(
        "--kafka-bootstrap", default=None, help="bootstrap servers (default: HPMF_KAFKA_BOOTSTRAP)"
    )
    parser.add_argument(
        "--ts",
        choices=("now", "file"),
        default="now",
        help="event time: produce time or the file's (epoch s)",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from streamer.service.connections import kafka_security
    from streamer.service.kafka_admin import BrokerNotReadyError, service_topics
    from streamer.service.settings import StreamSettings

    s = StreamSettings()
    # Another topic named: its dead-letter and checkpoints topics follow it.
    s = s.model_copy(
        update={
            "kafka_bootstrap": args.kafka_bootstrap or s.kafka_bootstrap,
            "topic": args.topic or s.topic,
            "dlq_topic": s.dlq_topic if args.topic is None else "",
            "checkpoints_topic": s.checkpoints_topic if args.topic is None else "",
        }
    )
    bootstrap, topic = s.kafka_bootstrap, s.topic
    try:
        service_topics(s)
    except BrokerNotReadyError as exc:
        print(f"hpmf replay: error: {exc}", file=sys.stderr)
        return 1
    total, events = file_events(args.events, args.limit, args.ts)
    t0 = time.monotonic()
    n = produce(
        bootstrap,
        topic,
        events,
        rate=args.rate,
        total=total,
        progress=not args.no_progress,
        config=kafka_security(s),
    )
    dt = time.monotonic() - t0
    print(f"produced {n} events to {topic} in {dt:.1f} s ({n / max(dt, 1e-9):.0f}/s)")
    return 0
