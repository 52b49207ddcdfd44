"""Step 5 of the loop: commit the batch's Kafka offsets, only after its
effects are durable in Redis (and its dead letters in Kafka).

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
