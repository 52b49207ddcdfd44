"""What one Python worker can reach at most, against a bare consumer, on this
machine: the floor under ``stream.throughput_ratio`` (issue #4 asks >= 0.5).

The worker's contract needs, per minibatch, at least: poll the records
(kafka-python), validate every event with pydantic, read every touched user's
state from Redis and write it back with its expiry, and commit the offsets.
This times exactly that much, each stage the previous one plus one more piece
of work, done the cheapest way found, and no model at all:

``bare``
    poll only (the benchmark's bare consumer: same fetch settings).
``validate``
    + one pydantic call per minibatch: the batch's values joined into one JSON
    array and validated as a list of the contract's event type (a little
    cheaper than one call per event; no range, time or id checks).
``read``
    + one ``MGET`` of the batch's distinct users' keys.
``write``
    + one ``EVALSHA`` that ``SET``\\ s every one of those users to a record of
    a one-event user's v1 size with ``PX`` expiry (all records sent as one
    argument, which halves the client's packing cost).
``commit``
    + ``commit_async`` of the batch's offsets: the whole floor.

Every stage reads the same topic under its own consumer group, in alternating
rounds (the machine is shared and noisy); each figure is the median over
rounds. Besides wall-clock rates it reports the CPU-only rate, events /
process CPU seconds of the consumer: what the stage would reach if every
Redis server step ran in parallel with the Python side and cost nothing.

    python -m benchmarks.stream_floor            # its own 100,000-event topic
    HPMF_BENCH_FLOOR_ROUNDS=3 python -m benchmarks.stream_floor
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from pydantic import TypeAdapter

from streamer.event import _WireEvent
from streamer.reader.redis_record import UserRecord, encode_user_record
from streamer.service.connections import kafka_security, redis_client

STAGES = ("bare", "validate", "read", "write", "commit")
ROUNDS = int(os.environ.get("HPMF_BENCH_FLOOR_ROUNDS", "3"))
# All records in one argument, cut by length on the server: packing one long
# argument costs the client half the CPU of one argument per user.
_SET_ALL = """
local size = tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.sub(ARGV[1], (i - 1) * size + 1, i * size), 'PX', ARGV[3])
end
return #KEYS
"""


def one_event_record_bytes(dim: int = 11) -> int:
    """Bytes of a v1 user record (field values only) with one history entry,
    at the default model size (10 factors + a bias)."""
    rec = UserRecord(
        mean=np.zeros(dim),
        cov=np.eye(dim),
        n_events=1,
        updated_ms=1_700_000_000_000,
        event_ms=1_700_000_000_000,
        global_version=1,
        partition=0,
        offset=12345,
        history=[("v123", 12.5, 1)],
    )
    return sum(len(v) for v in encode_user_record(rec).values())


def stage_rate(
    bootstrap: str, topic: str, n: int, stage: str, group: str, client: redis.Redis, prefix: str
) -> tuple[float, float]:
    """(events per wall second, events per CPU second) of one stage over the topic."""
    batch_events = TypeAdapter(list[_WireEvent])
    set_all = client.register_script(_SET_ALL)
    blob = b"\0" * one_event_record_bytes()
    work = STAGES.index(stage)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=512,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=100,
        **kafka_security(),
    )
    got, t0, cpu0 = 0, 0.0, 0.0
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=500)
        if not polled:
            continue
        if not got:
            t0, cpu0 = time.monotonic(), time.process_time()
        records = [r for recs in polled.values() for r in recs]
        got += len(records)
        if work < 1:
            continue
        events = batch_events.validate_json(b"[" + b",".join(r.value for r in records) + b"]")
        if work < 2:
            continue
        keys = [f"{prefix}{{{u}}}" for u in dict.fromkeys(str(e["user_id"]) for e in events)]
        client.mget(keys)
        if work < 3:
            continue
        set_all(keys=keys, args=[blob * len(keys), len(blob), 3_600_000])
        if work < 4:
            continue
        offsets = {
            TopicPartition(r.topic, r.partition): OffsetAndMetadata(r.offset + 1, "", -1)
            for r in records
        }
        consumer.commit_async(offsets)
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    consumer.close()
    if got < n:
        raise RuntimeError(f"floor stage {stage} read {got} of {n}")
    return got / wall, got / cpu


def floor(
    bootstrap: str, redis_url: str, topic: str, n: int, tag: str, log: Callable[[str], Any] = print
) -> dict[str, float]:
    """The stages over an existing topic of ``n`` valid events (the throughput
    benchmark's): ``stream.floor_<stage>_events_per_s``, ``..._cpu_events_per_s``
    and ``stream.floor_<stage>_ratio`` (wall rate / bare rate, both medians)."""
    client = redis_client(url=redis_url)
    prefix = f"bench-floor-{tag}:"
    wall: dict[str, list[float]] = {s: [] for s in STAGES}
    cpu: dict[str, list[float]] = {s: [] for s in STAGES}
    try:
        for k in range(ROUNDS):
            for stage in STAGES:
                w, c = stage_rate(
                    bootstrap, topic, n, stage, f"floor-{tag}-{stage}-{k}", client, prefix
                )
                wall[stage].append(w)
                cpu[stage].append(c)
                log(
                    f"   floor round {k + 1}/{ROUNDS} {stage:10s} {w:9,.0f} events/s (CPU-only {c:9,.0f})"
                )
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()
    bare = statistics.median(wall["bare"])
    out: dict[str, float] = {"stream.floor_rounds": float(ROUNDS)}
    for stage in STAGES:
        out[f"stream.floor_{stage}_events_per_s"] = round(statistics.median(wall[stage]), 1)
        out[f"stream.floor_{stage}_cpu_events_per_s"] = round(statistics.median(cpu[stage]), 1)
        out[f"stream.floor_{stage}_ratio"] = round(statistics.median(wall[stage]) / bare, 3)
    return out


def main() -> None:
    from benchmarks.stream_bench import BOOTSTRAP, REDIS_URL, THROUGHPUT_EVENTS, synthetic
    from streamer.cli.replay import produce
    from streamer.service.kafka_admin import delete_topics, ensure_topics

    tag = uuid.uuid4().hex[:8]
    topic = f"bench-floor-{tag}"
    ensure_topics(BOOTSTRAP, {topic: 4})
    try:
        produce(
            BOOTSTRAP,
            topic,
            synthetic(THROUGHPUT_EVENTS, 20_000, 2_000, tag),
            progress=False,
            linger_ms=20,
        )
        print(json.dumps(floor(BOOTSTRAP, REDIS_URL, topic, THROUGHPUT_EVENTS, tag), indent=2))
    finally:
        delete_topics(BOOTSTRAP, [topic])


if __name__ == "__main__":
    main()
