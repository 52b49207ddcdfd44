"""Step 5 of the loop: commit the batch's Kafka offsets, only after its
effects are durable in Redis (and its dead letters in Kafka).

:class:`Offsets` owns the offsets (the batch's, and the newest written per
partition) and the order, in numbered steps checked in code:

1. ``polled(records)``: the batch's offsets (one past the highest record);
2. ``written()``: its users and statistics are in Redis;
3. ``flushed()``: its dead letters are durable in Kafka;
4. ``commit()``: only now are its offsets committed (sent), and kept as the
   newest written for the shutdown commit and for a revocation.

A step out of order raises :class:`OrderError` (a bug, never an outage).

In the steady loop the commit is *sent* after the write but not waited for
(``commit_async``): a sync commit cost ~10 ms per batch on the freshness path.
Waiting adds no safety here, because the stored per-user offsets already make
a re-read harmless: if the process dies before the broker acknowledged, the
batch is re-read and skipped. What matters is that a commit is never sent
before the write, and that is the loop's order. On shutdown the newest
written offsets are committed synchronously, so a clean restart re-reads
nothing. When partitions are revoked they are sent from the rebalance
listener (kafka-python 3 refuses a blocking commit there), ahead of the
re-join.

Why this order is safe:

* Crash **before** the Redis write: nothing was written, nothing committed;
  the batch is read again and applied once.
* Crash **between** the Redis write and the commit: the batch is read again;
  every event at or below a user's stored (partition, offset) is skipped, so
  the replay changes nothing (and adds no global statistics, which were
  written in the same transaction as the user records).
* Commit rejected because the group rebalanced meanwhile: same as the
  previous case for whoever now owns the partition.

The reverse order (commit, then write) would lose the batch on a crash in
between; auto-commit would do that at random, so it is off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, IllegalStateError
from kafka.structs import OffsetAndMetadata

log = logging.getLogger(__name__)


def next_offsets(records: list[Any]) -> dict[TopicPartition, int]:
    """Per partition, the offset to commit: one past the highest record seen."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        if r.offset + 1 > out.get(tp, -1):
            out[tp] = r.offset + 1
    return out


def commit_offsets(consumer: KafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
    """Synchronous commit. Returns False when the group moved on (a rebalance
    took the partitions): that is safe, see the module docstring. Other Kafka
    errors propagate to the caller's retry loop."""
    if not offsets:
        return True
    try:
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        return True
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning(
            "offset commit rejected (partitions moved to another worker); the new owner "
            "re-reads these records and skips what this worker already wrote",
            extra={
                "offsets": {f"{tp.topic}:{tp.partition}": o for tp, o in offsets.items()},
                "error": repr(exc)[:200],
            },
        )
        return False


def commit_offsets_async(
    consumer: KafkaConsumer, offsets: dict[TopicPartition, int], on_failure: Any = None
) -> None:
    """Send the commit; a failure is logged (and reported to ``on_failure``)
    and is harmless: a later commit covers it, and a re-read is skipped."""
    if not offsets:
        return

    def done(_offsets: Any, response: Any) -> None:
        if isinstance(response, Exception):
            log.warning(
                "async offset commit failed; a later commit covers it",
                extra={"error": repr(response)[:200]},
            )
            if on_failure is not None:
                on_failure(response)

    consumer.commit_async(
        {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}, callback=done
    )


class OrderError(RuntimeError):
    """A commit step out of order: committing before the batch's effects are
    durable could lose it on a crash."""


class Offsets:
    """The worker's offsets: those of the batch in hand, and the newest
    written and not yet committed synchronously, per partition.

    >>> class R:
    ...     def __init__(self, p, o): self.topic, self.partition, self.offset = "t", p, o
    >>> class C:
    ...     def commit_async(self, offsets, callback=None): print(sorted((tp.partition, om.offset) for tp, om in offsets.items()))
    >>> off = Offsets(C())
    >>> off.polled([R(0, 4), R(1, 9), R(0, 7)])
    >>> off.commit()
    Traceback (most recent call last):
    ...
    streamer.service.offsets.OrderError: commit before the batch was written
    >>> off.written(); off.flushed(); _ = off.commit()
    [(0, 8), (1, 10)]
    """

    POLLED, WRITTEN, FLUSHED = 1, 2, 3

    def __init__(
        self, consumer: Any, on_failure: Callable[[Exception], None] | None = None
    ) -> None:
        self.consumer = consumer
        self.on_failure = on_failure
        self.batch: dict[TopicPartition, int] = {}
        self.step = 0  # 0: no batch in hand
        self.written_offsets: dict[TopicPartition, int] = {}  # newest, effects in Redis

    # 1. the batch in hand
    def polled(self, records: list[Any]) -> None:
        if self.step not in (0, self.FLUSHED):
            raise OrderError("a new batch before the previous one was committed")
        self.batch, self.step = next_offsets(records), self.POLLED

    # 2. its effects are in Redis
    def written(self) -> None:
        if self.step != self.POLLED:
            raise OrderError("a write without a polled batch")
        self.step = self.WRITTEN

    # 3. its dead letters are durable
    def flushed(self) -> None:
        if self.step != self.WRITTEN:
            raise OrderError("dead letters flushed before the batch was written")
        self.step = self.FLUSHED

    # 4. commit (sent without waiting; see the module docstring)
    def commit(
        self, hold: Callable[[TopicPartition], bool] | None = None
    ) -> dict[TopicPartition, int]:
        """Commit the batch's offsets, except those of partitions ``hold``
        says to keep (being rebuilt); returns what was sent."""
        if self.step == self.POLLED:
            raise OrderError("commit before the batch was written")
        if self.step == self.WRITTEN:
            raise OrderError("commit before the batch's dead letters were flushed")
        offsets = {tp: o for tp, o in self.batch.items() if hold is None or not hold(tp)}
        self.batch, self.step = {}, 0
        self.written_offsets.update(offsets)
        commit_offsets_async(self.consumer, offsets, on_failure=self.on_failure)
        return offsets

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions that replay (their Redis lost its data): nothing of them
        is committed from here; the replay writes them again."""
        for tp in partitions:
            self.written_offsets.pop(tp, None)

    def revoked(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """The commit of what was written of the revoked partitions, sent (the
        rebalance listener must not block); returns it."""
        offsets = {tp: o for tp, o in self.written_offsets.items() if tp in partitions}
        self.forget(offsets)
        commit_offsets_async(self.consumer, offsets, on_failure=self.on_failure)
        return offsets

    def commit_written(self) -> bool:
        """Synchronously commit the newest written offsets (shutdown)."""
        offsets, self.written_offsets = self.written_offsets, {}
        return commit_offsets(self.consumer, offsets)
