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
| `truncated`        | only on a *reduced* dead letter (below): `1`   |
| `original_key_bytes`, `original_value_bytes` | only on a reduced one: the original sizes |

**Reduced dead letters.** A record close to the broker's maximum message size
cannot be copied into another topic with headers added: the copy is too large
to produce (``MessageSizeTooLargeError``, which used to stop the worker on
every restart). When the copy would exceed ``max_record_bytes``, or the broker
refuses it as too large, the dead letter is *reduced*: the first
``prefix_bytes`` of key and value, the headers above with ``truncated=1`` and
the original sizes; topic, partition and offset still point at the original.

Sends are asynchronous; the loop calls :meth:`DeadLetterSink.flush` before it
commits offsets (step 5), so an invalid event is never committed without its
dead-letter copy being durable: ``flush`` checks every send's outcome (the
client's own flush does not raise for a failed send), re-sends a too-large one
reduced and raises on any other failure, keeping the failed ones to send again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from streamer.event import InvalidEvent
from streamer.service.metrics import StreamMetrics

log = logging.getLogger(__name__)


def dead_letter_headers(
    record: Any, err: InvalidEvent, failed_at_ms: int
) -> list[tuple[str, bytes]]:
    return [
        ("error", err.reason.encode()),
        ("error_detail", err.detail.encode("utf-8", "replace")[:1000]),
        ("source_topic", str(record.topic).encode()),
        ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
        ("source_timestamp", str(record.timestamp).encode()),
        ("failed_at", str(failed_at_ms).encode()),
    ]


_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
_HEADROOM = 1024  # record and batch framing around key, value and headers


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(k) + len(v) + 8 for k, v in headers)
        + _HEADROOM
    )


def reduced_headers(
    headers: list[tuple[str, bytes]], key: bytes | None, value: bytes | None
) -> list[tuple[str, bytes]]:
    return [
        *headers,
        ("truncated", b"1"),
        ("original_key_bytes", str(len(key or b"")).encode()),
        ("original_value_bytes", str(len(value or b"")).encode()),
    ]


class _Raw:
    """What ``_send`` reads of a record, for a payload that is not one."""

    def __init__(self, value: bytes) -> None:
        self.key, self.value = None, value
        self.topic, self.partition, self.offset = "", -1, -1


class DeadLetterSink:
    """The error policy for invalid events: dead-letter, log, count, go on."""

    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        metrics: StreamMetrics,
        max_record_bytes: int = 1_000_000,
        prefix_bytes: int = 1024,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.max_record_bytes = max_record_bytes
        self.prefix_bytes = prefix_bytes
        self.sent: list[
            tuple[Any, Any, list[tuple[str, bytes]], bool]
        ] = []  # (future, record, headers, reduced)

    @property
    def pending(self) -> int:
        return len(self.sent)

    def send(self, record: Any, err: InvalidEvent) -> None:
        now = int(time.time() * 1000)
        headers = dead_letter_headers(record, err, now)
        self._send(
            record, headers, reduce=_size(record.key, record.value, headers) > self.max_record_bytes
        )
        self.metrics.invalid.inc(label=err.reason)
        log.warning(
            "invalid event sent to the dead-letter topic",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reason": err.reason,
                "detail": err.detail[:200],
                "dlq_topic": self.topic,
            },
        )

    def send_raw(self, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """A dead letter that is no Kafka record (the learner's quarantined statistics)."""
        self._send(_Raw(value), headers, reduce=_size(None, value, headers) > self.max_record_bytes)

    def _send(self, record: Any, headers: list[tuple[str, bytes]], reduce: bool) -> None:
        key, value = record.key, record.value
        if not reduce:
            try:
                future = self.producer.send(self.topic, key=key, value=value, headers=headers)
            except _TOO_LARGE:  # the client's own size check, before anything is sent
                reduce = True
        if reduce:
            cut = self.prefix_bytes
            future = self.producer.send(
                self.topic,
                key=None if key is None else key[:cut],
                value=None if value is None else value[:cut],
                headers=reduced_headers(headers, key, value),
            )
            self.metrics.dead_letters_reduced.inc()
            log.warning(
                "dead letter too large to produce whole; sent reduced (a prefix, with the original's position)",
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "key_bytes": len(key or b""),
                    "value_bytes": len(value or b""),
                },
            )
        self.sent.append((future, record, headers, reduce))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every dead-letter record is acknowledged. One the broker
        refused as too large is sent again reduced; any other failure raises
        (``KafkaError``: the caller retries) and the failed ones are sent again."""
        while self.sent:
            self.producer.flush(timeout=timeout_s)
            sent, self.sent = self.sent, []
            failed: list[tuple[Any, Any, list[tuple[str, bytes]], bool]] = []
            for future, record, headers, reduced in sent:
                if not future.is_done:  # not after a flush that returned; kept to be safe
                    self.sent.append((future, record, headers, reduced))
                elif future.failed():
                    exc = future.exception
                    if isinstance(exc, _TOO_LARGE) and not reduced:
                        self._send(record, headers, reduce=True)
                    else:
                        failed.append((future, record, headers, reduced))
            if failed:
                for _f, record, headers, reduced in failed:
                    self._send(record, headers, reduce=reduced)
                first = failed[0][0].exception
                raise (
                    first
                    if isinstance(first, KafkaError)
                    else KafkaError(f"dead-letter send failed: {first!r}")
                )
