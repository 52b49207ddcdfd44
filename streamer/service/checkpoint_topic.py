"""The learner's checkpoint in Kafka: what survives when Redis loses its data.

Redis holds the learner's checkpoint too (``{prefix}:learner``), but Redis is
a cache: if it restarts empty, the globals would start again from nothing
(issue 14: the global version went back to 0). Kafka is the truth, so the
learner also writes its checkpoint, every ``checkpoint_every_s`` and at
shutdown, to a **compacted** topic (``<topic>.checkpoints`` by default, one
partition), keyed by the Redis prefix. Compaction keeps the newest record per
key, so the topic stays the size of one checkpoint per deployment however
long it runs. A learner that finds no checkpoint in Redis loads the newest
one from here (see :class:`streamer.service.store.global_store.GlobalStore`), and
``hpmf rebuild`` publishes the global record from it. The choice component's
learner state goes to the same topic under the key ``<prefix>:choice``.

Why Kafka and not a file or object store: the service already depends on
Kafka and on nothing else durable; a compacted topic is replicated like the
events it summarises, needs no shared file system between workers, and is
read with the client the service already has.

A checkpoint is ``model.checkpoint.to_bytes`` (~2.1 KB per video at 10
factors, float64 natural parameters and posteriors): 21 MB at 10,000
videos. The topic allows records up to ``MAX_RECORD_BYTES``; the catalogue
cap (``max_videos``) keeps a checkpoint under it (Kafka's default request
limit is 100 MB, so about 45,000 videos at 10 factors).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError

from streamer.service.connections import kafka_security

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 96 * 1024 * 1024

TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(MAX_RECORD_BYTES),
    # Roll segments small and clean eagerly: the topic holds one live record
    # per key, and a reader scans from near the end anyway.
    "segment.bytes": str(256 * 1024 * 1024),
    "min.cleanable.dirty.ratio": "0.1",
}


class CheckpointTopic:
    """Write and read the learner's checkpoint in a compacted topic (one partition)."""

    def __init__(
        self, bootstrap: str, topic: str, key: str, config: Mapping[str, Any] | None = None
    ) -> None:
        """``config``: the Kafka security settings (:func:`streamer.service.connections.kafka_security`);
        None: those of the environment."""
        self.bootstrap = bootstrap
        self.topic = topic
        self.key = key.encode()
        self.security = dict(config) if config is not None else kafka_security()
        self._producer: KafkaProducer | None = None

    def write(self, blob: bytes, version: int, timeout_s: float = 60.0) -> None:
        """Produce one checkpoint and wait for the broker's acknowledgement."""
        if len(blob) > MAX_RECORD_BYTES - 4096:
            log.error(
                "checkpoint too large for the checkpoint topic; lower max_videos",
                extra={"bytes": len(blob), "limit": MAX_RECORD_BYTES},
            )
            return
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                max_request_size=MAX_RECORD_BYTES,
                client_id="hpmf-checkpoint",
                reconnect_backoff_max_ms=1000,
                **self.security,
            )
        headers = [
            ("gv", str(int(version)).encode()),
            ("ts", str(int(time.time() * 1000)).encode()),
        ]
        self._producer.send(self.topic, key=self.key, value=blob, headers=headers, partition=0).get(
            timeout=timeout_s
        )
        log.info(
            "checkpoint written to Kafka",
            extra={"topic": self.topic, "gv": version, "bytes": len(blob)},
        )

    def read_latest(self, timeout_s: float = 30.0, tail: int = 32) -> tuple[bytes, int] | None:
        """The newest checkpoint under this key and its version, or None.

        Reads the last ``tail`` records first (compaction may lag; other
        prefixes may share the topic), then the whole partition if none of
        them is ours."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=MAX_RECORD_BYTES,
            fetch_max_bytes=MAX_RECORD_BYTES,
            consumer_timeout_ms=int(timeout_s * 1000),
            reconnect_backoff_max_ms=1000,
            **self.security,
        )
        try:
            if not consumer.partitions_for_topic(self.topic):
                return None
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            end = consumer.end_offsets([tp])[tp]
            begin = consumer.beginning_offsets([tp])[tp]
            if end <= begin:
                return None
            for start in (max(begin, end - tail), begin):
                found = self._scan(consumer, tp, start, end, timeout_s)
                if found is not None or start == begin:
                    return found
            return None
        finally:
            consumer.close()

    def _scan(
        self, consumer: KafkaConsumer, tp: TopicPartition, start: int, end: int, timeout_s: float
    ) -> tuple[bytes, int] | None:
        consumer.seek(tp, start)
        best: tuple[bytes, int] | None = None
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                # Not "no checkpoint": the caller must not start from nothing
                # (and later overwrite a good checkpoint) because Kafka was slow.
                raise KafkaTimeoutError(f"reading {self.topic} took over {timeout_s:.0f} s")
            for rec in consumer.poll(timeout_ms=500).get(tp, []):
                if rec.key == self.key and rec.value:
                    gv = dict(rec.headers or []).get("gv", b"-1")
                    best = (rec.value, int(gv))
        return best

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
            self._producer = None
