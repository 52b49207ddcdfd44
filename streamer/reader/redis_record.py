"""The Redis record codec: the published format of docs/redis_format.md, version 1.

This module is the one place that knows the byte layout. The streaming service
(the only writer) encodes with it; the reader library (:mod:`streamer.reader.lookup`)
decodes with it. It imports numpy and the standard library only (no torch, no
Kafka), so any reader service can use it.

Layout in brief (the doc is the contract):

* user ``{prefix}:u:{<user_id>}``: HASH ``v d mean cov n ts et gv p o hist``;
* global ``{prefix}:g:{<version>}``: HASH ``v gv d k biases transform b0 sigma
  prior_mean prior_cov n_videos video_ids video_mean video_cov video_scale ts``;
* ``{prefix}:g:current``: STRING, the newest complete global version.

Integers and floats are ASCII decimal text; arrays are little-endian float32,
row-major, no header. Arrays decode to float64 (the model computes in float64;
storing float32 costs ~1e-7 relative precision, far below posterior spreads).

>>> user_key("hpmf", 42), global_key("hpmf", 7), global_current_key("hpmf")
('hpmf:u:{42}', 'hpmf:g:{7}', 'hpmf:g:current')
>>> rec = UserRecord(np.zeros(2), np.eye(2), 1, 5, 4, 3, 0, 9, [("v1", 2.5, 1)])
>>> decode_user_record(encode_user_record(rec)) == rec
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from model.transform import TRANSFORMS

if TYPE_CHECKING:  # numpy-only too, but readers need not import model/ at run time
    from model.globals_snapshot import GlobalsSnapshot
    from model.posterior import UserState

SCHEMA_VERSION = 2
"""The newest record format. Version 2 adds the choice component (issue #13);
a record without one is still written in the version 1 layout, byte for byte,
and readers accept both (:data:`SCHEMA_VERSIONS`)."""
SCHEMA_VERSIONS = (1, 2)
F32 = np.dtype("<f4")  # the wire dtype of every array

USER_FIELDS = ("v", "d", "mean", "cov", "n", "ts", "et", "gv", "p", "o", "hist")
GLOBAL_FIELDS = (
    "v",
    "gv",
    "d",
    "k",
    "biases",
    "transform",
    "b0",
    "sigma",
    "prior_mean",
    "prior_cov",
    "n_videos",
    "video_ids",
    "video_mean",
    "video_cov",
    "video_scale",
    "ts",
)
USER_CHOICE_FIELDS = ("cd", "cmean", "ccov")
"""Version 2's extra user fields: the choice posterior q(a_i) padded to cd = K_c + 1 dims."""
GLOBAL_CHOICE_FIELDS = (
    "cd",
    "choice_prior_mean",
    "choice_prior_cov",
    "choice_video_mean",
    "choice_video_cov",
)
"""Version 2's extra global fields: the choice component's pooled user prior and
its video posteriors, in ``video_ids`` order."""


# ---------------------------------------------------------------- errors
class RecordError(ValueError):
    """A Redis record that cannot be used. Catch this to handle every case below."""

    def __init__(self, key: str | None, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class SchemaVersionError(RecordError):
    """The record's ``v`` is not a schema version this code knows (1 or 2)."""

    def __init__(self, key: str | None, found: str) -> None:
        self.found = found
        known = " and ".join(str(x) for x in SCHEMA_VERSIONS)
        super().__init__(key, f"record schema version {found!r}, this reader knows {known}")


class CorruptRecordError(RecordError):
    """Missing fields, wrong array byte lengths, unparsable text or JSON, non-finite arrays."""


# ---------------------------------------------------------------- keys
def user_key(prefix: str, user_id: object) -> str:
    """``{prefix}:u:{<user_id>}``: the hash tag keeps one user's keys in one cluster slot."""
    return f"{prefix}:u:{{{user_id}}}"


def global_key(prefix: str, version: int) -> str:
    """``{prefix}:g:{<version>}``: one complete global record."""
    return f"{prefix}:g:{{{int(version)}}}"


def global_current_key(prefix: str) -> str:
    """``{prefix}:g:current``: the newest complete global version, as text."""
    return f"{prefix}:g:current"


def global_prefix(prefix: str, cluster: bool) -> str:
    """The prefix of the global and learner keys: ``prefix`` on one Redis;
    ``{prefix}`` on a Redis Cluster, one hash tag, so that every global key
    (``g:current``, ``g:{<version>}``, ``g:versions``, ``learner``,
    ``learner:lease``, ``gstats``, ``epoch``) lives in one slot and the
    learner's publish stays one transaction. Pass the result as ``prefix`` to
    :func:`global_key` and :func:`global_current_key`; user keys keep the
    plain prefix (their own hash tag is the user id).

    >>> global_current_key(global_prefix("hpmf", True)), global_key(global_prefix("hpmf", True), 7)
    ('{hpmf}:g:current', '{hpmf}:g:{7}')
    >>> global_current_key(global_prefix("hpmf", False))
    'hpmf:g:current'
    """
    return f"{{{prefix}}}" if cluster else prefix


def is_cluster_client(client: object) -> bool:
    """True for redis-py's ``RedisCluster`` (or a pipeline of one)."""
    return getattr(client, "nodes_manager", None) is not None


# ---------------------------------------------------------------- records
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
            and _same_optional(self.choice_mean, other.choice_mean)
            and _same_optional(self.choice_cov, other.choice_cov)
        )


@dataclass
class GlobalRecord:
    """The globals a reader needs: noise, offsets, pooled prior, video posteriors.

    Prediction on the model scale: y = b0 + u.v + b + c ~ N(., sigma^2 + ...);
    ``transform`` maps y back to raw units.
    """

    version: int
    dim: int  # D
    n_factors: int  # k
    biases: bool
    transform: str
    b0: float
    sigma: float
    prior_mean: np.ndarray  # (D,)
    prior_cov: np.ndarray  # (D, D)
    video_ids: list[str]
    video_mean: np.ndarray  # (V, D)
    video_cov: np.ndarray  # (V, D, D)
    video_scale: np.ndarray  # (V, D) sqrt(diag(video_cov))
    updated_ms: int
    # version 2: the choice component (model/choice.py); None in a version 1 record
    choice_prior_mean: np.ndarray | None = None  # (cd,)
    choice_prior_cov: np.ndarray | None = None  # (cd, cd)
    choice_video_mean: np.ndarray | None = None  # (V, cd) [z_j, e_j]
    choice_video_cov: np.ndarray | None = None  # (V, cd, cd)

    @property
    def has_choice(self) -> bool:
        return self.choice_video_mean is not None

    @property
    def n_videos(self) -> int:
        return len(self.video_ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GlobalRecord):
            return NotImplemented
        scalars = (
            "version",
            "dim",
            "n_factors",
            "biases",
            "transform",
            "b0",
            "sigma",
            "updated_ms",
        )
        arrays = ("prior_mean", "prior_cov", "video_mean", "video_cov", "video_scale")
        choice = ("choice_prior_mean", "choice_prior_cov", "choice_video_mean", "choice_video_cov")
        return (
            all(getattr(self, s) == getattr(other, s) for s in scalars)
            and list(self.video_ids) == list(other.video_ids)
            and all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays)
            and all(_same_optional(getattr(self, a), getattr(other, a)) for a in choice)
        )


