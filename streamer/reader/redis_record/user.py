"""The user record ``{prefix}:u:{<user_id>}``: its dataclass and codec."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer.reader.redis_record.format import (
    F32,
    HIST_JSON,
    SCHEMA_TEXT,
    USER_CHOICE_FIELDS,
    USER_FIELDS,
    CorruptRecordError,
    FieldReader,
    f32,
    same_optional,
)
from streamer.reader.redis_record.keys import user_key

if TYPE_CHECKING:  # numpy-only too, but readers need not import model/ at run time
    from model.posterior import UserState


@dataclass
class UserRecord:
    """One user's posterior q(x) = N(mean, cov) over x = [u_1..u_k, b], plus bookkeeping.

    ``history`` is ``[(video_id, summed_raw_value, seq), ...]``, oldest first.
    """

    mean: np.ndarray  # (D,) float64
    cov: np.ndarray  # (D, D) float64
    n_events: int
    updated_ms: int  # wall clock of the write
    event_ms: int  # event time of the newest applied event
    global_version: int  # gv the posterior was computed against
    partition: int
    offset: int
    history: list[tuple[str, float, int]] = field(default_factory=list)
    choice_mean: np.ndarray | None = None  # (cd,) version 2: q(a_i) padded, [a_i, 0]
    choice_cov: np.ndarray | None = None  # (cd, cd)

    @property
    def dim(self) -> int:
        return int(np.asarray(self.mean).shape[0])

    def __eq__(self, other: object) -> bool:  # arrays make the dataclass __eq__ ambiguous
        if not isinstance(other, UserRecord):
            return NotImplemented
        return (
            np.array_equal(self.mean, other.mean)
            and np.array_equal(self.cov, other.cov)
            and (self.n_events, self.updated_ms, self.event_ms, self.global_version)
            == (other.n_events, other.updated_ms, other.event_ms, other.global_version)
            and (self.partition, self.offset) == (other.partition, other.offset)
            and [tuple(h) for h in self.history] == [tuple(h) for h in other.history]
            and same_optional(self.choice_mean, other.choice_mean)
            and same_optional(self.choice_cov, other.choice_cov)
        )


# ---------------------------------------------------------------- user record
def encode_user_record(rec: UserRecord) -> dict[str, bytes]:
    """The HASH fields of a user record, in the documented order."""
    mean = np.asarray(rec.mean, dtype=np.float64)
    d = mean.shape[0]
    cov = np.asarray(rec.cov, dtype=np.float64)
    if mean.shape != (d,) or cov.shape != (d, d):
        raise ValueError(f"user record mean {mean.shape} and cov {cov.shape} do not match")
    values = _user_field_values(rec, d, mean.astype(F32).tobytes(), cov.astype(F32).tobytes())
    out = dict(zip(USER_FIELDS, values, strict=True))
    if rec.choice_mean is not None or rec.choice_cov is not None:
        out.update(_user_choice_fields(rec))
    return out


def _user_choice_fields(rec: UserRecord) -> dict[str, bytes]:
    """Version 2: ``v`` becomes 2 and the choice posterior follows the v1 fields."""
    if rec.choice_mean is None or rec.choice_cov is None:
        raise ValueError("a user record's choice posterior needs both choice_mean and choice_cov")
    cm = np.asarray(rec.choice_mean, dtype=np.float64)
    cd = cm.shape[0] if cm.ndim == 1 else -1
    cc = np.asarray(rec.choice_cov, dtype=np.float64)
    if cm.shape != (cd,) or cc.shape != (cd, cd):
        raise ValueError(f"user record choice mean {cm.shape} and cov {cc.shape} do not match")
    return {"v": b"2", "cd": b"%d" % cd, "cmean": f32(cm), "ccov": f32(cc)}


def _user_field_values(
    rec: UserRecord, d: int, mean_f32: bytes, cov_f32: bytes
) -> tuple[bytes, ...]:
    """A user record's field values in :data:`USER_FIELDS` order, its arrays
    already as float32 bytes (the one place that writes the user layout)."""
    hist = [[str(vid), float(val), int(seq)] for vid, val, seq in rec.history]
    # b"%d" % int(x) is the bytes of str(int(x)) (_int_text), without the str round trip.
    return (
        SCHEMA_TEXT,
        b"%d" % d,
        mean_f32,
        cov_f32,
        b"%d" % int(rec.n_events),
        b"%d" % int(rec.updated_ms),
        b"%d" % int(rec.event_ms),
        b"%d" % int(rec.global_version),
        b"%d" % int(rec.partition),
        b"%d" % int(rec.offset),
        # compact JSON; allow_nan=False keeps it parseable by every JSON library
        HIST_JSON.encode(hist).encode(),
    )


def encode_user_records(records: Sequence[UserRecord]) -> list[tuple[bytes, ...]]:
    """:func:`encode_user_record` for many records: per record the field
    values in :data:`USER_FIELDS` order, the same bytes. A worker's batch
    writes hundreds of users; converting their arrays to float32 in one numpy
    call instead of two per user saves most of the encoding time.

    >>> recs = [UserRecord(np.full(2, k), np.eye(2), k, 5, 4, 3, 0, 9, [("v1", 2.5, 1)]) for k in range(3)]
    >>> encode_user_records(recs) == [tuple(encode_user_record(r).values()) for r in recs]
    True
    >>> for r in recs: r.choice_mean, r.choice_cov = np.ones(3), np.eye(3)  # version 2
    >>> encode_user_records(recs) == [tuple(encode_user_record(r).values()) for r in recs]
    True
    """
    if not records:
        return []
    v2 = [r.choice_mean is not None or r.choice_cov is not None for r in records]
    if any(v2) and not all(v2):
        return [
            tuple(encode_user_record(r).values()) for r in records
        ]  # mixed versions: one by one
    means = [np.asarray(r.mean, dtype=np.float64) for r in records]
    covs = [np.asarray(r.cov, dtype=np.float64) for r in records]
    d = means[0].shape[0] if means[0].ndim == 1 else -1
    if any(m.shape != (d,) for m in means) or any(c.shape != (d, d) for c in covs):
        return [tuple(encode_user_record(r).values()) for r in records]  # mixed sizes: one by one
    mean_bytes = np.stack(means).astype(F32).tobytes()
    cov_bytes = np.stack(covs).astype(F32).tobytes()
    mb, cb = 4 * d, 4 * d * d
    out = [
        _user_field_values(
            rec, d, mean_bytes[k * mb : (k + 1) * mb], cov_bytes[k * cb : (k + 1) * cb]
        )
        for k, rec in enumerate(records)
    ]
    if not v2[0]:
        return out
    # Version 2, the same batching for the choice posteriors (the worker's
    # records all carry one when it writes version 2).
    cms = [np.asarray(r.choice_mean, dtype=np.float64) for r in records]
    ccs = [np.asarray(r.choice_cov, dtype=np.float64) for r in records]
    cd = cms[0].shape[0] if cms[0].ndim == 1 else -1
    if cd < 1 or any(m.shape != (cd,) for m in cms) or any(c.shape != (cd, cd) for c in ccs):
        return [
            tuple(encode_user_record(r).values()) for r in records
        ]  # one by one (raises if malformed)
    cm_bytes = np.stack(cms).astype(F32).tobytes()
    cc_bytes = np.stack(ccs).astype(F32).tobytes()
    cmb, ccb, cd_text = 4 * cd, 4 * cd * cd, b"%d" % cd
    return [
        (
            b"2",
            *vals[1:],
            cd_text,
            cm_bytes[k * cmb : (k + 1) * cmb],
            cc_bytes[k * ccb : (k + 1) * ccb],
        )
        for k, vals in enumerate(out)
    ]


def decode_user_record(fields: Mapping[Any, Any], key: str | None = None) -> UserRecord:
    """A user record from HGETALL output. Raises SchemaVersionError or CorruptRecordError."""
    r = FieldReader(fields, key, USER_FIELDS)
    d = r.int("d", lo=0)
    history = _decode_history(r.f["hist"], key)
    choice_mean = choice_cov = None
    if r.version >= 2:
        r.require(USER_CHOICE_FIELDS)
        cd = r.int("cd", lo=1)
        choice_mean, choice_cov = r.array("cmean", (cd,)), r.array("ccov", (cd, cd))
    return UserRecord(
        mean=r.array("mean", (d,)),
        cov=r.array("cov", (d, d)),
        n_events=r.int("n", lo=0),
        updated_ms=r.int("ts"),
        event_ms=r.int("et"),
        global_version=r.int("gv", lo=0),
        partition=r.int("p"),
        offset=r.int("o"),
        history=history,
        choice_mean=choice_mean,
        choice_cov=choice_cov,
    )


def _history_columns(
    raw: bytes, key: str | None
) -> tuple[tuple[str, ...], tuple[float, ...], tuple[int, ...]]:
    """``[[video_id, summed_value, seq], ...]`` with the types checked, as
    three columns. The checks run in C (``map(type, ...)`` over columns): a
    per-item Python check tripled the cost of reading a user back."""
    try:
        items = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptRecordError(key, f"field 'hist' is not JSON: {exc}") from None
    if type(items) is not list:
        raise CorruptRecordError(key, _HIST_SHAPE)
    if not items:
        return (), (), ()
    # bool is not int here: type() is exact, unlike isinstance. zip(strict)
    # refuses rows of unequal length; rows of another length than 3 fail the unpack.
    try:
        if set(map(type, items)) != {list}:
            raise ValueError
        vids, vals, seqs = zip(*items, strict=True)
    except ValueError:
        raise CorruptRecordError(key, _HIST_SHAPE) from None
    val_types = set(map(type, vals))
    if (
        set(map(type, vids)) != {str}
        or not val_types <= _NUMBER_TYPES
        or set(map(type, seqs)) != {int}
    ):
        raise CorruptRecordError(key, _HIST_SHAPE)
    return vids, (vals if val_types == {float} else tuple(map(float, vals))), seqs


_HIST_SHAPE = "field 'hist' is not a list of [video_id, value, seq]"
_NUMBER_TYPES = {int, float}


def _decode_history(raw: bytes, key: str | None) -> list[tuple[str, float, int]]:
    """``[[video_id, summed_value, seq], ...]`` with the types checked."""
    return list(zip(*_history_columns(raw, key), strict=True))


def user_field_names(rec: UserRecord) -> tuple[str, ...]:
    """The field names of ``rec``'s encoding, in order: version 1's, then
    version 2's choice fields if it carries a choice posterior."""
    if rec.choice_mean is not None or rec.choice_cov is not None:
        return (*USER_FIELDS, *USER_CHOICE_FIELDS)
    return USER_FIELDS


