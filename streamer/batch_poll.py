"""Step 1 of the loop: poll a minibatch that closes on size or on age.

The batch closes when it holds ``max_events`` records, or ``max_age_ms`` after
its first record arrived (so an event waits at most that long before it is
processed, which bounds freshness at low rates), whichever comes first. An
idle stream returns an empty batch every ``idle_ms`` so the loop can handle
signals, leases and health.

Rebalances happen inside ``consumer.poll``. The listener records revoked
partitions; records of a revoked partition that are still in the open batch
are dropped (not processed, not committed): the partition's new owner reads
them from the last committed offset. Everything this worker already wrote was
committed at the end of its batch, so nothing is lost, and the per-user stored
offsets make a re-read of anything written-but-uncommitted a no-op.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


class RebalanceTracker(ConsumerRebalanceListener):
    def __init__(self, before_revoke: Any = None) -> None:
        self.before_revoke = before_revoke  # commits what was written, synchronously
        self.revoked: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = set()
        self.generation = 0

    def on_partitions_revoked(self, revoked: Any) -> None:
        if self.before_revoke is not None and revoked:
            try:
                self.before_revoke(set(revoked))
            except Exception as exc:  # the stored offsets make a re-read safe anyway
                log.warning("commit on revoke failed", extra={"error": repr(exc)[:200]})
        self.revoked |= set(revoked)
        self.assigned -= set(revoked)
        self.generation += 1
        log.info("partitions revoked", extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in revoked)})

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned |= set(assigned)
        self.revoked -= set(assigned)
        self.generation += 1
        log.info("partitions assigned", extra={"partitions": sorted(f"{t.topic}:{t.partition}" for t in assigned)})


def poll_batch(
    consumer: KafkaConsumer,
    tracker: RebalanceTracker,
    max_events: int,
    max_age_ms: int,
    idle_ms: int,
) -> tuple[list[Any], int]:
    """Return (records in partition-offset order per partition, dropped count)."""
    records: list[Any] = []
    start = time.monotonic()
    deadline: float | None = None  # set when the first record arrives
    gen = tracker.generation
    while len(records) < max_events:
        now = time.monotonic()
        remaining = idle_ms / 1000 - (now - start) if deadline is None else deadline - now
        if remaining <= 0:
            break
        got = consumer.poll(timeout_ms=max(1, int(remaining * 1000)), max_records=max_events - len(records))
        for recs in got.values():
            records.extend(recs)
        if records and deadline is None:
            deadline = time.monotonic() + max_age_ms / 1000
    dropped = 0
    if tracker.generation != gen and records:
        # A rebalance ran inside poll(): keep only records of partitions we still own.
        keep = [r for r in records if TopicPartition(r.topic, r.partition) in tracker.assigned]
        dropped = len(records) - len(keep)
        if dropped:
            log.info("dropped in-flight records of revoked partitions", extra={"dropped": dropped})
        records = keep
    return records, dropped
