"""The shared globals (video factors, pooled prior, sigma) across N workers.

Design (docs/streaming.md has the picture):

* Every worker runs the **local step** for its own users against the newest
  globals it knows, and in the same Lua script as its user records appends
  the batch's :class:`model.online.GlobalStats` to the Redis stream
  ``{prefix}:gstats``. So a batch's user records and its global statistics
  become durable together or not at all (a replay after a crash skips the
  users' events *and* therefore re-adds no statistics).
* Exactly one process, the **learner**, applies the global step. It holds a
  lease ``{prefix}:learner:lease`` (SET NX PX, renewed; a dead learner's lease
  lapses and another worker takes over). It reads ``{prefix}:gstats`` in
  stream order, calls ``model.apply_global`` for each entry, and every
  ``publish_every_batches`` entries or ``publish_every_ms`` publishes
  (:mod:`streamer.service.store.global_publish`), in one MULTI/EXEC fenced by the lease (WATCH): its checkpoint together with the
  last applied stream id (``{prefix}:learner``), the internal snapshot the
  workers import, and the published global record (``{prefix}:g:{v}`` +
  ``{prefix}:g:current``); the same transaction trims the stream up to that
  id. A new learner resumes from that checkpoint and stream id, so no
  statistics entry is applied twice or skipped.
* Non-learners watch ``{prefix}:g:current`` (read with their users, no extra
  round trip) and import the snapshot when it moves.

With one worker the same path runs in-process: the worker is the learner and
applies its own entries right after writing them (read with XRANGE to keep
the one stream order, but taken from memory instead of decoded again). One
worker and N workers feed the learner the same kind of entries in one total
order; the global step sees the same statistics either way (only which
globals version each local step used can differ by the publish interval).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

from model.checkpoint import (
    from_bytes,
    load_checkpoint,
    to_bytes,
)
from model.choice import ChoiceConfig, ChoiceModel
from model.choice_snapshot import (
    export_checkpoint,
    import_checkpoint,
    import_snapshot,
)
from model.config import HPMFConfig
from model.online import GlobalStats, OnlineHPMF
from model.protocol import StreamingModel
from streamer.event import valid_id
from streamer.reader.redis_record import (
    global_current_key,
)
from streamer.service.checkpoint_topic import CheckpointTopic
from streamer.service.metrics import StreamMetrics
from streamer.service.store.global_publish import GlobalPublisher, load_redis_checkpoint
from streamer.service.store.global_stats_record import (
    BlobError,
    decode_choice_checkpoint,
    decode_choice_snapshot,
    decode_snapshot,
    decode_stats,
    encode_choice_checkpoint,
    encode_stats,
)

log = logging.getLogger(__name__)

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class _Unusable(Exception):  # noqa: N818 - internal control flow
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class GlobalStore(GlobalPublisher):
    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        worker_id: str,
        config: HPMFConfig,
        metrics: StreamMetrics,
        lease_ms: int = 10_000,
        publish_every_batches: int = 20,
        publish_every_ms: int = 1000,
        global_ttl_s: int = 3600,
        warm_start: str = "",
        eligible: bool = True,
        keep_versions: int = 2,
        kafka_checkpoint: CheckpointTopic | None = None,
        checkpoint_every_s: float = 60.0,
        quarantine: Callable[[str, bytes, str, str], None] | None = None,
        choice_config: ChoiceConfig | None = None,
        record_format: int = 2,
    ) -> None:
        self.r = client
        self.prefix = prefix
        self.worker_id = worker_id
        self.config = config
        self.metrics = metrics
        self.lease_ms = lease_ms
        self.publish_every_batches = publish_every_batches
        self.publish_every_ms = publish_every_ms
        self.global_ttl_s = global_ttl_s
        self.keep_versions = keep_versions
        self.kafka_checkpoint = kafka_checkpoint
        self.checkpoint_every_s = checkpoint_every_s
        self.last_kafka_checkpoint = time.monotonic()
        self.warm_start = warm_start
        # quarantine(stream_id, payload, reason, detail): makes a statistics
        # entry the learner cannot apply durable elsewhere (the worker: the
        # dead-letter topic) before it is skipped; see _quarantine.
        self.quarantine = quarantine
        self.unpublishable: set[str] = set()  # video ids left out of the published record
        self.eligible = eligible  # False: never takes the learner role
        self.stream_key = f"{prefix}:gstats"
        self.learner_key = f"{prefix}:learner"
        self.lease_key = f"{prefix}:learner:lease"
        # The service calls the model through model.protocol.StreamingModel only.
        self.model: StreamingModel = OnlineHPMF(config)
        # The choice component (model/choice.py): which videos a user starts.
        # None runs the minutes model alone (statistics without choice
        # posteriors, version 1 records).
        self.choice_config = choice_config
        self.choice: ChoiceModel | None = (
            ChoiceModel(choice_config) if choice_config is not None else None
        )
        self.record_format = record_format
        """The published global record's version: 2 carries the choice
        component, 1 is the previous layout (docs/redis_format.md, rolling upgrades)."""
        self.last_choice_checkpoint = time.monotonic()
        self.is_learner = False
        self.last_id = "0-0"  # newest gstats entry applied (learner)
        self.own: dict[str, GlobalStats] = {}  # entries this process wrote, not yet applied
        self.unpublished = 0
        self.last_publish = time.monotonic()
        self.last_lease_op = 0.0
        self.published_version: int | None = None
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)

    # ---------------------------------------------------------------- role
    def maintain(self) -> None:
        """Renew the lease (learner) or try to take it (others); cheap, time-gated."""
        now = time.monotonic()
        if self.is_learner:
            if (now - self.last_lease_op) * 1000 >= self.lease_ms / 3:
                self.last_lease_op = now
                if not self._renew(keys=[self.lease_key], args=[self.worker_id, self.lease_ms]):
                    self._lose_role("lease renewal failed (expired or taken)")
        elif self.eligible and (
            (now - self.last_lease_op) * 1000 >= self.lease_ms / 2 or self.last_lease_op == 0.0
        ):
            self.last_lease_op = now
            if self.r.set(self.lease_key, self.worker_id, nx=True, px=self.lease_ms):
                self._become_learner()
        self.metrics.learner.set(1 if self.is_learner else 0)

    def _become_learner(self) -> None:
        ckpt, last_id, gv, snap_blob = self.r.hmget(
            self.learner_key, "ckpt", "last_id", "gv", "snap"
        )
        if ckpt:
            self.model = load_redis_checkpoint(ckpt, snap_blob)
            self.last_id = last_id.decode()
            self.published_version = int(gv)
            source = "redis checkpoint"
        elif (
            self.kafka_checkpoint is not None
            and (found := self.kafka_checkpoint.read_latest()) is not None
        ):
            # Redis lost the learner's state (or never had it): the durable
            # checkpoint. Its statistics stream position means nothing in
            # this Redis; every entry there now is newer than the checkpoint.
            self.model = from_bytes(found[0])
            self.last_id = "0-0"
            self.published_version = None
            source = f"kafka checkpoint {self.kafka_checkpoint.topic}"
        elif self.warm_start and Path(self.warm_start).exists():
            self.model = load_checkpoint(self.warm_start)
            self.last_id = "0-0"
            source = f"warm start {self.warm_start}"
        else:
            self.model = OnlineHPMF(self.config)
            self.last_id = "0-0"
            source = "fresh model"
        # The catalogue cap is an operating setting: it applies to a model
        # loaded from a checkpoint written under another cap too.
        if self.model.config.max_videos != self.config.max_videos:
            self.model.config = dataclasses.replace(
                self.model.config, max_videos=self.config.max_videos
            )
        self.model.learner = True
        self.choice = self._load_choice(source)
        self.is_learner = True
        self.own.clear()
        self.unpublished = 0
        self.last_publish = time.monotonic()
        self.last_kafka_checkpoint = time.monotonic()
        if source.startswith("kafka"):
            # Publish at once: readers find a global record (the checkpoint's
            # pooled prior for every user not rebuilt yet) instead of none.
            self.unpublished, self.last_publish = 1, float("-inf")
        log.info(
            "took the learner role",
            extra={
                "worker": self.worker_id,
                "source": source,
                "stream_id": self.last_id,
                "gv": self.model.version,
            },
        )

    def _choice_topic(self) -> CheckpointTopic:
        """The choice component's durable checkpoint: the checkpoints topic,
        key ``<prefix>:choice``."""
        kc = self.kafka_checkpoint
        assert kc is not None
        if getattr(self, "_choice_ckpt_topic", None) is None:
            self._choice_ckpt_topic = CheckpointTopic(
                kc.bootstrap, kc.topic, kc.key.decode() + ":choice", kc.security
            )
        return self._choice_ckpt_topic

    def _load_choice(self, source: str) -> ChoiceModel | None:
        """The choice learner's state: its checkpoint in ``{prefix}:learner``
        (written every ``checkpoint_every_s`` and at shutdown, so a new
        learner resumes from up to that long ago); when the minutes model came
        from the Kafka checkpoint (Redis lost its data), the choice
        component's checkpoint in the same topic; else a fresh component."""
        if self.choice_config is None:
            return None
        raw = None
        if source == "redis checkpoint":
            raw = self.r.hget(self.learner_key, "cckpt")
        elif source.startswith("kafka") and self.kafka_checkpoint is not None:
            found = self._choice_topic().read_latest()
            raw = found[0] if found is not None else None
        if raw:
            try:
                model = import_checkpoint(decode_choice_checkpoint(raw), self.choice_config)
                log.info(
                    "choice component restored",
                    extra={"from": source, "clock": model.clock, "videos": model.n_videos},
                )
                return model
            except (BlobError, ValueError) as exc:
                log.error(
                    "unreadable choice checkpoint; the choice component starts fresh",
                    extra={"error": str(exc)[:200]},
                )
        return ChoiceModel(self.choice_config)

    def _lose_role(self, why: str) -> None:
        log.warning("gave up the learner role", extra={"why": why})
        self.is_learner = False
        self.own.clear()
        self.model = OnlineHPMF(self.config)
        if self.choice_config is not None:
            self.choice = ChoiceModel(self.choice_config)
        self.refresh(None, force=True)

    def release(self) -> None:
        """On shutdown: publish what was learned, then free the lease at once."""
        if self.is_learner:
            if self.unpublished:
                self.publish(force_kafka_checkpoint=True, force_choice_checkpoint=True)
            else:
                if self.kafka_checkpoint is not None and self.model.version > 0:
                    self._write_kafka_checkpoint(to_bytes(self.model), self.model.version)
                if (
                    self.choice is not None and self.choice.clock > 0
                ):  # the lease is still ours here
                    self.r.hset(
                        self.learner_key,
                        "cckpt",
                        encode_choice_checkpoint(export_checkpoint(self.choice)),
                    )
            self._release(keys=[self.lease_key], args=[self.worker_id])
            self.is_learner = False

    # ---------------------------------------------------------------- workers
    @property
    def current_key(self) -> str:
        return global_current_key(self.prefix)

    def refresh(self, current: bytes | None, force: bool = False) -> None:
        """Non-learners: import the published snapshot when ``g:current`` moved."""
        if self.is_learner:
            return
        if force:
            current = self.r.get(self.current_key)
        if current is None or int(current) == self.model.version and not force:
            return
        blob, cblob = self.r.hmget(self.learner_key, "snap", "csnap")
        if blob is None:
            return
        snap = decode_snapshot(blob)
        if snap.version == self.model.version and not self.model.learner:
            return
        self.model.import_globals(snap)
        if self.choice_config is not None and cblob is not None:
            try:
                self.choice = import_snapshot(decode_choice_snapshot(cblob), self.choice_config)
            except (BlobError, ValueError) as exc:  # keep the component in hand
                log.error(
                    "unreadable choice snapshot; kept the previous one",
                    extra={"error": str(exc)[:200]},
                )
        log.debug("imported globals", extra={"gv": snap.version})

    def written(self, stream_id: bytes | str, stats: GlobalStats) -> None:
        """The transaction committed; the learner keeps its own entry to apply."""
        if self.is_learner:
            sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
            self.own[sid] = stats

    # ---------------------------------------------------------------- learner
    def learn(self, max_entries: int = 64) -> int:
        """Apply the next gstats entries in stream order; publish when due."""
        if not self.is_learner:
            return 0
        entries = self.r.xrange(self.stream_key, min=f"({self.last_id}", count=max_entries)
        for sid_raw, fields in entries:
            sid = sid_raw.decode()
            stats = self.own.pop(sid, None)
            try:
                if stats is None:
                    stats = decode_stats(fields.get(b"b", b""))
                bad = [v for v in stats.video_ids if not valid_id(str(v), 1 << 20)]
                if bad:
                    raise _Unusable(
                        "unpublishable_video_id",
                        f"{len(bad)} video ids outside the id alphabet, e.g. {str(bad[0])[:80]!r}",
                    )
                self.model.apply_global(stats)
                self._apply_choice(stats)
            except BlobError as exc:
                self._quarantine(sid, fields.get(b"b", b""), "unreadable_stats", str(exc))
            except _Unusable as exc:
                self._quarantine(
                    sid, fields.get(b"b") or encode_stats(stats), exc.reason, exc.detail
                )  # type: ignore[arg-type]
            self.last_id = sid
            self.unpublished += 1
        if self.unpublished and (
            self.unpublished >= self.publish_every_batches
            or (time.monotonic() - self.last_publish) * 1000 >= self.publish_every_ms
        ):
            self.publish()
        self.metrics.global_version.set(self.model.version)
        return len(entries)

    def _apply_choice(self, stats: GlobalStats) -> None:
        """The choice component's global step for one batch's statistics
        (statistics of a worker without it carry no choice posteriors)."""
        if self.choice is None or stats.choice_mean is None or stats.choice_cov is None:
            return
        users = list(stats.user_ids)
        cm = np.asarray(stats.choice_mean, dtype=np.float64)
        cc = np.asarray(stats.choice_cov, dtype=np.float64)
        if not users or cm.shape != (len(users), self.choice.config.dim):
            return  # another component size (a worker with other settings): not applicable
        pairs = list(zip(stats.event_user.tolist(), stats.event_video.tolist(), strict=True))
        self.choice.global_batch(users, list(stats.video_ids), pairs, cm, cc)
        if self.model.config.max_videos and self.choice.n_videos > self.model.n_videos:
            # The minutes model's catalogue cap evicted videos: the choice
            # component forgets the same ones (its memory stays bounded too).
            self.choice.retain(self.model.video_ids)

    def _quarantine(self, sid: str, payload: bytes, reason: str, detail: str) -> None:
        """Skip a statistics entry the learner cannot use (it would otherwise
        stop the global step on every restart: the entry stays in the stream
        until a checkpoint covers it). The users' records of that batch are
        written already; only its contribution to the globals is lost, and
        it is kept, with the reason, in the dead-letter topic. Raises (the
        caller retries) if it cannot be made durable there."""
        if self.quarantine is not None:
            self.quarantine(sid, payload, reason, detail)
        self.metrics.quarantined.inc(label=reason)
        log.error(
            "global statistics entry quarantined (not applied)",
            extra={"stream_id": sid, "reason": reason, "detail": detail[:300]},
        )
