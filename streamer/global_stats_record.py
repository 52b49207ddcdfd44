"""Internal Redis payloads of the globals pipeline (not part of the published
contract in docs/redis_format.md; only the streaming service reads them).

* A batch's :class:`model.online.GlobalStats` -- what a worker's local step
  hands to the learner -- as an entry of the stream ``{prefix}:gstats``.
* The learner's :class:`model.globals_snapshot.GlobalsSnapshot`, which
  non-learner workers import to compute against the newest globals (the public
  global record lacks the local step's prior scales, so it is not enough).

Both are one bytes blob: a JSON header line, then the arrays as ``np.save``
(``.npy``: dtype and shape self-described, no pickle), in header order.
Arrays keep float64: the learner must see exactly what the worker computed,
so one worker and N workers feed the global step identical numbers.

>>> import numpy as np
>>> from model.online import GlobalStats
>>> s = GlobalStats(["a"], np.eye(2)[None], np.ones((1, 2)), np.zeros((1, 2)), np.eye(2)[None],
...                 np.array([0]), np.array([0]), np.array([1.5]), 1)
>>> t = decode_stats(encode_stats(s))
>>> t.video_ids, t.n_events, bool((t.video_prec == s.video_prec).all())
(['a'], 1, True)
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from model.globals_snapshot import GlobalsSnapshot
from model.online import GlobalStats

STATS_FORMAT = "hpmf.gstats.1"
SNAPSHOT_FORMAT = "hpmf.gsnap.1"
_STATS_ARRAYS = ("video_prec", "video_shift", "user_mean", "user_cov", "event_user", "event_video", "target")
_SNAP_ARRAYS = (
    "user_prior_mean", "user_prior_scale", "user_prior_cov", "video_prior_mean",
    "video_prior_scale", "video_mean", "video_cov",
)  # fmt: skip


class BlobError(ValueError):
    """An internal payload of another format or a truncated one."""


def _pack(header: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    buf.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
    for a in arrays:
        np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _unpack(blob: bytes, fmt: str, n: int) -> tuple[dict[str, Any], list[np.ndarray]]:
    buf = io.BytesIO(blob)
    try:
        header = json.loads(buf.readline())
        if header.get("format") != fmt:
            raise BlobError(f"payload format {header.get('format')!r}, expected {fmt!r}")
        arrays = [np.load(buf, allow_pickle=False) for _ in range(n)]
    except (ValueError, OSError, EOFError) as exc:
        raise BlobError(f"unreadable {fmt} payload: {exc}") from exc
    return header, arrays


def encode_stats(stats: GlobalStats) -> bytes:
    header = {"format": STATS_FORMAT, "video_ids": list(stats.video_ids), "n_events": int(stats.n_events)}
    return _pack(header, [getattr(stats, k) for k in _STATS_ARRAYS])


def decode_stats(blob: bytes) -> GlobalStats:
    header, arrays = _unpack(blob, STATS_FORMAT, len(_STATS_ARRAYS))
    return GlobalStats(video_ids=list(header["video_ids"]), n_events=int(header["n_events"]),
                       **dict(zip(_STATS_ARRAYS, arrays, strict=True)))  # fmt: skip


def encode_snapshot(snap: GlobalsSnapshot) -> bytes:
    header = {
        "format": SNAPSHOT_FORMAT, "version": int(snap.version), "config": snap.config,
        "b0": float(snap.b0), "sigma": float(snap.sigma), "video_ids": list(snap.video_ids),
    }  # fmt: skip
    return _pack(header, [np.asarray(getattr(snap, k)) for k in _SNAP_ARRAYS])


def decode_snapshot(blob: bytes) -> GlobalsSnapshot:
    header, arrays = _unpack(blob, SNAPSHOT_FORMAT, len(_SNAP_ARRAYS))
    return GlobalsSnapshot(
        version=int(header["version"]), config=header["config"], b0=float(header["b0"]),
        sigma=float(header["sigma"]), video_ids=list(header["video_ids"]),
        **dict(zip(_SNAP_ARRAYS, arrays, strict=True)),
    )  # fmt: skip
