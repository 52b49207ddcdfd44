"""The epoch marker's decisions (streamer/service/rebuild.py) against the real Redis,
with a stand-in for the Kafka consumer (which partitions were committed,
where the replay starts and ends, where the consumer stands)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka import TopicPartition
from kafka.structs import OffsetAndTimestamp

from streamer.service.rebuild import Rebuild, marker_key

T = "events"
P0, P1 = TopicPartition(T, 0), TopicPartition(T, 1)


@dataclass
class FakeConsumer:
    committed_at: dict[TopicPartition, int | None] = field(default_factory=dict)
    ends: dict[TopicPartition, int] = field(default_factory=lambda: {P0: 100, P1: 50})
    starts: dict[TopicPartition, int] = field(default_factory=lambda: {P0: 10, P1: 0})
    positions: dict[TopicPartition, int] = field(default_factory=dict)

    def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_at.get(tp)

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in tps}

    def offsets_for_times(
        self, ts: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp]:
        return {tp: OffsetAndTimestamp(self.starts[tp], 0, -1) for tp in ts}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
        return self.positions.get(tp, 0)


def test_never_consumed_partitions_are_marked_without_replay(redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    c = FakeConsumer()
    rb = Rebuild(redis_client, key_prefix, c, 3_600_000)
    assert rb.check({P0, P1}) == set() and not rb.active and c.positions == {}
    assert set(redis_client.hkeys(marker_key(key_prefix))) == {b"epoch", b"events:0", b"events:1"}


def test_a_loss_while_running_replays_every_partition_then_marks_them(
    redis_client, key_prefix
) -> None:  # type: ignore[no-untyped-def]
    c = FakeConsumer(committed_at={P0: 90, P1: 40})
    rb = Rebuild(redis_client, key_prefix, c, 3_600_000)
    rb.check({P0, P1})  # fresh Redis, no learner: these were consumed before -> rebuilt
    assert rb.targets == {P0: 100, P1: 50} and c.positions == {P0: 10, P1: 0}
    c.positions = {P0: 100, P1: 50}
    assert sorted(rb.progress()) == [P0, P1] and not rb.active
    first = redis_client.hget(marker_key(key_prefix), "epoch")
    redis_client.delete(marker_key(key_prefix))  # Redis lost its data
    assert rb.check({P0, P1}) == {P0, P1}
    assert redis_client.hget(marker_key(key_prefix), "epoch") not in (None, first)
    assert rb.targets == {P0: 100, P1: 50} and rb.holds(P0)
    assert rb.replaying([(0, 99)], T) and not rb.replaying([(0, 100)], T)
    c.positions[P1] = 50
    assert rb.progress() == [P1] and rb.holds(P0) and not rb.holds(P1)


def test_a_vanished_partition_field_rebuilds_that_partition_only(redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    c = FakeConsumer()
    rb = Rebuild(redis_client, key_prefix, c, 3_600_000)
    rb.check({P0, P1})
    redis_client.hdel(marker_key(key_prefix), "events:1")
    assert rb.check({P0, P1}) == {P1} and set(rb.targets) == {P1}


def test_a_redis_written_before_the_marker_existed_is_not_replayed(
    redis_client, key_prefix
) -> None:  # type: ignore[no-untyped-def]
    redis_client.hset(f"{key_prefix}:learner", mapping={"ckpt": b"x", "last_id": "0-0"})
    c = FakeConsumer(committed_at={P0: 90, P1: 40})
    rb = Rebuild(redis_client, key_prefix, c, 3_600_000)
    assert rb.check({P0, P1}) == set() and c.positions == {}


def test_a_reset_by_hpmf_rebuild_is_replayed_by_a_worker_started_later(
    redis_client, key_prefix
) -> None:  # type: ignore[no-untyped-def]
    """`hpmf rebuild` leaves a new token and no partition marked; a learner
    checkpoint is there, yet the partitions are replayed (not an upgrade)."""
    redis_client.hset(f"{key_prefix}:learner", mapping={"ckpt": b"x", "last_id": "0-0"})
    redis_client.hset(marker_key(key_prefix), "epoch", "reset-by-operator")
    c = FakeConsumer(committed_at={P0: 90, P1: 40})
    rb = Rebuild(redis_client, key_prefix, c, 3_600_000)
    assert rb.check({P0, P1}) == {P0, P1}
