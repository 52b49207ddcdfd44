"""poll_batch survives a retriable error raised out of consumer.poll() (kafka-python 3
raises a lost coordinator connection there during a broker restart; the worker
used to die of it): the batch closes with what it holds. Unit test: a stand-in
consumer; the real broker restart is tests/test_stream_kafka_outage.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from streamer.service.event_batch import RebalanceTracker, poll_batch


class _Consumer:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[str]]:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_a_retriable_poll_error_closes_the_batch_with_what_it_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tp = TopicPartition("t", 0)
    consumer = _Consumer([{tp: ["r1", "r2"]}, KafkaConnectionError("111 ECONNREFUSED")])
    with caplog.at_level(logging.WARNING, logger="streamer.service.event_batch"):
        got = poll_batch(
            consumer, RebalanceTracker(), max_events=10, max_age_ms=10_000, idle_ms=10_000
        )  # type: ignore[arg-type]
    assert got == ["r1", "r2"]
    assert any("poll failed" in r.getMessage() for r in caplog.records)
    consumer = _Consumer([KafkaConnectionError("111 ECONNREFUSED")])
    assert (
        poll_batch(consumer, RebalanceTracker(), max_events=10, max_age_ms=50, idle_ms=10_000) == []
    )  # type: ignore[arg-type]


def test_a_non_retriable_poll_error_still_raises() -> None:
    consumer = _Consumer([TopicAuthorizationFailedError()])
    with pytest.raises(TopicAuthorizationFailedError):
        poll_batch(consumer, RebalanceTracker(), max_events=10, max_age_ms=50, idle_ms=10_000)  # type: ignore[arg-type]
