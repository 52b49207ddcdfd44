"""Forgetting a user on request (privacy): ``hpmf forget USER...``.

What a forget does, in this order:

1. **Cutoff.** The end offset of every partition of the watch-events topic at
   the moment of the request: every event of the user produced before the
   forget lies below it, whatever partition it is in and however far behind
   the workers are.
2. **Kafka first** (Kafka is the truth): a record keyed by the user id on the
   compacted topic ``<topic>.forget`` (``HPMF_FORGET_TOPIC``), value
   ``{"user_id", "cutoff": {partition: offset}, "requested_at"}``, flushed and
   acknowledged by the broker (``acks=all``) before anything else happens.
3. **Redis**, in one MULTI/EXEC (one per user on a Redis Cluster): the marker ``{prefix}:f:{<user>}`` (the
   cutoff, ``p:o,p:o,...``; no expiry) is set and the user's record
   ``{prefix}:u:{<user>}`` deleted. Both keys share the hash tag ``{<user>}``.

How it stays forgotten: the worker reads each user's marker with the user
(the same read script) and skips every event of that user below the cutoff of
its partition (``hpmf_stream_skipped_events_total{why="forgotten"}``): a
replay of the topic, a consumer group reset, a worker that was behind -- none
brings the user back. The write script fences on the marker too, so a batch
that read the user just before the forget cannot write them back. Events
produced *after* the forget are applied as for a new user (starting from the
pooled prior): forget erases what was recorded; it is not an opt-out of
future tracking, which belongs to the producer.

**Redis loss.** Markers live in Redis, which may lose its data; the forget
topic is the durable copy. At start-up every worker restores the markers
from the whole forget topic (:func:`restore_markers`, before it consumes any
event), so a Redis that came back empty gets its markers before a replay can
re-create anyone; a rebuild from Kafka must call it first too. The topic is
compacted, so it keeps the last request per user for ever, and it is small.

Not erased by a forget (see docs/streaming.md): the user's events still in the
watch-events topic until its retention removes them, any dead letters of
theirs, and their share of the pooled, anonymous global statistics (video
factors and priors), which hold no per-user record.

>>> parse_marker(format_marker({0: 12, 3: 7}))
{0: 12, 3: 7}
>>> forget_key("hpmf", "u1")
'hpmf:f:{u1}'
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from streamer.reader.redis_record import is_cluster_client, user_key

log = logging.getLogger(__name__)


def forget_key(prefix: str, user_id: object) -> str:
    """``{prefix}:f:{<user>}``: the user's forget marker (same hash tag as the user)."""
    return f"{prefix}:f:{{{user_id}}}"


def format_marker(cutoff: dict[int, int]) -> bytes:
    return ",".join(f"{p}:{o}" for p, o in sorted(cutoff.items())).encode()


def parse_marker(raw: bytes) -> dict[int, int]:
    """The cutoff of a marker; raises ValueError for a malformed one."""
    out: dict[int, int] = {}
    for part in raw.decode().split(","):
        if part:
            p, o = part.split(":")
            out[int(p)] = int(o)
    return out


def is_forgotten(cutoff: dict[int, int], partition: int, offset: int) -> bool:
    """True for an event produced before the forget. A partition the cutoff
    does not know was created after the forget: nothing in it is older.
    An empty cutoff (an unreadable marker) forgets everything."""
    if not cutoff:
        return True
    return offset < cutoff.get(partition, 0)


def _security(config: dict[str, Any] | None) -> dict[str, Any]:
    """The Kafka client security settings given, or the environment's."""
    from streamer.service.connections import kafka_security

    return dict(config) if config is not None else kafka_security()


def end_offsets(bootstrap: str, topic: str, config: dict[str, Any] | None = None) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **_security(config)
    )
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise RuntimeError(f"topic {topic!r} does not exist (or has no partitions)")
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: int(o) for tp, o in ends.items()}
    finally:
        consumer.close()


