"""The dead-letter topic: where events that break the contract go.

A dead-letter record keeps the original key and value bytes untouched (so it
can be inspected or re-driven after a producer fix) and says in its headers
why it was rejected, where it came from and when:

| header             | value                                        |
|--------------------|----------------------------------------------|
| `error`            | reason code, one of ``streamer.event.REASONS`` |
| `error_detail`     | human-readable detail                        |
| `source_topic`     | topic of the original record                 |
| `source_partition` | its partition (decimal text)                 |
| `source_offset`    | its offset (decimal text)                    |
| `source_timestamp` | its Kafka timestamp, epoch ms (decimal text) |
| `failed_at`        | when it was rejected, epoch ms (decimal text) |

Sends are asynchronous; the loop calls :meth:`DeadLetterSink.flush` before it
commits offsets (step 5), so an invalid event is never committed without its
dead-letter copy being durable.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import KafkaProducer

from streamer.event import InvalidEvent
from streamer.metrics import StreamMetrics

log = logging.getLogger(__name__)


def dead_letter_headers(record: Any, err: InvalidEvent, failed_at_ms: int) -> list[tuple[str, bytes]]:
    return [
        ("error", err.reason.encode()),
        ("error_detail", err.detail.encode("utf-8", "replace")[:1000]),
        ("source_topic", str(record.topic).encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
        ("source_timestamp", str(record.timestamp).encode()),
        ("failed_at", str(failed_at_ms).encode()),
    ]


class DeadLetterSink:
    """The error policy for invalid events: dead-letter, log, count, go on."""

    def __init__(self, producer: KafkaProducer, topic: str, metrics: StreamMetrics) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.pending = 0

    def send(self, record: Any, err: InvalidEvent) -> None:
        now = int(time.time() * 1000)
        self.producer.send(
            self.topic, key=record.key, value=record.value, headers=dead_letter_headers(record, err, now)
        )
        self.pending += 1
        self.metrics.invalid.inc(label=err.reason)
        log.warning(
            "invalid event sent to the dead-letter topic",
            extra={
                "topic": record.topic, "partition": record.partition, "offset": record.offset,
                "reason": err.reason, "detail": err.detail[:200], "dlq_topic": self.topic,
            },
        )  # fmt: skip

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every dead-letter record is acknowledged (raises on failure)."""
        if self.pending:
            self.producer.flush(timeout=timeout_s)
            self.pending = 0
