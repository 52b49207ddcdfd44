"""DeadLetterSink without a broker (a fake producer): too large to produce
whole -> reduced, whether the client refuses at send or the broker at flush;
any other failed send raises from flush and is sent again."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from streamer.event import InvalidEvent
from streamer.service.dead_letter import DeadLetterSink
from streamer.service.metrics import StreamMetrics


class _Future:
    def __init__(self, exc: BaseException | None) -> None:
        self.is_done = True
        self.exception = exc

    def failed(self) -> bool:
        return self.exception is not None


class _Producer:
    """Refuses at send() what exceeds ``client_max``; fails at flush the
    sends listed in ``fail_next`` (by value length), once each."""

    def __init__(
        self, client_max: int = 1 << 30, fail_next: dict[int, BaseException] | None = None
    ) -> None:
        self.client_max = client_max
        self.fail_next = dict(fail_next or {})
        self.sent: list[dict[str, Any]] = []

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> _Future:
        size = len(key or b"") + len(value or b"")
        if size > self.client_max:
            raise MessageSizeTooLargeError(f"The message is {size} bytes")
        self.sent.append({"key": key, "value": value, "headers": dict(headers)})
        return _Future(self.fail_next.pop(len(value or b""), None))

    def flush(self, timeout: float | None = None) -> None:
        pass


class _Rec:
    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self.key, self.value = key, value
        self.topic, self.partition, self.offset, self.timestamp = "t", 2, 41, 7


ERR = InvalidEvent("payload_too_large", "big")


def test_small_dead_letters_are_copied_whole() -> None:
    p = _Producer()
    sink = DeadLetterSink(p, "t.dlq", StreamMetrics())  # type: ignore[arg-type]
    sink.send(_Rec(b"k", b"v" * 10), ERR)
    sink.flush()
    assert (
        p.sent[0]["value"] == b"v" * 10
        and "truncated" not in p.sent[0]["headers"]
        and sink.pending == 0
    )


def test_over_the_setting_is_reduced_before_sending() -> None:
    p, m = _Producer(), StreamMetrics()
    sink = DeadLetterSink(p, "t.dlq", m, max_record_bytes=10_000, prefix_bytes=100)  # type: ignore[arg-type]
    sink.send(_Rec(b"k" * 300, b"v" * 20_000), ERR)
    sink.flush()
    (d,) = p.sent
    assert d["value"] == b"v" * 100 and d["key"] == b"k" * 100
    h = d["headers"]
    assert (h["truncated"], h["original_value_bytes"], h["original_key_bytes"]) == (
        b"1",
        b"20000",
        b"300",
    )
    assert (h["source_partition"], h["source_offset"], h["error"]) == (
        b"2",
        b"41",
        b"payload_too_large",
    )
    assert m.dead_letters_reduced.get() == 1 and m.invalid.get("payload_too_large") == 1


def test_client_refusal_at_send_is_reduced() -> None:
    p = _Producer(client_max=5000)
    sink = DeadLetterSink(p, "t.dlq", StreamMetrics(), prefix_bytes=64)  # type: ignore[arg-type]
    sink.send(_Rec(b"k", b"v" * 6000), ERR)  # under the setting, over the client's limit
    sink.flush()
    assert [len(d["value"]) for d in p.sent] == [64]


def test_broker_refusal_at_flush_is_sent_again_reduced() -> None:
    p = _Producer(fail_next={6000: MessageSizeTooLargeError("MESSAGE_SIZE_TOO_LARGE")})
    sink = DeadLetterSink(p, "t.dlq", StreamMetrics(), prefix_bytes=64)  # type: ignore[arg-type]
    sink.send(_Rec(b"k", b"v" * 6000), ERR)
    sink.flush()
    assert [len(d["value"]) for d in p.sent] == [6000, 64] and sink.pending == 0


def test_other_failures_raise_and_are_sent_again() -> None:
    p = _Producer(fail_next={10: KafkaTimeoutError("no ack")})
    sink = DeadLetterSink(p, "t.dlq", StreamMetrics())  # type: ignore[arg-type]
    sink.send(_Rec(b"k", b"v" * 10), ERR)
    with pytest.raises(KafkaTimeoutError):
        sink.flush()
    assert sink.pending == 1  # re-sent, not yet confirmed
    sink.flush()
    assert sink.pending == 0 and [len(d["value"]) for d in p.sent] == [10, 10]


def test_learner_payloads_go_through_the_same_sink() -> None:
    p = _Producer()
    sink = DeadLetterSink(p, "t.dlq", StreamMetrics(), max_record_bytes=5000, prefix_bytes=10)  # type: ignore[arg-type]
    sink.send_raw(b"x" * 9000, [("error", b"unreadable_stats")])
    sink.flush()
    assert p.sent[0]["value"] == b"x" * 10 and p.sent[0]["headers"]["truncated"] == b"1"
