"""``--stop-when-idle-s`` stops a worker only once every assigned partition is
read to its end: idle alone is not enough (after a rebalance a worker can sit
idle for seconds while its new partitions still hold unread events)."""

from __future__ import annotations

from types import SimpleNamespace

from kafka import TopicPartition

from streamer.service.worker import Worker

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


class FakeConsumer:
    def __init__(self, highwater: dict, position: dict) -> None:
        self.hw, self.pos = highwater, position

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.hw.get(tp)

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
        if tp not in self.pos:
            raise RuntimeError("position unknown right after a rebalance")
        return self.pos[tp]


def _worker(assigned: set, highwater: dict, position: dict) -> Worker:
    w = Worker.__new__(Worker)  # no connections: only the catch-up check is exercised
    w.tracker = SimpleNamespace(assigned=assigned)
    w.consumer = FakeConsumer(highwater, position)
    return w


def test_caught_up_only_when_every_partition_is_read_to_its_end() -> None:
    assert _worker({P0, P1}, {P0: 10, P1: 5}, {P0: 10, P1: 5})._caught_up()
    assert not _worker({P0, P1}, {P0: 10, P1: 5}, {P0: 10, P1: 3})._caught_up()


def test_not_caught_up_without_partitions_or_with_unknown_positions() -> None:
    assert not _worker(set(), {}, {})._caught_up()  # nothing assigned yet
    assert not _worker({P0}, {P0: 10}, {})._caught_up()  # position unknown
    assert not _worker({P0}, {}, {P0: 4})._caught_up()  # high watermark unknown
