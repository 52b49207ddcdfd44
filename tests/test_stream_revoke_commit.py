"""On revocation the worker sends the commit of what it wrote for the revoked
partitions, and only those: kafka-python 3 refuses a blocking commit inside
the rebalance listener (it runs on the client's I/O thread), so the listener
must not block. The real hand-over is covered end to end by
tests/test_stream_two_workers.py."""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition

from streamer.service.metrics import StreamMetrics
from streamer.service.offsets import Offsets, OrderError
from streamer.service.worker import Worker

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


class RecordingConsumer:
    def __init__(self) -> None:
        self.async_commits: list[dict[TopicPartition, int]] = []

    def commit_async(self, offsets: dict[TopicPartition, Any], callback: Any = None) -> None:
        self.async_commits.append({tp: om.offset for tp, om in offsets.items()})

    def commit(self, offsets: Any = None, timeout_ms: Any = None) -> None:
        raise RuntimeError(
            "Cannot block on net.run() from the IO thread itself."
        )  # as kafka-python 3 does


def _worker() -> tuple[Worker, RecordingConsumer]:
    w = Worker.__new__(Worker)  # no connections: only the revoke path is exercised
    w.metrics = StreamMetrics()
    w.consumer = consumer = RecordingConsumer()
    w.offsets = Offsets(consumer)
    w.offsets.written_offsets = {P0: 120, P1: 57}
    return w, consumer


def test_revoke_sends_the_commit_of_the_revoked_partitions_only() -> None:
    w, consumer = _worker()
    w._commit_revoked({P0})
    assert consumer.async_commits == [{P0: 120}]
    assert w.offsets.written_offsets == {P1: 57}  # still this worker's, committed later


def test_revoke_of_partitions_with_nothing_written_sends_nothing() -> None:
    w, consumer = _worker()
    w._commit_revoked({TopicPartition("t", 3)})
    assert consumer.async_commits == []
    assert w.offsets.written_offsets == {P0: 120, P1: 57}


class _Record:
    def __init__(self, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = "t", partition, offset


def test_offsets_commit_only_after_write_and_flush() -> None:
    consumer = RecordingConsumer()
    off = Offsets(consumer)
    off.polled([_Record(0, 4), _Record(1, 9)])
    for early in (off.commit, off.flushed):
        try:
            early()
        except OrderError:
            pass
        else:
            raise AssertionError(f"{early.__name__} before the write was accepted")
    off.written()
    try:
        off.commit()
    except OrderError:
        pass
    else:
        raise AssertionError("commit before the dead-letter flush was accepted")
    assert consumer.async_commits == []
    off.flushed()
    assert off.commit(hold=lambda tp: tp == P1) == {P0: 5}  # P1 is being rebuilt
    assert consumer.async_commits == [{P0: 5}]
    assert off.written_offsets == {P0: 5}
    off.forget([P0])
    assert off.written_offsets == {}
