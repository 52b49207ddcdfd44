"""The streaming loop: Kafka watch events in, user posteriors in Redis out.

One iteration handles one minibatch, in this order (the order is the design;
see :mod:`streamer.service.offsets` for why it is safe against crashes):

1. **Poll** a minibatch; it closes on size or age (:mod:`streamer.service.event_batch`).
2. **Decode and validate** each record (:mod:`streamer.event`); an invalid one
   goes to the dead-letter topic (:mod:`streamer.service.dead_letter`) and the rest
   of the batch goes on.
3. **Load** the touched users from Redis in one pipeline (with the globals
   pointer), skip events already applied (stored offset) or duplicated
   (recent event ids), fold the new ones in and run the model's **local step**
   (:mod:`streamer.service.model_update`).
4. **Write** every touched user's record (posterior, history, count, applied
   (partition, offset), expiry) *and* the batch's global statistics in one
   atomic step, a Lua script that acts as a MULTI/EXEC
   (:mod:`streamer.service.store.user_store`, :mod:`streamer.service.store.global_store`).
   Then make the dead letters durable (flush).
5. **Commit** the Kafka offsets of the whole batch (:mod:`streamer.service.offsets`;
   sent without waiting; on revoke sent from the rebalance listener before
   the hand-over; synchronously on shutdown).
6. **Global step** if this worker holds the learner role: apply the queued
   statistics in stream order, publish the globals when due.

Steps 3-4 are retried together while Redis is unreachable (a retry re-reads
the users, so a transaction that committed but whose reply was lost is not
applied twice). Nothing is committed before its
effects are durable, so a crash anywhere loses nothing and counts nothing twice.

Shutdown (SIGTERM/SIGINT) sets a flag; the batch in hand is finished and
committed, the learner publishes and frees its lease, and ``run`` returns 0.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from model.choice import ChoiceConfig
from model.config import HPMFConfig
from streamer.event import DECODER_ERROR, EventLimits, InvalidEvent, check_key, decode_event
from streamer.reader.redis_record import global_prefix, is_cluster_client, user_key
from streamer.service.checkpoint_topic import CheckpointTopic
from streamer.service.connections import group_membership, kafka_security, redis_client
from streamer.service.dead_letter import DeadLetterSink
from streamer.service.errors import (
    TRANSIENT,
    ConfigurationError,
    StopRequested,
    fatal_setting,
    retry,
)
from streamer.service.event_batch import RebalanceTracker, poll_batch
from streamer.service.forget import restore_markers
from streamer.service.kafka_admin import service_topics, topic_config, topic_refused
from streamer.service.kafka_compat import lenient_header_keys
from streamer.service.metrics import StreamMetrics, serve
from streamer.service.model_update import ModelUpdate, SourcedEvent, update_users
from streamer.service.offsets import commit_offsets, commit_offsets_async, next_offsets
from streamer.service.rebuild import Rebuild
from streamer.service.settings import StreamSettings
from streamer.service.store.global_stats_record import encode_stats
from streamer.service.store.global_store import GlobalStore
from streamer.service.store.user_store import WriteConflict, load_users, write_batch

log = logging.getLogger(__name__)
T = TypeVar("T")

# kafka-python backs reconnects off up to 30 s by default: after a broker
# restart the worker sat idle up to that long with the broker already back.
# Java's client caps it at 1 s; so do we.
RECONNECT_BACKOFF_MAX_MS = 1000


class Worker:
    def __init__(self, settings: StreamSettings, metrics: StreamMetrics | None = None) -> None:
        self.s = settings
        self.metrics = metrics or StreamMetrics()
        self.stop = False
        self.limits = EventLimits(
            max_minutes=settings.max_minutes,
            max_payload_bytes=settings.max_payload_bytes,
            max_future_ms=settings.max_future_ms,
            max_id_chars=settings.max_id_chars,
            min_ts_ms=settings.min_ts_ms,
        )
        self.batches_done = 0
        self.last_event_at = time.monotonic()
        self.server: Any = None
        # Fault injection for the crash test only: SIGKILL this process right
        # after the N-th Redis write, before its offsets are committed -- the
        # worst moment for a crash. Unset in production.
        self._kill_after_write = int(os.environ.get("HPMF_FAULT_KILL_AFTER_WRITE", "0") or 0)
        self._writes = 0
        self.written_offsets: dict[
            TopicPartition, int
        ] = {}  # newest offsets whose effects are in Redis
        self.metrics.live_after_s = settings.live_after_s
        self._lag_due = 0.0  # monotonic time of the next lag refresh
        self.rebuild: Rebuild | None = None
        self._marker_checked_at = 0.0

    # ---------------------------------------------------------------- set-up
    def _should_stop(self) -> bool:
        # retry() asks this about every 50 ms while a step waits for Redis or
        # Kafka: the loop is alive then (liveness must not fail in an outage;
        # a restart would not bring the dependency back).
        self.metrics.tick()
        return self.stop

    def request_stop(self, signum: int = 0, frame: object = None) -> None:
        if not self.stop:
            log.info("shutdown requested; finishing the batch in hand", extra={"signal": signum})
        self.stop = True

    def _connect(self) -> None:
        s = self.s
        lenient_header_keys()  # a non-UTF-8 header key must not stop a partition (streamer/service/kafka_compat.py)
        self.redis = redis_client(
            s, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        # The global and learner keys: one hash tag on a Redis Cluster (redis_record.global_prefix).
        self.gprefix = global_prefix(s.redis_prefix, is_cluster_client(self.redis))
        retry(self.redis.ping, "redis ping", log, self._should_stop, s.retry_max_backoff_s)
        self.metrics.redis_ok = True
        if s.create_topics:
            # One attempt per call (wait_s=0): this retry loop does the waiting, and it hears SIGTERM.
            retry(
                lambda: service_topics(s, wait_s=0),
                "create topics",
                log,
                self._should_stop,
                s.retry_max_backoff_s,
            )
        retry(
            self._check_retention, "topic retention", log, self._should_stop, s.retry_max_backoff_s
        )
        # Forget markers (hpmf forget) from Kafka into Redis before any event
        # is applied: a Redis that lost them must not let a replay bring a
        # forgotten user back (streamer/service/forget.py).
        retry(
            lambda: restore_markers(
                s.kafka_bootstrap,
                s.forget_topic_name,
                self.redis,
                s.redis_prefix,
                config=kafka_security(s),
            ),
            "restore forget markers",
            log,
            self._should_stop,
            s.retry_max_backoff_s,
        )
        self.producer = KafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            acks="all",
            linger_ms=5,
            client_id=f"{s.worker_id}-dlq",
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            **kafka_security(s),
        )
        self.tracker = RebalanceTracker(before_revoke=self._commit_revoked)
        self.consumer = KafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.group_id,
            client_id=s.worker_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            max_poll_records=s.batch_max_events,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(500, s.session_timeout_ms // 5),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=100,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            **kafka_security(s),
            **group_membership(s),
        )
        # Fetch the topic's metadata first: a group join before it is known
        # assigns nothing until the next metadata refresh (minutes).
        retry(
            lambda: self._require_partitions(s.topic),
            "topic metadata",
            log,
            self._should_stop,
            s.retry_max_backoff_s,
        )
        self.consumer.subscribe([s.topic], listener=self.tracker)
        self.dlq = DeadLetterSink(
            self.producer,
            s.dead_letter_topic,
            self.metrics,
            max_record_bytes=s.dlq_max_record_bytes,
            prefix_bytes=s.dlq_prefix_bytes,
        )
        # Before a replay the forget markers come back from Kafka too: a Redis
        # that lost them must not let the replay re-create a forgotten user.
        self.rebuild = Rebuild(
            self.redis,
            self.gprefix,
            self.consumer,
            s.user_ttl_s * 1000,
            before_replay=lambda: restore_markers(
                s.kafka_bootstrap,
                s.forget_topic_name,
                self.redis,
                s.redis_prefix,
                config=kafka_security(s),
            ),
        )
        cfg = HPMFConfig(**s.model_config_dict())
        self.globals = GlobalStore(
            self.redis,
            self.gprefix,
            s.worker_id,
            cfg,
            self.metrics,
            lease_ms=s.learner_lease_ms,
            publish_every_batches=s.publish_every_batches,
            publish_every_ms=s.publish_every_ms,
            global_ttl_s=s.global_ttl_s,
            warm_start=s.checkpoint,
            quarantine=self._quarantine_stats,
            eligible=s.learner_eligible,
            keep_versions=s.global_keep_versions,
            kafka_checkpoint=CheckpointTopic(
                s.kafka_bootstrap, s.checkpoints_topic_name, s.redis_prefix, kafka_security(s)
            ),
            checkpoint_every_s=s.checkpoint_every_s,
            choice_config=ChoiceConfig(n_factors=s.choice_factors, sweep_every=s.choice_sweep_every)
            if s.choice
            else None,
            record_format=s.record_format if s.choice else 1,
        )
        _warm_up(cfg)
        _settle_garbage_collector()
        self._redis_step(self.globals.maintain, "learner lease")
        if not self.globals.is_learner:
            self._redis_step(lambda: self.globals.refresh(None, force=True), "load globals")
        self.metrics.started = True

    def _check_retention(self) -> None:
        """Warn when the events topic keeps less than the user TTL: a rebuild
        after Redis loses its data replays the TTL's worth of events, and
        what Kafka deleted cannot come back."""
        s = self.s
        raw = topic_config(s.kafka_bootstrap, s.topic, "retention.ms", config=kafka_security(s))
        if raw is None:
            return
        retention_ms = int(raw)
        if 0 <= retention_ms < s.user_ttl_s * 1000:
            log.warning(
                f"topic {s.topic} keeps events {retention_ms / 3.6e6:.1f} h, shorter than the user TTL "
                f"({s.user_ttl_s / 3600:.1f} h): if Redis loses its data, users' events older than the "
                f"retention cannot be rebuilt. Raise it: kafka-configs --alter --entity-type topics "
                f"--entity-name {s.topic} --add-config retention.ms={s.events_retention_ms}",
                extra={"topic": s.topic, "retention_ms": retention_ms, "user_ttl_s": s.user_ttl_s},
            )

    def _quarantine_stats(self, stream_id: str, payload: bytes, reason: str, detail: str) -> None:
        """The learner's dead letter: a global statistics entry it cannot apply,
        made durable in the dead-letter topic (synchronously; rare) before the
        learner moves past it."""
        self.dlq.send_raw(
            payload,
            [
                ("error", reason.encode()),
                ("error_detail", detail.encode("utf-8", "replace")[:1000]),
                ("source_topic", self.globals.stream_key.encode()),
                ("source_offset", stream_id.encode()),
                ("failed_at", str(int(time.time() * 1000)).encode()),
            ],
        )
        self.dlq.flush()

    def _require_partitions(self, topic: str) -> None:
        from kafka.errors import KafkaError, TopicAuthorizationFailedError

        if not self.consumer.partitions_for_topic(topic):
            # A topic we may not describe looks like one with no partitions
            # to the consumer (it asks for all topics' metadata); asked by
            # name, the broker says which (a refusal: not retried).
            if topic_refused(self.s.kafka_bootstrap, topic, config=kafka_security(self.s)):
                raise TopicAuthorizationFailedError(f"not authorized to describe topic {topic}")
            raise KafkaError(f"topic {topic} has no partitions (yet)")

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        torch.set_num_threads(self.s.torch_threads)
        if self.s.metrics_port:
            self.server = serve(
                self.metrics,
                self.s.metrics_host,
                self.s.metrics_port,
                extra_ready=lambda: self.rebuild is not None and not self.rebuild.active,
            )
        try:
            self._connect()
            self.last_event_at = time.monotonic()
            while not self.stop:
                self.iteration()
                if self.s.max_batches and self.batches_done >= self.s.max_batches:
                    break
                if (
                    self.s.stop_when_idle_s
                    and time.monotonic() - self.last_event_at > self.s.stop_when_idle_s
                    and self._caught_up()
                ):
                    log.info(
                        "no events for a while; stopping", extra={"idle_s": self.s.stop_when_idle_s}
                    )
                    break
        except StopRequested:
            log.info("stopped while waiting for a dependency; the batch in hand was not committed")
        except Exception as exc:
            fatal = fatal_setting(exc)
            if fatal is None:
                raise
            return self._fail_configuration(fatal)
        finally:
            self._close()
        return 0

    def _fail_configuration(self, err: ConfigurationError) -> int:
        """Exit code 3 and one line naming the setting: retrying cannot fix
        a refused password or a missing permission."""
        log.critical(
            "configuration error; stopping", extra={"error": str(err), "setting": err.setting}
        )
        print(f"hpmf stream: configuration error: {err}", file=sys.stderr, flush=True)
        return 3

    def _close(self) -> None:
        for what, fn in (
            ("final commit", self._commit_written),
            ("publish globals", lambda: self.globals.release()),
            ("close consumer", lambda: self.consumer.close(autocommit=False)),
            ("close producer", lambda: self.producer.close(timeout=10)),
        ):
            try:
                fn()
            except AttributeError:  # never connected
                pass
            except Exception as exc:  # shutdown must go on
                log.warning(f"{what} failed at shutdown", extra={"error": repr(exc)[:200]})
        if self.server is not None:
            self.server.shutdown()
        m = self.metrics
        log.info(
            "stopped",
            extra={
                "batches": self.batches_done,
                "events": m.events.get(),
                "applied": m.applied.get(),
                "skipped_replay": m.skipped.get("replay"),
                "skipped_duplicate": m.skipped.get("duplicate"),
                "invalid": sum(m.invalid.values.values()),
                "commit_failures": m.commit_failures.get(),
            },
        )

    def iteration(self) -> None:
        s, m = self.s, self.metrics
        m.tick()
        self._redis_step(self.globals.maintain, "learner lease")

        # 1. Poll a minibatch (closes on size or age).
        records = poll_batch(
            self.consumer, self.tracker, s.batch_max_events, s.batch_max_age_ms, s.idle_poll_ms
        )
        m.assigned.set(len(self.tracker.assigned))
        # Does this Redis hold the users of every partition? Checked when the
        # partitions change, and once a second when idle (a loss with no
        # traffic); after every write below. See streamer/service/rebuild.py.
        assert self.rebuild is not None
        if self.rebuild.unchecked(self.tracker.assigned) or (
            not records and time.monotonic() - self._marker_checked_at > 1.0
        ):
            self._marker_checked_at = time.monotonic()
            lost = self._redis_step(
                lambda: self.rebuild.check(set(self.tracker.assigned)), "epoch marker"
            )  # type: ignore[union-attr]
            if lost:  # sought back: these records come again in the replay
                records = [r for r in records if TopicPartition(r.topic, r.partition) not in lost]
                for tp in lost:
                    self.written_offsets.pop(tp, None)
        m.rebuilding.set(len(self.rebuild.targets))
        if not records:
            # Idle: the learner catches up with other workers' statistics.
            self._redis_step(self.globals.learn, "global step")
            self._refresh_lag_when_due()
            return
        t0 = time.monotonic()
        self.last_event_at = t0
        m.events.inc(len(records))

        # 2. Decode and validate; invalid events go to the dead-letter topic.
        now_ms = int(time.time() * 1000)
        valid: list[SourcedEvent] = []
        for r in records:
            try:
                ev = decode_event(r.value, self.limits, now_ms)
                if s.require_key_match:
                    check_key(ev, r.key)
            except InvalidEvent as err:
                # A replayed record (rebuild after a Redis loss) was
                # dead-lettered the first time it was read.
                if not (
                    self.rebuild.active
                    and self.rebuild.replaying([(r.partition, r.offset)], r.topic)
                ):
                    self.dlq.send(r, err)
                continue
            except Exception as exc:  # a decoder bug must not stop the stream on one record
                log.error(
                    "decoder failed on a record; dead-lettered",
                    exc_info=True,
                    extra={"topic": r.topic, "partition": r.partition, "offset": r.offset},
                )
                self.dlq.send(r, InvalidEvent(DECODER_ERROR, repr(exc)[:500]))
                continue
            valid.append(SourcedEvent(ev, r.partition, r.offset, r.timestamp))

        # 3 + 4. Load users, local step, write users + statistics atomically.
        # A WriteConflict (another worker wrote one of these users since they
        # were read: a rebalance handed the partition over mid-batch) is
        # retried like an outage: read again, recompute, the events the other
        # worker already applied are then skipped by the stored offsets.
        update = retry(
            lambda: self._update_and_write(valid),
            "redis read/write",
            log,
            self._should_stop,
            s.retry_max_backoff_s,
            on_failure=self._write_failed,
            transient=(*TRANSIENT, WriteConflict),
        )
        written_ms = time.time() * 1000
        m.freshness.observe_many([(written_ms - ts) / 1000 for ts in update.produce_ts_ms])
        m.applied.inc(update.applied)
        m.users_written.inc(len(update.records))
        m.global_version.set(self.globals.model.version)
        m.skipped.inc(update.skipped_replay, "replay")
        m.skipped.inc(update.skipped_duplicate, "duplicate")
        if update.skipped_forgotten:
            m.skipped.inc(update.skipped_forgotten, "forgotten")
        retry(self.dlq.flush, "dead-letter flush", log, self._should_stop, s.retry_max_backoff_s)

        # 5. Commit the offsets, only now that the effects are durable (sent
        #    without waiting; see streamer/service/offsets.py for why that is safe).
        #    Not those of a partition being rebuilt (streamer/service/rebuild.py).
        offsets = next_offsets(records)
        if self.rebuild.active:
            self._redis_step(self.rebuild.progress, "rebuild progress")
            offsets = {tp: o for tp, o in offsets.items() if not self.rebuild.holds(tp)}
            m.rebuilding.set(len(self.rebuild.targets))
        self.written_offsets.update(offsets)
        commit_offsets_async(self.consumer, offsets, on_failure=lambda _e: m.commit_failures.inc())
        m.batch_latency.observe(time.monotonic() - t0)
        m.batches.inc()
        self.batches_done += 1
        self.last_event_at = time.monotonic()

        # 6. Global step (learner only).
        self._redis_step(self.globals.learn, "global step")
        self._refresh_lag_when_due()

    def _redis_step(self, fn: Callable[[], T], what: str) -> T:
        """A Redis step of the loop, retried through an outage; keeps redis_up true to what happened."""
        out = retry(
            fn,
            what,
            log,
            self._should_stop,
            self.s.retry_max_backoff_s,
            on_failure=self._redis_failed,
        )
        self.metrics.redis_ok = True
        return out

    def _commit_written(self) -> None:
        """Synchronously commit the newest written offsets (shutdown)."""
        offsets, self.written_offsets = self.written_offsets, {}
        if offsets and not commit_offsets(self.consumer, offsets):
            self.metrics.commit_failures.inc()

    def _commit_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what was written of the revoked partitions, before the group
        hands them over. kafka-python 3 runs this listener on its I/O thread,
        where a blocking commit is refused, so the commit is *sent*: it goes
        out on the coordinator connection ahead of the re-join, in the
        generation that still owns the partitions. Should it fail anyway, the
        new owner re-reads those records and skips them by the stored offsets."""
        offsets = {tp: o for tp, o in self.written_offsets.items() if tp in revoked}
        for tp in offsets:
            self.written_offsets.pop(tp, None)
        commit_offsets_async(
            self.consumer, offsets, on_failure=lambda _e: self.metrics.commit_failures.inc()
        )
        if offsets:
            log.info(
                "commit of revoked partitions sent",
                extra={
                    "offsets": {
                        f"{tp.topic}:{tp.partition}": o for tp, o in sorted(offsets.items())
                    }
                },
            )

    def _write_failed(self, exc: BaseException) -> None:
        if isinstance(exc, WriteConflict):
            self.metrics.retries.inc(label="write_conflict")
        else:
            self._redis_failed(exc)

    def _redis_failed(self, exc: BaseException) -> None:
        self.metrics.redis_ok = False
        self.metrics.retries.inc(label="redis")

    def _update_and_write(self, valid: list[SourcedEvent]) -> ModelUpdate:
        s, g = self.s, self.globals
        users = list(dict.fromkeys(se.event.user_id for se in valid))
        versions: dict[str, bytes] = {}
        forgotten: dict[str, dict[int, int]] = {}
        stored, current = load_users(
            self.redis, s.redis_prefix, users, g.current_key, versions, forgotten
        )
        g.refresh(current)
        update = update_users(
            g.model,
            valid,
            stored,
            s.dedupe_window,
            int(time.time() * 1000),
            forgotten,
            choice=g.choice,
            record_format=g.record_format,
        )
        rb = self.rebuild
        assert rb is not None
        if update.records:
            assert update.stats is not None
            # Replayed events add no global statistics: the globals came back
            # from the durable checkpoint, which already learned from them.
            replay = rb.active and rb.replaying(
                ((se.partition, se.offset) for se in valid), s.topic
            )
            sid = write_batch(
                self.redis,
                s.redis_prefix,
                update.records,
                update.event_ids,
                s.user_ttl_s,
                g.stream_key,
                s.worker_id,
                None if replay else encode_stats(update.stats),
                update.seen_at,
                expected=versions,
            )
            if sid is not None:
                g.written(sid, update.stats)
            self._writes += 1
            if self._kill_after_write and self._writes >= self._kill_after_write:
                os.kill(os.getpid(), signal.SIGKILL)
        # Before the commit: did this Redis lose its data since the last check?
        # Then what this batch wrote holds only this batch's events: delete it;
        # the partitions replay (streamer/service/rebuild.py) and nothing is committed.
        lost = rb.check(set(self.tracker.assigned))
        if lost:
            gone = {
                user_key(s.redis_prefix, se.event.user_id)
                for se in valid
                if TopicPartition(s.topic, se.partition) in lost
            }
            if gone:
                self.redis.delete(*gone)
            for tp in lost:
                self.written_offsets.pop(tp, None)
        self.metrics.redis_ok = True
        return update

    def _partition_lags(self) -> dict[TopicPartition, int | None]:
        """Per assigned partition, high watermark minus position; None where
        either is not known yet (right after a rebalance)."""
        lags: dict[TopicPartition, int | None] = {}
        for tp in self.tracker.assigned:
            hw = self.consumer.highwater(tp)
            try:
                pos = self.consumer.position(tp, timeout_ms=100)
            except Exception:  # position unknown right after a rebalance
                pos = None
            lags[tp] = None if hw is None or pos is None else max(0, hw - pos)
        return lags

    def _caught_up(self) -> bool:
        """Partitions assigned and each read to its high watermark. Idle alone
        is not enough to stop: a rebalance can keep a worker idle for seconds
        while its new partitions still hold unread events."""
        lags = self._partition_lags()
        return bool(lags) and all(lag == 0 for lag in lags.values())

    def _refresh_lag_when_due(self) -> None:
        """Every ``lag_refresh_s``, busy or idle: the lag per assigned partition
        (revoked ones drop out; one whose position is not known yet is left
        out) and, on the learner, its backlog. The high watermark comes with
        each fetch response, so no request is made for it. While the loop
        waits out an outage nothing is refreshed; the retries counter and
        redis_up tell that story then."""
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + self.s.lag_refresh_s
        m = self.metrics
        lags = self._partition_lags()
        m.lag.replace(
            {(tp.topic, str(tp.partition)): lag for tp, lag in lags.items() if lag is not None}
        )
        m.lag_refreshed.set(time.time())
        try:
            entries, age_s = self.globals.backlog()
        except TRANSIENT as exc:  # a metric is not worth a retry loop; the next refresh tries again
            self._redis_failed(exc)
            return
        m.learner_backlog.set(entries)
        m.learner_backlog_age.set(age_s)


def _settle_garbage_collector() -> None:
    """Move everything alive after start-up (torch, Pyro, the model) out of
    the cyclic garbage collector's sight and let it run less often. A batch
    allocates thousands of small containers (records, events, histories), so
    the collector ran many times per batch and each full pass walked all of
    start-up's objects again. Measured on a 60,000-event backlog of the
    throughput benchmark's stream, in-process: the loop's time went from
    7.46-7.56 s to 6.92-7.05 s (three runs; ~7%). The worker makes few
    reference cycles; memory stays flat (the stream suite's memory
    benchmark)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _warm_up(cfg: HPMFConfig) -> None:
    """Run one tiny batch through a throwaway model: torch's first call costs
    ~1-2 s of lazy initialisation, which would otherwise land on the first
    real batch (and on its freshness). ``svi_min_events=1`` makes the warm-up
    take an SVI step too (Pyro's first step costs ~0.5 s more)."""
    import dataclasses

    from model.batch import Batch
    from model.online import OnlineHPMF

    OnlineHPMF(dataclasses.replace(cfg, svi_min_events=1)).learn(
        Batch.of(["warm-up"], ["warm-up"], [1.0]), {}
    )