def user_record_from_state(
    state: UserState, *, updated_ms: int, event_ms: int, partition: int, offset: int
) -> UserRecord:
    """The record of a :class:`model.posterior.UserState` (its history dict kept in order)."""
    if state.mean is None or state.cov is None:
        raise ValueError("a user state without a posterior cannot be written")
    return UserRecord(
        mean=np.asarray(state.mean, dtype=np.float64),
        cov=np.asarray(state.cov, dtype=np.float64),
        n_events=int(state.n_events),
        updated_ms=int(updated_ms),
        event_ms=int(event_ms),
        global_version=int(state.model_version),
        partition=int(partition),
        offset=int(offset),
        history=[(vid, float(val), int(seq)) for vid, (val, seq) in state.history.items()],
    )


def user_state_from_record(rec: UserRecord) -> UserState:
    """Back to a :class:`model.posterior.UserState` (for the worker that reads its users)."""
    from model.posterior import UserState  # numpy-only; imported lazily for readers

    return UserState(
        history={vid: (val, seq) for vid, val, seq in rec.history},
        n_events=rec.n_events,
        mean=rec.mean.copy(),
        cov=rec.cov.copy(),
        model_version=rec.global_version,
    )


def queue_user_record(pipe: Any, prefix: str, user_id: object, rec: UserRecord, ttl_s: int) -> None:
    """Queue HSET + EXPIRE of one user record on ``pipe`` (a redis-py pipeline,
    transactional so that readers never see a half-written hash). Every field
    is written each time, so no DEL is needed."""
    key = user_key(prefix, user_id)
    pipe.hset(key, mapping=encode_user_record(rec))
    pipe.expire(key, int(ttl_s))


