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

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from kafka import TopicPartition

from streamer.event import DECODER_ERROR, EventLimits, InvalidEvent, check_key, decode_event
from streamer.service.errors import (
    TRANSIENT,
    ConfigurationError,
    StopRequested,
    fatal_setting,
    retry,
)
from streamer.service.event_batch import poll_batch
from streamer.service.lag import LagReport
from streamer.service.metrics import StreamMetrics, serve
from streamer.service.model_update import ModelUpdate, SourcedEvent, update_users
from streamer.service.offsets import Offsets
from streamer.service.rebuild import Rebuild
from streamer.service.settings import StreamSettings
from streamer.service.store.global_stats_record import encode_stats
from streamer.service.store.seam import GlobalsStore, UserStore
from streamer.service.store.user_store import UserBatchWrite, WriteConflict
from streamer.service.worker_setup import WorkerSetup

log = logging.getLogger(__name__)
T = TypeVar("T")


class Worker(WorkerSetup, LagReport):
    """The loop; it sees its stores only through the seam
    (:mod:`streamer.service.store.seam`) and the model through
    :class:`model.protocol.StreamingModel`."""

    users: UserStore
    globals: GlobalsStore

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
        self.offsets = Offsets(None, on_failure=lambda _e: self.metrics.commit_failures.inc())
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
                self.offsets.forget(lost)
        m.rebuilding.set(len(self.rebuild.targets))
        if not records:
            # Idle: the learner catches up with other workers' statistics.
            self._redis_step(self.globals.learn, "global step")
            self._refresh_lag_when_due()
            return
        t0 = time.monotonic()
        self.last_event_at = t0
        m.events.inc(len(records))
        self.offsets.polled(records)  # step 1 of the commit order (streamer/service/offsets.py)

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
        self.offsets.written()
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
        self.offsets.flushed()

        # 5. Commit the offsets, only now that the effects are durable (sent
        #    without waiting; see streamer/service/offsets.py for why that is safe).
        #    Not those of a partition being rebuilt (streamer/service/rebuild.py).
        if self.rebuild.active:
            self._redis_step(self.rebuild.progress, "rebuild progress")
            self.offsets.commit(hold=self.rebuild.holds)
            m.rebuilding.set(len(self.rebuild.targets))
        else:
            self.offsets.commit()
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
        if not self.offsets.commit_written():
            self.metrics.commit_failures.inc()

    def _commit_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what was written of the revoked partitions, before the group
        hands them over. kafka-python 3 runs this listener on its I/O thread,
        where a blocking commit is refused, so the commit is *sent*: it goes
        out on the coordinator connection ahead of the re-join, in the
        generation that still owns the partitions. Should it fail anyway, the
        new owner re-reads those records and skips them by the stored offsets."""
        offsets = self.offsets.revoked(revoked)
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
        stored, current = self.users.load(users, g.current_key, versions, forgotten)
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
            sid = self.users.write(
                UserBatchWrite(
                    update.records,
                    update.event_ids,
                    s.user_ttl_s,
                    g.stream_key,
                    s.worker_id,
                    None if replay else encode_stats(update.stats),
                    update.seen_at,
                    expected=versions,
                )
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
            self.users.discard(
                se.event.user_id for se in valid if TopicPartition(s.topic, se.partition) in lost
            )
            self.offsets.forget(lost)
        self.metrics.redis_ok = True
        return update
