"""Losing Redis loses nothing: detect that Redis lost its data and rebuild
the users from Kafka (issue 14, item 3).

Redis is a cache of what Kafka holds. If it restarts empty (no persistence,
a failover to an empty replica, an operator's FLUSHALL), the worker used to
go on as if nothing happened: every user looked new, their next events were
applied on top of nothing and committed, and the earlier ones were lost for
good (12,877 of 24,995 users gone in the issue's run).

**The marker.** ``{prefix}:epoch`` is a HASH that only this service writes
and that never expires: field ``epoch`` is a random token created by the
first worker that finds the hash missing, and one field per partition
(``<topic>:<partition>``) says "this Redis holds every user of that
partition" (the value is the epoch ms at which that became true). The
marker disappears exactly when Redis loses its data; ``hpmf rebuild``
replaces it on purpose with a new token and no partition marked.

**Detection.** Each worker reads the marker after every batch write and
before that batch's commit (one HMGET), and after every change of its
partitions. An ``epoch`` other than the one it knows, or a missing field of
a partition it had marked, means the Redis it wrote to is gone. The check
runs *after* the write so that a loss at any moment since the previous
check is seen before anything is committed; the users the batch wrote into
the empty Redis hold only that batch's events, so they are deleted again.

**Rebuild.** The worker stops committing the affected partitions, seeks each
to the first offset whose timestamp is within the user TTL
(``offsets_for_times(now - user_ttl_s)``: a user whose last event is older
would have expired anyway) and replays up to the end offset it saw when the
loss was detected. Replayed events update users exactly as the first time
(a user's events are applied in offset order; what was already rebuilt is
skipped by the stored offsets, so a rebuild interrupted by a crash or a
rebalance just starts again). They add **no** global statistics: the globals
come back from the learner's durable checkpoint
(:mod:`streamer.service.checkpoint_topic`), which already holds what those events
taught it, up to one checkpoint interval. When a partition's replay reaches
its target its marker field is written and committing resumes. ``/readyz``
answers 503 while any partition is rebuilding (``hpmf_stream_rebuilding``
counts them).

**Fresh partitions.** A partition with no marker field and no committed
offset in the consumer group has never been processed: it is marked at once
and consumed from ``auto_offset_reset`` as before, with global statistics.

**Upgrades.** A Redis written by a version without the marker has no marker
but does have the learner's hash (``{prefix}:learner``): a worker whose first
check finds that marks its partitions instead of replaying a TTL's worth of
the topic. (After a real loss the learner's hash comes back only when a
learner republishes, seconds after the workers' checks, which run at least
once a second, have created a new epoch.)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable

import redis
from kafka import KafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


def marker_key(prefix: str) -> str:
    return f"{prefix}:epoch"


def partition_field(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


class Rebuild:
    """The marker check and the replay state of one worker's partitions."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        consumer: KafkaConsumer,
        replay_ms: int,
        before_replay: Callable[[], object] | None = None,
    ) -> None:
        self.r = client
        self.before_replay = before_replay  # e.g. restore the forget markers from Kafka
        self.key = marker_key(prefix)
        self.learner_key = f"{prefix}:learner"
        self.consumer = consumer
        self.replay_ms = replay_ms
        self.epoch: bytes | None = None  # the marker's token as this worker knows it
        self.ready: set[TopicPartition] = set()  # marked: this Redis holds the partition's users
        self.targets: dict[TopicPartition, int] = {}  # rebuilding: replay up to this offset
        self.rebuilds = 0

    @property
    def active(self) -> bool:
        return bool(self.targets)

    def replaying(self, partitions: Iterable[tuple[int, int]], topic: str) -> bool:
        """Whether any of these (partition, offset) records is a replayed one."""
        return any(
            (t := self.targets.get(TopicPartition(topic, p))) is not None and o < t
            for p, o in partitions
        )

    def holds(self, tp: TopicPartition) -> bool:
        """True while ``tp`` is rebuilding: its offsets must not be committed."""
        return tp in self.targets

    def unchecked(self, assigned: set[TopicPartition]) -> bool:
        return bool(assigned - self.ready - set(self.targets))

    def check(self, assigned: set[TopicPartition]) -> set[TopicPartition]:
        """Read the marker for ``assigned``; start the rebuild of every
        partition whose users this Redis does not hold. Returns those."""
        self.ready &= assigned
        for tp in [tp for tp in self.targets if tp not in assigned]:
            del self.targets[tp]  # the new owner rebuilds it (its field is absent)
        tps = sorted(assigned)
        vals = self.r.hmget(self.key, ["epoch", *[partition_field(tp) for tp in tps]])
        epoch = vals[0]
        lost: set[TopicPartition] = set()
        if self.epoch is not None and epoch != self.epoch:
            lost = set(assigned)  # everything this worker wrote since is gone
            log.error(
                "Redis lost its data (the epoch marker changed or vanished); rebuilding from Kafka",
                extra={"marker": self.key, "partitions": sorted(map(partition_field, lost))},
            )
        upgraded = False
        if epoch is None:
            upgraded = self.epoch is None and bool(self.r.hexists(self.learner_key, "ckpt"))
            if upgraded:
                log.warning(
                    "no epoch marker but a learner checkpoint: a Redis written before the marker "
                    "existed; marking its partitions without a rebuild",
                    extra={"marker": self.key},
                )
            self.r.hsetnx(self.key, "epoch", uuid.uuid4().hex)
            epoch = self.r.hget(self.key, "epoch")
        self.epoch = epoch
        now = str(int(time.time() * 1000))
        for tp, val in zip(tps, vals[1:], strict=True):
            if tp in lost or tp in self.targets:
                continue
            if val is not None:
                self.ready.add(tp)
            elif tp in self.ready:
                lost.add(tp)  # its field vanished: `hpmf rebuild` or a partial loss
                log.error(
                    "partition marker vanished; rebuilding it from Kafka",
                    extra={"marker": self.key, "partition": partition_field(tp)},
                )
            elif upgraded or self.consumer.committed(tp) is None:
                self.r.hsetnx(
                    self.key, partition_field(tp), now
                )  # never consumed: nothing to rebuild
                self.ready.add(tp)
            else:
                lost.add(tp)  # consumed before, not marked in this Redis
        if lost:
            self.start(lost)
        return lost

    def start(self, tps: set[TopicPartition]) -> None:
        """Seek each partition back to the user TTL and remember where to stop."""
        if self.before_replay is not None:
            self.before_replay()
        self.rebuilds += 1
        self.ready -= tps
        ts = int(time.time() * 1000) - self.replay_ms
        ends = self.consumer.end_offsets(list(tps))
        starts = self.consumer.offsets_for_times({tp: max(ts, 0) for tp in tps})
        for tp in tps:
            found = starts.get(tp)
            start = ends[tp] if found is None else found.offset
            self.consumer.seek(tp, start)
            self.targets[tp] = ends[tp]
            log.warning(
                "rebuilding partition from Kafka",
                extra={
                    "partition": partition_field(tp),
                    "from_offset": start,
                    "to_offset": ends[tp],
                },
            )
        self.progress()

    def progress(self) -> list[TopicPartition]:
        """Mark the partitions whose replay reached its target (after a write)."""
        done = []
        for tp, target in list(self.targets.items()):
            try:
                pos = self.consumer.position(tp, timeout_ms=1000)
            except Exception:  # unknown right after a rebalance: not done
                continue
            if pos is not None and pos >= target:
                done.append(tp)
        if done:
            now = str(int(time.time() * 1000))
            self.r.hset(self.key, mapping={partition_field(tp): now for tp in done})
            for tp in done:
                del self.targets[tp]
                self.ready.add(tp)
            log.info("partitions rebuilt", extra={"partitions": sorted(map(partition_field, done))})
        return done
