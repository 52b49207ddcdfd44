"""``hpmf rebuild``: make the running service rebuild Redis from Kafka.

For operators, after Redis lost its data (the service also notices by itself,
see streamer/service/rebuild.py) or when its content is in doubt:

    hpmf rebuild --status          # what Redis and Kafka hold; changes nothing
    hpmf rebuild --wait 600        # rebuild, and wait until every partition is back

What it does:

1. If Redis holds no global record, publishes the one of the newest durable
   checkpoint (the compacted ``<topic>.checkpoints`` topic), so lookups get
   the checkpoint's pooled prior and video factors at once instead of
   ``NoGlobalsError``, even before a worker is up.
2. Resets the epoch marker ``{prefix}:epoch`` (a new token, no partition
   marked): every running worker sees it
   after its next batch (or within a second when idle), stops committing, and
   replays its partitions from Kafka over the user TTL; users already in Redis
   are skipped by their stored offsets, so a rebuild of an intact Redis only
   costs the reading. Workers started later do the same.
3. With ``--wait S``: follows the marker until every partition of the topic
   is marked rebuilt (exit 0) or ``S`` seconds pass (exit 1).

Settings as for ``hpmf stream`` (flags or ``HPMF_*``).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

_FLAGS = (
    "kafka_bootstrap",
    "topic",
    "redis_url",
    "redis_prefix",
    "redis_cluster",
    "checkpoints_topic",
    "user_ttl_s",
    "global_keep_versions",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name in _FLAGS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            type=int if name in ("user_ttl_s", "global_keep_versions") else str,
            help=f"as for hpmf stream (env HPMF_{name.upper()})",
        )
    parser.add_argument(
        "--status", action="store_true", help="only print the state; change nothing"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for every partition to be rebuilt",
    )


def run(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer

    from streamer.reader.redis_record import global_current_key, global_prefix, is_cluster_client
    from streamer.service.checkpoint_topic import CheckpointTopic
    from streamer.service.connections import kafka_security, redis_client
    from streamer.service.kafka_admin import topic_config
    from streamer.service.rebuild import marker_key
    from streamer.service.settings import StreamSettings, mask_url

    s = StreamSettings(**{k: v for k, v in vars(args).items() if k in _FLAGS and v is not None})
    client = redis_client(s, socket_connect_timeout=5, socket_timeout=10)
    gprefix = global_prefix(
        s.redis_prefix, is_cluster_client(client)
    )  # the global keys' hash tag on a cluster
    key = marker_key(gprefix)
    security = kafka_security(s)
    consumer = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=None, **security)
    try:
        partitions = sorted(consumer.partitions_for_topic(s.topic) or [])
    finally:
        consumer.close()
    if not partitions:
        print(f"hpmf rebuild: topic {s.topic} not found at {s.kafka_bootstrap}", file=sys.stderr)
        return 2
    fields = [f"{s.topic}:{p}" for p in partitions]

    def marked() -> list[str]:
        vals = client.hmget(key, fields)
        return [f for f, v in zip(fields, vals, strict=True) if v is not None]

    retention = topic_config(s.kafka_bootstrap, s.topic, "retention.ms", config=security)
    current = client.get(global_current_key(gprefix))
    ckpt = CheckpointTopic(s.kafka_bootstrap, s.checkpoints_topic_name, s.redis_prefix, security)
    found = ckpt.read_latest()
    print(
        f"redis {mask_url(s.redis_url)} prefix {s.redis_prefix}: marker {'present' if client.exists(key) else 'absent'}, "
        f"{len(marked())}/{len(fields)} partitions marked rebuilt, global version "
        f"{current.decode() if current else 'none'}"
    )
    print(
        f"kafka {s.topic}: {len(partitions)} partitions, retention.ms {retention} "
        f"(user TTL {s.user_ttl_s * 1000} ms{'' if retention is None or int(retention) < 0 or int(retention) >= s.user_ttl_s * 1000 else ': SHORTER, users older than the retention cannot be rebuilt'})"
    )
    print(
        f"checkpoint {s.checkpoints_topic_name}: "
        + (f"version {found[1]}, {len(found[0])} bytes" if found else "none")
    )
    if args.status:
        return 0

    if current is None and found is not None:
        _publish_checkpoint(client, gprefix, found[0], s.global_keep_versions)
        print(
            f"published the checkpoint's global record (version {found[1]}): lookups serve its pooled prior"
        )
    # A new epoch token and no partition marked: running workers see the token
    # change, workers started later see their partitions unmarked; all replay.
    # (Deleting the marker would let a worker started later take this Redis
    # for one written before the marker existed, see streamer/service/rebuild.py.)
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, "epoch", uuid.uuid4().hex)
    pipe.execute()
    print(
        f"reset {key} (new epoch, no partition marked): workers now replay their partitions from Kafka"
    )
    if args.wait <= 0:
        return 0
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        done = marked()
        if len(done) == len(fields):
            print(f"rebuilt: all {len(fields)} partitions")
            return 0
        time.sleep(0.5)
    print(
        f"hpmf rebuild: {len(marked())}/{len(fields)} partitions rebuilt after {args.wait:.0f} s "
        "(is a worker running? see hpmf_stream_rebuilding)",
        file=sys.stderr,
    )
    return 1


def _publish_checkpoint(client: object, prefix: str, blob: bytes, keep: int) -> None:
    from model.checkpoint import from_bytes
    from streamer.reader.redis_record import global_record_from_snapshot, write_global_record
    from streamer.service.store.global_retention import queue_drop, superseded

    model = from_bytes(blob)
    snap = model.export_globals()
    record = global_record_from_snapshot(snap, int(time.time() * 1000))
    pipe = client.pipeline(transaction=True)  # type: ignore[attr-defined]
    drop = superseded(client, prefix, snap.version, keep)
    write_global_record(pipe, prefix, record, 3600, None)
    queue_drop(pipe, prefix, snap.version, drop)
    pipe.execute()