def read_user_record(client: Any, prefix: str, user_id: object) -> UserRecord | None:
    """HGETALL + decode; None for a missing user. Raises RecordError subclasses."""
    key = user_key(prefix, user_id)
    fields = client.hgetall(key)
    return decode_user_record(fields, key) if fields else None


def read_applied_offset(client: Any, key: str) -> tuple[int, int] | None:
    """(partition, offset) of the last event applied to the user record at
    ``key`` (its ``p`` and ``o`` fields), or None while there is no such record.
    Raises CorruptRecordError when the fields are not integers."""
    p, o = client.hmget(key, "p", "o")
    if p is None or o is None:
        return None
    try:
        return int(p), int(o)
    except ValueError:
        raise CorruptRecordError(key, "unreadable partition or offset") from None


USER_READ_FIELDS = ("n", "p", "o", "et", "hist", "mean", "cov")
"""The fields of a user record the streaming service reads back for its next
batch (its read script asks for these, then its own internal fields)."""


@dataclass
class UserReadBack:
    """What the service reads back of a user record (:data:`USER_READ_FIELDS`)."""

    n_events: int
    partition: int
    offset: int
    event_ms: int
    history: dict[str, tuple[float, int]]  # video id -> (summed value, seq), oldest first
    mean: np.ndarray | None  # None when the stored arrays do not match
    cov: np.ndarray | None


def decode_user_read(values: Sequence[bytes], key: str | None = None) -> UserReadBack:
    """The :data:`USER_READ_FIELDS` values, in that order, as the service's read
    script returns them. The history is checked as :func:`decode_user_record`
    checks it. Raises CorruptRecordError (a ValueError)."""
    n, p, o, et, hist, mean, cov = values
    try:
        counts = int(n), int(p), int(o), int(et or 0)
    except ValueError:
        raise CorruptRecordError(key, "unreadable counts or offsets") from None
    vids, vals, seqs = _history_columns(hist, key)
    history = dict(zip(vids, zip(vals, seqs, strict=True), strict=True))
    d = len(mean) // 4
    m = c = None
    if d and len(mean) == 4 * d and len(cov) == 4 * d * d:
        m = np.frombuffer(mean, F32).astype(np.float64)
        c = np.frombuffer(cov, F32).astype(np.float64).reshape(d, d)
    return UserReadBack(*counts, history, m, c)
