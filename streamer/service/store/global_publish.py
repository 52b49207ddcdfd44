"""The learner's publish: checkpoint, snapshot, public global record and stream
trim in one MULTI/EXEC fenced by the lease, and the durable copy in Kafka.

The checkpoint kept in Redis (``{prefix}:learner``) leaves out the video
posteriors that the snapshot beside it holds (see :func:`redis_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time

import numpy as np
import redis
import torch

from model.checkpoint import CheckpointError, load_state_dict, state_dict, to_bytes
from model.choice_snapshot import export_checkpoint, export_snapshot
from model.online import OnlineHPMF
from streamer.event import valid_id
from streamer.reader.redis_record import (
    GlobalRecord,
    global_record_from_snapshot,
    with_choice,
    write_global_record,
)
from streamer.service.store.global_retention import queue_drop, superseded
from streamer.service.store.global_stats_record import (
    decode_snapshot,
    encode_choice_checkpoint,
    encode_choice_snapshot,
    encode_snapshot,
)

log = logging.getLogger("streamer.service.store.global_store")


# The checkpoint kept in Redis leaves out the video posteriors: the snapshot
# written in the same HSET holds exactly those arrays (float64), and storing
# them twice cost ~1 KB per video (21 MB at 20,000 videos) for nothing. The
# checkpoint written to Kafka (streamer/service/checkpoint_topic.py) is complete.
_IN_SNAPSHOT = ("v_mean", "v_cov")


def redis_checkpoint(model: OnlineHPMF) -> bytes:
    sd = state_dict(model)
    for k in _IN_SNAPSHOT:
        del sd[k]
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def load_redis_checkpoint(ckpt: bytes, snap_blob: bytes | None) -> OnlineHPMF:
    """A checkpoint from ``{prefix}:learner``: complete (older writers), or
    completed with the video posteriors of the snapshot stored beside it."""
    try:
        sd = torch.load(io.BytesIO(ckpt), weights_only=True)
    except Exception as exc:
        raise CheckpointError("not an HPMF checkpoint (unreadable archive)") from exc
    if isinstance(sd, dict) and any(k not in sd for k in _IN_SNAPSHOT):
        if snap_blob is None:
            raise CheckpointError("the learner's checkpoint lacks its snapshot")
        snap = decode_snapshot(snap_blob)
        sd["v_mean"] = torch.from_numpy(np.asarray(snap.video_mean, dtype=np.float64).copy())
        sd["v_cov"] = torch.from_numpy(np.asarray(snap.video_cov, dtype=np.float64).copy())
    return load_state_dict(sd)


def _next_id(stream_id: str) -> str:
    """The smallest stream id greater than ``stream_id`` (for XTRIM MINID)."""
    ms, seq = stream_id.split("-")
    return f"{ms}-{int(seq) + 1}"


class GlobalPublisher:
    """The publish half of :class:`streamer.service.store.global_store.GlobalStore`
    (it holds the state these methods use)."""

    def backlog(self) -> tuple[int, float]:
        """(entries, age in seconds of the oldest) of the statistics written
        but not yet applied; (0, 0.0) on a non-learner, which does not know
        the learner's position. The stream holds exactly the entries after
        the last publish (it is trimmed there), of which ``unpublished`` are
        applied already."""
        if not self.is_learner:
            return 0, 0.0
        entries = max(0, int(self.r.xlen(self.stream_key)) - self.unpublished)
        if not entries:
            return 0, 0.0
        first = self.r.xrange(self.stream_key, min=f"({self.last_id}", count=1)
        if not first:
            return 0, 0.0
        sid = first[0][0].decode() if isinstance(first[0][0], bytes) else str(first[0][0])
        # The id's first part is the Redis server's clock (ms) when it was written.
        return entries, max(0.0, time.time() - int(sid.split("-")[0]) / 1000)

    def _publishable(self, record: GlobalRecord) -> GlobalRecord:
        """The record without videos whose id cannot be published (a model
        restored from a checkpoint written before ids were checked): they are
        left out, logged once each, instead of failing every publish."""
        keep = [i for i, v in enumerate(record.video_ids) if valid_id(v, 1 << 20)]
        if len(keep) == len(record.video_ids):
            return record
        for i in sorted(set(range(len(record.video_ids))) - set(keep)):
            vid = record.video_ids[i]
            if vid not in self.unpublishable:
                self.unpublishable.add(vid)
                self.metrics.quarantined.inc(label="unpublishable_video_id")
                log.error(
                    "video left out of the published global record: id outside the alphabet",
                    extra={"video_id": vid[:80]},
                )
        idx = np.asarray(keep, dtype=np.int64)
        choice = {}
        if record.has_choice:
            assert record.choice_video_mean is not None and record.choice_video_cov is not None
            choice = {
                "choice_video_mean": record.choice_video_mean[idx],
                "choice_video_cov": record.choice_video_cov[idx],
            }
        return dataclasses.replace(
            record,
            video_ids=[record.video_ids[i] for i in keep],
            video_mean=record.video_mean[idx],
            video_cov=record.video_cov[idx],
            video_scale=record.video_scale[idx],
            **choice,
        )

    def publish(
        self, force_kafka_checkpoint: bool = False, force_choice_checkpoint: bool = False
    ) -> bool:
        """Checkpoint + snapshot + public global record + stream trim, one MULTI
        fenced by the lease (a learner that lost its lease cannot overwrite).

        With the choice component: its snapshot for the workers (``csnap``)
        at every publish, its learner checkpoint (``cckpt``: the window too,
        larger) every ``checkpoint_every_s``; the public record carries it
        when ``record_format`` is 2."""
        snap = self.model.export_globals()
        now_ms = int(time.time() * 1000)
        record = global_record_from_snapshot(snap, now_ms)
        extra: dict[str, bytes] = {}
        if self.choice is not None:
            if self.record_format >= 2:
                record = with_choice(record, self.choice)
            extra["csnap"] = encode_choice_snapshot(export_snapshot(self.choice))
            now = time.monotonic()
            if (
                force_choice_checkpoint
                or now - self.last_choice_checkpoint >= self.checkpoint_every_s
            ):
                extra["cckpt"] = encode_choice_checkpoint(export_checkpoint(self.choice))
                self.last_choice_checkpoint = now
        record = self._publishable(record)
        ckpt = redis_checkpoint(self.model)
        snap_blob = encode_snapshot(snap)
        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.lease_key)
                if pipe.get(self.lease_key) != self.worker_id.encode():
                    pipe.reset()
                    self._lose_role("lease not held at publish")
                    return False
                drop = superseded(pipe, self.prefix, snap.version, self.keep_versions)
                pipe.multi()
                pipe.hset(
                    self.learner_key,
                    mapping={
                        "ckpt": ckpt,
                        "last_id": self.last_id,
                        "gv": snap.version,
                        "snap": snap_blob,
                        # the snapshot carries it too (GlobalsSnapshot.n_seen); kept for
                        # workers of the previous release, which read it from here
                        "n_seen": int(self.model.n_seen),
                        "owner": self.worker_id,
                        "ts": now_ms,
                        **extra,
                    },
                )
                write_global_record(
                    pipe, self.prefix, record, self.global_ttl_s, self.published_version
                )
                queue_drop(pipe, self.prefix, snap.version, drop)
                if self.last_id != "0-0":
                    pipe.xtrim(self.stream_key, minid=_next_id(self.last_id))
                pipe.execute()
            except redis.WatchError:
                self._lose_role("lease changed during publish")
                return False
        self.published_version = snap.version
        self.unpublished = 0
        self.last_publish = time.monotonic()
        if self.kafka_checkpoint is not None and (
            force_kafka_checkpoint
            or self.last_publish - self.last_kafka_checkpoint >= self.checkpoint_every_s
        ):
            self._write_kafka_checkpoint(to_bytes(self.model), snap.version)
        log.debug("published globals", extra={"gv": snap.version, "stream_id": self.last_id})
        return True

    def _write_kafka_checkpoint(self, ckpt: bytes, version: int) -> None:
        """The durable copy (see streamer.service.checkpoint_topic); a failure is logged
        and retried at the next publish, the stream goes on."""
        assert self.kafka_checkpoint is not None
        self.last_kafka_checkpoint = time.monotonic()
        try:
            self.kafka_checkpoint.write(ckpt, version)
            if self.choice is not None and self.choice.clock > 0:
                # The choice component's state, under its own key in the same
                # compacted topic (read back by _load_choice after a Redis loss).
                self._choice_topic().write(
                    encode_choice_checkpoint(export_checkpoint(self.choice)), version
                )
        except Exception as exc:  # Kafka trouble must not stop the global step
            self.last_kafka_checkpoint = float("-inf")
            log.warning(
                "checkpoint to Kafka failed; retried at the next publish",
                extra={"error": repr(exc)[:300]},
            )