def _same_optional(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


# ---------------------------------------------------------------- primitives
def _f32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=F32).tobytes()


def _int_text(x: int) -> bytes:
    return str(int(x)).encode("ascii")


def _float_text(x: float) -> bytes:
    # repr of a Python float is the shortest text that round-trips exactly
    return repr(float(x)).encode("ascii")


# One encoder for every history (json.dumps builds a new one per call); the
# same settings as json.dumps(hist, separators=(",", ":"), ensure_ascii=False,
# allow_nan=False), so the same text.
_HIST_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_SCHEMA_TEXT = b"1"  # the version 1 layout; _user_choice_fields makes it 2


def _normalise(fields: Mapping[Any, Any]) -> dict[str, bytes]:
    """Field names as str, values as bytes (redis-py gives bytes for both)."""
    out: dict[str, bytes] = {}
    for k, v in fields.items():
        name = k.decode("utf-8", "replace") if isinstance(k, bytes | bytearray) else str(k)
        out[name] = v.encode("utf-8") if isinstance(v, str) else bytes(v)
    return out


class _Reader:
    """Field access with typed errors; ``key`` only labels the messages."""

    def __init__(self, fields: Mapping[Any, Any], key: str | None, names: Sequence[str]) -> None:
        self.key = key
        self.f = _normalise(fields)
        if "v" not in self.f:
            raise CorruptRecordError(key, "missing field 'v' (schema version)")
        v = self.f["v"].decode("ascii", "replace").strip()
        if v not in [str(x) for x in SCHEMA_VERSIONS]:
            raise SchemaVersionError(key, v)
        self.version = int(v)
        missing = [n for n in names if n not in self.f]
        if missing:
            raise CorruptRecordError(key, f"missing field(s) {', '.join(missing)}")

    def require(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self.f]
        if missing:
            raise CorruptRecordError(self.key, f"missing field(s) {', '.join(missing)}")

    def int(self, name: str, lo: int | None = None) -> int:
        raw = self.f[name]
        try:
            value = int(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CorruptRecordError(
                self.key, f"field {name!r} is not an integer: {raw[:40]!r}"
            ) from None
        if lo is not None and value < lo:
            raise CorruptRecordError(self.key, f"field {name!r} is {value}, must be >= {lo}")
        return value

    def float(self, name: str) -> float:
        raw = self.f[name]
        try:
            value = float(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CorruptRecordError(
                self.key, f"field {name!r} is not a number: {raw[:40]!r}"
            ) from None
        if not math.isfinite(value):
            raise CorruptRecordError(self.key, f"field {name!r} is not finite: {value}")
        return value

    def text(self, name: str) -> str:
        try:
            return self.f[name].decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptRecordError(self.key, f"field {name!r} is not UTF-8 text") from None

    def array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        raw = self.f[name]
        want = 4 * math.prod(shape)
        if len(raw) != want:
            raise CorruptRecordError(
                self.key, f"field {name!r} has {len(raw)} bytes, expected {want} (float32 {shape})"
            )
        a = np.frombuffer(raw, dtype=F32).astype(np.float64).reshape(shape)
        if not np.isfinite(a).all():
            raise CorruptRecordError(self.key, f"field {name!r} holds NaN or infinity")
        return a


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
    return {"v": b"2", "cd": b"%d" % cd, "cmean": _f32(cm), "ccov": _f32(cc)}


def _user_field_values(
    rec: UserRecord, d: int, mean_f32: bytes, cov_f32: bytes
) -> tuple[bytes, ...]:
    """A user record's field values in :data:`USER_FIELDS` order, its arrays
    already as float32 bytes (the one place that writes the user layout)."""
    hist = [[str(vid), float(val), int(seq)] for vid, val, seq in rec.history]
    # b"%d" % int(x) is the bytes of str(int(x)) (_int_text), without the str round trip.
    return (
        _SCHEMA_TEXT,
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
        _HIST_JSON.encode(hist).encode(),
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
    r = _Reader(fields, key, USER_FIELDS)
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


def _decode_history(raw: bytes, key: str | None) -> list[tuple[str, float, int]]:
    """``[[video_id, summed_value, seq], ...]`` with the types checked."""
    try:
        items = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptRecordError(key, f"field 'hist' is not JSON: {exc}") from None
    ok = isinstance(items, list) and all(
        isinstance(h, list)
        and len(h) == 3
        and isinstance(h[0], str)
        and isinstance(h[1], int | float)
        and not isinstance(h[1], bool)
        and isinstance(h[2], int)
        and not isinstance(h[2], bool)
        for h in items
    )
    if not ok:
        raise CorruptRecordError(key, "field 'hist' is not a list of [video_id, value, seq]")
    return [(vid, float(val), int(seq)) for vid, val, seq in items]


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


# ---------------------------------------------------------------- global record
def encode_global_record(rec: GlobalRecord) -> dict[str, bytes]:
    """The HASH fields of a global record, in the documented order."""
    d, v = int(rec.dim), len(rec.video_ids)
    if d != rec.n_factors + (1 if rec.biases else 0):
        raise ValueError(f"dim {d} != n_factors {rec.n_factors} + biases {rec.biases}")
    if rec.transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {rec.transform!r}")
    shapes = {
        "prior_mean": (d,),
        "prior_cov": (d, d),
        "video_mean": (v, d),
        "video_cov": (v, d, d),
        "video_scale": (v, d),
    }
    for name, shape in shapes.items():
        got = np.shape(getattr(rec, name))
        if tuple(got) != shape:
            raise ValueError(f"global record {name} has shape {tuple(got)}, expected {shape}")
    ids = [str(x) for x in rec.video_ids]
    if any("\n" in x for x in ids):
        raise ValueError("video ids must not contain a newline (the field is newline-joined)")
    return {
        "v": b"1",  # version 1 layout unless the choice fields below make it 2
        "gv": _int_text(rec.version),
        "d": _int_text(d),
        "k": _int_text(rec.n_factors),
        "biases": b"1" if rec.biases else b"0",
        "transform": rec.transform.encode("ascii"),
        "b0": _float_text(rec.b0),
        "sigma": _float_text(rec.sigma),
        "prior_mean": _f32(rec.prior_mean),
        "prior_cov": _f32(rec.prior_cov),
        "n_videos": _int_text(v),
        "video_ids": "\n".join(ids).encode("utf-8"),
        "video_mean": _f32(rec.video_mean),
        "video_cov": _f32(rec.video_cov),
        "video_scale": _f32(rec.video_scale),
        "ts": _int_text(rec.updated_ms),
        **(_global_choice_fields(rec) if rec.has_choice else {}),
    }


def _global_choice_fields(rec: GlobalRecord) -> dict[str, bytes]:
    """Version 2: ``v`` becomes 2 and the choice component follows the v1 fields."""
    arrays = (
        rec.choice_prior_mean,
        rec.choice_prior_cov,
        rec.choice_video_mean,
        rec.choice_video_cov,
    )
    if any(a is None for a in arrays):
        raise ValueError("a global record's choice component needs all four choice arrays")
    pm = np.asarray(rec.choice_prior_mean)
    cd, v = (pm.shape[0] if pm.ndim == 1 else -1), len(rec.video_ids)
    shapes = {
        "choice_prior_mean": (cd,),
        "choice_prior_cov": (cd, cd),
        "choice_video_mean": (v, cd),
        "choice_video_cov": (v, cd, cd),
    }
    for name, shape in shapes.items():
        got = np.shape(getattr(rec, name))
        if tuple(got) != shape or cd < 1:
            raise ValueError(f"global record {name} has shape {tuple(got)}, expected {shape}")
    return {"v": b"2", "cd": _int_text(cd), **{name: _f32(getattr(rec, name)) for name in shapes}}


def decode_global_record(fields: Mapping[Any, Any], key: str | None = None) -> GlobalRecord:
    """A global record from HGETALL output. Raises SchemaVersionError or CorruptRecordError."""
    r = _Reader(fields, key, GLOBAL_FIELDS)
    d, k, v = r.int("d", lo=0), r.int("k", lo=0), r.int("n_videos", lo=0)
    biases_txt = r.text("biases")
    if biases_txt not in ("0", "1"):
        raise CorruptRecordError(key, f"field 'biases' is {biases_txt!r}, expected 0 or 1")
    biases = biases_txt == "1"
    if d != k + (1 if biases else 0):
        raise CorruptRecordError(key, f"d={d} but k={k} and biases={int(biases)}")
    transform = r.text("transform")
    if transform not in TRANSFORMS:
        raise CorruptRecordError(key, f"unknown transform {transform!r}")
    # V = 0 joins to b"", which must not split into one empty id.
    ids = r.text("video_ids").split("\n") if v else []
    if len(ids) != v:
        raise CorruptRecordError(key, f"n_videos={v} but video_ids holds {len(ids)} ids")
    sigma = r.float("sigma")
    if sigma <= 0:
        raise CorruptRecordError(key, f"sigma must be > 0, got {sigma}")
    return GlobalRecord(
        version=r.int("gv", lo=0),
        dim=d,
        n_factors=k,
        biases=biases,
        transform=transform,
        b0=r.float("b0"),
        sigma=sigma,
        prior_mean=r.array("prior_mean", (d,)),
        prior_cov=r.array("prior_cov", (d, d)),
        video_ids=ids,
        video_mean=r.array("video_mean", (v, d)),
        video_cov=r.array("video_cov", (v, d, d)),
        video_scale=r.array("video_scale", (v, d)),
        updated_ms=r.int("ts"),
        **_decode_global_choice(r, v),
    )


def _decode_global_choice(r: _Reader, v: int) -> dict[str, np.ndarray]:
    if r.version < 2:
        return {}
    r.require(GLOBAL_CHOICE_FIELDS)
    cd = r.int("cd", lo=1)
    return {
        "choice_prior_mean": r.array("choice_prior_mean", (cd,)),
        "choice_prior_cov": r.array("choice_prior_cov", (cd, cd)),
        "choice_video_mean": r.array("choice_video_mean", (v, cd)),
        "choice_video_cov": r.array("choice_video_cov", (v, cd, cd)),
    }


def global_record_from_snapshot(snap: GlobalsSnapshot, updated_ms: int) -> GlobalRecord:
    """The published record of a :class:`model.globals_snapshot.GlobalsSnapshot`.

    The pooled prior a new user gets is N(E[mu_u], user_prior_cov) (the local
    step's scale plus the uncertainty of mu_u), exactly what
    ``OnlineHPMF.pooled_prior`` hands a ``None`` user. ``video_scale`` is
    sqrt(diag(video_cov)), stored so that Thompson draws need no (V, D, D) pass.
    """
    cfg = snap.config
    vm = np.asarray(snap.video_mean, dtype=np.float64)
    vc = np.asarray(snap.video_cov, dtype=np.float64)
    d = int(np.asarray(snap.user_prior_mean).shape[0])
    v = len(snap.video_ids)
    vm, vc = vm.reshape(v, d), vc.reshape(v, d, d)  # an empty snapshot has shape (0, 0)
    return GlobalRecord(
        version=int(snap.version),
        dim=d,
        n_factors=int(cfg["n_factors"]),
        biases=bool(cfg["biases"]),
        transform=str(cfg["transform"]),
        b0=float(snap.b0),
        sigma=float(snap.sigma),
        prior_mean=np.asarray(snap.user_prior_mean, dtype=np.float64).copy(),
        prior_cov=np.asarray(snap.user_prior_cov, dtype=np.float64).copy(),
        video_ids=[str(x) for x in snap.video_ids],
        video_mean=vm.copy(),
        video_cov=vc.copy(),
        video_scale=np.sqrt(np.maximum(np.diagonal(vc, axis1=1, axis2=2), 0.0)),
        updated_ms=int(updated_ms),
    )


def with_choice(rec: GlobalRecord, choice: Any) -> GlobalRecord:
    """``rec`` as a version 2 record carrying the choice component of
    ``choice`` (a :class:`model.choice.ChoiceModel`), rows in ``rec``'s video
    order; a video the component has not registered gets its video prior."""
    import dataclasses

    rows = np.array([choice.video_index.get(v, -1) for v in rec.video_ids], dtype=np.int64)
    mean = np.tile(choice.video_prior_mean, (len(rows), 1))
    cov = np.tile(np.diag(choice.video_prior_var), (len(rows), 1, 1))
    known = rows >= 0
    mean[known] = choice.video_mean()[rows[known]]
    cov[known] = choice.video_cov()[rows[known]]
    pm, pc = choice.prior_state()
    return dataclasses.replace(
        rec, choice_prior_mean=pm, choice_prior_cov=pc, choice_video_mean=mean, choice_video_cov=cov
    )


def _queue_global(
    pipe: Any, prefix: str, rec: GlobalRecord, ttl_s: int, previous: int | None
) -> None:
    key = global_key(prefix, rec.version)
    pipe.delete(key)  # a republished version must not keep fields of the old one
    pipe.hset(key, mapping=encode_global_record(rec))
    pipe.set(global_current_key(prefix), _int_text(rec.version))
    if previous is not None and previous != rec.version:
        # The superseded version lingers for readers still holding it, then goes.
        pipe.expire(global_key(prefix, previous), int(ttl_s))


def write_global_record(
    client: Any, prefix: str, rec: GlobalRecord, ttl_s: int, previous_version: int | None = None
) -> int | None:
    """Publish ``rec``: write ``{prefix}:g:{<version>}`` then point ``current`` at it,
    in one MULTI/EXEC, and give the version it replaces an expiry of ``ttl_s``.

    The current version never gets an expiry (readers must always find it even
    if the writer pauses); only superseded ones do.

    ``client`` is a redis-py client, or a pipeline to queue the commands on (the
    caller executes it; then ``previous_version`` should be the version that
    ``current`` held, since a queued transaction cannot read it). With a client
    the old ``current`` is read under WATCH, so a concurrent publisher makes the
    transaction retry instead of leaving an unexpired version behind.

    Returns the superseded version (None if there was none or it is unknown).
    """
    encode_global_record(rec)  # validate before touching Redis
    if hasattr(client, "execute") and hasattr(client, "command_stack"):  # a pipeline
        _queue_global(client, prefix, rec, ttl_s, previous_version)
        return previous_version

    cur_key = global_current_key(prefix)
    seen: list[int | None] = [None]

    def txn(pipe: Any) -> None:
        raw = pipe.get(cur_key)  # immediate mode while WATCHing
        try:
            seen[0] = int(raw) if raw is not None else previous_version
        except ValueError:
            seen[0] = previous_version  # a garbled pointer is overwritten below
        pipe.multi()
        _queue_global(pipe, prefix, rec, ttl_s, seen[0])

    client.transaction(txn, cur_key)
    return seen[0]
