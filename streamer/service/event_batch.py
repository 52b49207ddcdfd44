"""Step 1 of the loop: poll a minibatch that closes on size or on age.

The batch closes when it holds ``max_events`` records, or ``max_age_ms`` after
its first record arrived (so an event waits at most that long before it is
processed, which bounds freshness at low rates), whichever comes first. An
idle stream returns an empty batch every ``idle_ms`` so the loop can handle
signals, leases and health.

Rebalances: records of the open batch are never dropped, even when their
partition was revoked while the batch filled. Dropping them was unsafe with
kafka-python 3, whose rebalance callbacks run on its I/O thread: when poll()
returned, the tracker could show a partition revoked that was being assigned
straight back, the consumer's position for it had already moved past the
dropped records, and the next commit skipped them for good (a two-worker test
lost 29 of 6,000 events about one run in three). Processing them instead is
safe: if the partition's new owner reads them too, whoever writes second
either skips them (at or below the user's stored offset) or is fenced by the
write script (``WriteConflict``: re-read, then skip), so every event counts
exactly once.

Kafka unreachable: kafka-python 3 may raise a retriable error (a lost
connection while it looks up the group coordinator) out of ``poll()``. The
batch then closes with what it holds (nothing is lost: records of the batch
are processed, and nothing was committed past them), and the next poll tries
again; the worker does not die of a broker restart.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

log = logging.getLogger(__name__)


class RebalanceTracker(ConsumerRebalanceListener):
    def __init__(self, before_revoke: Any = None) -> None:
        self.before_revoke = before_revoke  # sends the commit of what was written
        self.assigned: set[TopicPartition] = set()
        self.generation = 0

    def on_partitions_revoked(self, revoked: Any) -> None:
        if self.before_revoke is not None and revoked:
            try:
                self.before_revoke(set(revoked))
            except Exception as exc:  # the stored offsets make a re-read safe anyway
                log.warning("commit on revoke failed", extra={"error": repr(exc)[:200]})
        self.assigned -= set(revoked)
        self.generation += 1
        log.info(
            "partitions revoked",
            extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in revoked)},
        )

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned |= set(assigned)
        self.generation += 1
        log.info(
            "partitions assigned",
            extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in assigned)},
        )


def poll_batch(
    consumer: KafkaConsumer,
    tracker: RebalanceTracker,
    max_events: int,
    max_age_ms: int,
    idle_ms: int,
) -> list[Any]:
    """Return the batch's records, in partition-offset order per partition."""
    records: list[Any] = []
    start = time.monotonic()
    deadline: float | None = None  # set when the first record arrives
    gen = tracker.generation
    while len(records) < max_events:
        now = time.monotonic()
        remaining = idle_ms / 1000 - (now - start) if deadline is None else deadline - now
        if remaining <= 0:
            break
        try:
            got = consumer.poll(
                timeout_ms=max(1, int(remaining * 1000)), max_records=max_events - len(records)
            )
        except KafkaError as exc:
            if not exc.retriable:
                raise
            log.warning(
                "poll failed (Kafka unreachable?); closing the batch, the next poll retries",
                extra={"records": len(records), "error": repr(exc)[:200]},
            )
            if not records:  # an error that comes at once must not make the loop spin
                time.sleep(min(max(remaining, 0.0), 1.0))
            break
        for recs in got.values():
            records.extend(recs)
        if records and deadline is None:
            deadline = time.monotonic() + max_age_ms / 1000
    if tracker.generation != gen and records:
        moved = sum(
            1 for r in records if TopicPartition(r.topic, r.partition) not in tracker.assigned
        )
        if moved:
            log.info(
                "rebalance while the batch filled: keeping its records of revoked partitions "
                "(stored offsets and the write fence make a double read harmless)",
                extra={"records": moved},
            )
    return records
