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

import dataclasses
import io
import json
from typing import Any

import numpy as np

from model.choice_snapshot import ChoiceCheckpoint, ChoiceSnapshot
from model.globals_snapshot import GlobalsSnapshot
from model.online import GlobalStats

STATS_FORMAT = "hpmf.gstats.1"
SNAPSHOT_FORMAT = "hpmf.gsnap.1"
CHOICE_SNAPSHOT_FORMAT = "hpmf.csnap.1"
CHOICE_CHECKPOINT_FORMAT = "hpmf.cckpt.1"


class BlobError(ValueError):
    """An internal payload of another format or a truncated one."""


def _pack(header: dict[str, Any], arrays: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    buf.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
    for a in arrays:
        np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _encode(obj: Any, fmt: str) -> bytes:
    """Every field of the dataclass: numpy arrays as .npy, the rest in the JSON
    header. Generic on purpose: a field the model owner adds travels too."""
    header: dict[str, Any] = {"format": fmt, "arrays": [], "fields": {}}
    arrays = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            header["arrays"].append(f.name)
            arrays.append(value)
        else:
            header["fields"][f.name] = value
    return _pack(header, arrays)


def _decode(blob: bytes, fmt: str, cls: Any) -> Any:
    buf = io.BytesIO(blob)
    try:
        header = json.loads(buf.readline())
        if header.get("format") != fmt:
            raise BlobError(f"payload format {header.get('format')!r}, expected {fmt!r}")
        values = dict(header["fields"])
        for name in header["arrays"]:
            values[name] = np.load(buf, allow_pickle=False)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
    except (ValueError, OSError, EOFError, KeyError, TypeError) as exc:
        if isinstance(exc, BlobError):
            raise
        raise BlobError(f"unreadable {fmt} payload: {exc}") from exc


def encode_stats(stats: GlobalStats) -> bytes:
    return _encode(stats, STATS_FORMAT)


def decode_stats(blob: bytes) -> GlobalStats:
    return _decode(blob, STATS_FORMAT, GlobalStats)  # type: ignore[no-any-return]


def encode_snapshot(snap: GlobalsSnapshot) -> bytes:
    return _encode(snap, SNAPSHOT_FORMAT)


def decode_snapshot(blob: bytes) -> GlobalsSnapshot:
    return _decode(blob, SNAPSHOT_FORMAT, GlobalsSnapshot)  # type: ignore[no-any-return]


def encode_choice_snapshot(snap: ChoiceSnapshot) -> bytes:
    """The choice component's globals for the workers (``csnap`` in ``{prefix}:learner``)."""
    return _encode(snap, CHOICE_SNAPSHOT_FORMAT)


def decode_choice_snapshot(blob: bytes) -> ChoiceSnapshot:
    return _decode(blob, CHOICE_SNAPSHOT_FORMAT, ChoiceSnapshot)  # type: ignore[no-any-return]


def encode_choice_checkpoint(ck: ChoiceCheckpoint) -> bytes:
    """The choice learner's state (``cckpt``): its snapshot's blob, then the
    rest, each length-prefixed (the snapshot is a dataclass of its own).

    >>> import numpy as np
    >>> from model.choice import ChoiceModel, ChoiceConfig
    >>> from model.choice_snapshot import export_checkpoint
    >>> m = ChoiceModel(ChoiceConfig(n_factors=2))
    >>> _ = m.learn_event("ann", "a", None)
    >>> ck = decode_choice_checkpoint(encode_choice_checkpoint(export_checkpoint(m)))
    >>> ck.snapshot.video_ids, ck.pair_users, ck.clock
    (['a'], ['ann'], 1)
    """
    head = encode_choice_snapshot(ck.snapshot)
    rest = _encode(dataclasses.replace(ck, snapshot=None), CHOICE_CHECKPOINT_FORMAT)
    return b"%d\n" % len(head) + head + rest


def decode_choice_checkpoint(blob: bytes) -> ChoiceCheckpoint:
    try:
        n_text, _, body = blob.partition(b"\n")
        n = int(n_text)
    except ValueError as exc:
        raise BlobError(f"unreadable {CHOICE_CHECKPOINT_FORMAT} payload: {exc}") from exc
    snap = decode_choice_snapshot(body[:n])
    ck = _decode(body[n:], CHOICE_CHECKPOINT_FORMAT, ChoiceCheckpoint)
    ck.snapshot = snap
    return ck  # type: ignore[no-any-return]