def forget_users(
    bootstrap: str,
    topic: str,
    forget_topic: str,
    client: redis.Redis,
    prefix: str,
    users: list[str],
    config: dict[str, Any] | None = None,
) -> dict[int, int]:
    """Forget ``users`` (see the module docstring for the order); returns the cutoff.
    ``config``: the Kafka clients' security settings (default: the environment's)."""
    from kafka import KafkaProducer

    from streamer.service.kafka_admin import ensure_topics

    security = _security(config)
    partitions = len(end_offsets(bootstrap, topic, security))
    ensure_topics(
        bootstrap,
        {forget_topic: partitions},
        configs={forget_topic: {"cleanup.policy": "compact"}},
        config=security,
    )
    cutoff = end_offsets(bootstrap, topic, security)
    now = int(time.time() * 1000)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=5, **security)
    try:
        futures = [
            producer.send(
                forget_topic,
                key=u.encode(),
                value=json.dumps(
                    {
                        "user_id": u,
                        "cutoff": {str(p): o for p, o in cutoff.items()},
                        "requested_at": now,
                    }
                ).encode(),
            )
            for u in users
        ]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)  # raises if the broker did not take it
    finally:
        producer.close(timeout=10)
    marker = format_marker(cutoff)
    # One transaction per user on a Redis Cluster (a user's two keys share
    # its hash tag, different users need not share a slot); one for all
    # users on a single Redis.
    groups = [[u] for u in users] if is_cluster_client(client) else [users]
    for group in groups:
        with client.pipeline(transaction=True) as pipe:
            for u in group:
                pipe.set(forget_key(prefix, u), marker)
                pipe.delete(user_key(prefix, u))
            pipe.execute()
    log.info("users forgotten", extra={"users": len(users), "cutoff": cutoff})
    return cutoff


def restore_markers(
    bootstrap: str,
    forget_topic: str,
    client: redis.Redis,
    prefix: str,
    timeout_s: float = 30.0,
    config: dict[str, Any] | None = None,
) -> int:
    """Write every forget marker of the forget topic that Redis lacks (the
    last request per user wins, as compaction keeps it); returns how many
    users the topic names. Idempotent.
    A missing topic means nothing was ever forgotten."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **_security(config)
    )
    try:
        parts = consumer.partitions_for_topic(forget_topic)
        if not parts:
            return 0
        tps = [TopicPartition(forget_topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        latest: dict[str, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading the forget topic {forget_topic!r} took over {timeout_s} s"
                )
            for recs in consumer.poll(timeout_ms=500).values():
                for rec in recs:
                    user, marker = _marker_of(rec)
                    if user is not None:
                        latest[user] = marker
    finally:
        consumer.close()
    if latest:
        pipe = client.pipeline(transaction=False)
        for user, marker in latest.items():
            # NX: a marker Redis holds is never older than Kafka's (forget
            # writes Kafka first), and a forget running concurrently with
            # this start-up must not be overwritten by the older copy.
            pipe.set(forget_key(prefix, user), marker, nx=True)
        pipe.execute()
    log.info(
        "forget markers restored from Kafka", extra={"topic": forget_topic, "users": len(latest)}
    )
    return len(latest)


def _marker_of(rec: Any) -> tuple[str | None, bytes]:
    try:
        value = json.loads(rec.value)
        user = value["user_id"]
        cutoff = {int(p): int(o) for p, o in value["cutoff"].items()}
    except (TypeError, ValueError, KeyError, AttributeError):
        log.error(
            "unreadable record in the forget topic; skipped",
            extra={"partition": rec.partition, "offset": rec.offset},
        )
        return None, b""
    if rec.key is not None and rec.key != str(user).encode():
        log.error(
            "forget record whose key is not its user_id; skipped",
            extra={"partition": rec.partition, "offset": rec.offset},
        )
        return None, b""
    return str(user), format_marker(cutoff)
