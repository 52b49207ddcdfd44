"""The global record ``{prefix}:g:{<version>}`` and its ``current`` pointer:
the dataclass, the codec and the publish."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from model.transform import TRANSFORMS
from streamer.reader.redis_record.format import (
    GLOBAL_CHOICE_FIELDS,
    GLOBAL_FIELDS,
    CorruptRecordError,
    FieldReader,
    f32,
    float_text,
    int_text,
    same_optional,
)
from streamer.reader.redis_record.keys import global_current_key, global_key

if TYPE_CHECKING:
    from model.globals_snapshot import GlobalsSnapshot


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
    choice_sharpness: float | None = None
    """P(start)'s lambda learned by the choice learner (``choice_sharpness``, an
    optional version 2 field); None: the reader's fixed one (docs/redis_format.md)."""

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
            "choice_sharpness",
        )
        arrays = ("prior_mean", "prior_cov", "video_mean", "video_cov", "video_scale")
        choice = ("choice_prior_mean", "choice_prior_cov", "choice_video_mean", "choice_video_cov")
        return (
            all(getattr(self, s) == getattr(other, s) for s in scalars)
            and list(self.video_ids) == list(other.video_ids)
            and all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays)
            and all(same_optional(getattr(self, a), getattr(other, a)) for a in choice)
        )


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
        "gv": int_text(rec.version),
        "d": int_text(d),
        "k": int_text(rec.n_factors),
        "biases": b"1" if rec.biases else b"0",
        "transform": rec.transform.encode("ascii"),
        "b0": float_text(rec.b0),
        "sigma": float_text(rec.sigma),
        "prior_mean": f32(rec.prior_mean),
        "prior_cov": f32(rec.prior_cov),
        "n_videos": int_text(v),
        "video_ids": "\n".join(ids).encode("utf-8"),
        "video_mean": f32(rec.video_mean),
        "video_cov": f32(rec.video_cov),
        "video_scale": f32(rec.video_scale),
        "ts": int_text(rec.updated_ms),
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
    out = {"v": b"2", "cd": int_text(cd), **{name: f32(getattr(rec, name)) for name in shapes}}
    lam = rec.choice_sharpness
    if lam is not None:  # optional: only a learner that learns lambda writes it
        if not (np.isfinite(lam) and lam > 0):
            raise ValueError(f"choice_sharpness must be finite and > 0, got {lam}")
        out["choice_sharpness"] = float_text(float(lam))
    return out


def decode_global_record(fields: Mapping[Any, Any], key: str | None = None) -> GlobalRecord:
    """A global record from HGETALL output. Raises SchemaVersionError or CorruptRecordError."""
    r = FieldReader(fields, key, GLOBAL_FIELDS)
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


def _decode_global_choice(r: FieldReader, v: int) -> dict[str, Any]:
    if r.version < 2:
        return {}
    r.require(GLOBAL_CHOICE_FIELDS)
    cd = r.int("cd", lo=1)
    lam = r.float("choice_sharpness") if "choice_sharpness" in r.f else None
    if lam is not None and lam <= 0:
        raise CorruptRecordError(r.key, f"choice_sharpness must be > 0, got {lam}")
    return {
        "choice_sharpness": lam,
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
    order; a video the component has not registered gets its video prior.
    Covariances as served (:meth:`model.choice.ChoiceModel.served_cov`: times
    the estimated noise variance of the choice pseudo-likelihood)."""
    rows = np.array([choice.video_index.get(v, -1) for v in rec.video_ids], dtype=np.int64)
    mean = np.tile(choice.video_prior_mean, (len(rows), 1))
    cov = np.tile(np.diag(choice.video_prior_var), (len(rows), 1, 1))
    known = rows >= 0
    mean[known] = choice.video_mean()[rows[known]]
    cov[known] = choice.video_cov()[rows[known]]
    pm, pc = choice.prior_state()
    return dataclasses.replace(
        rec,
        choice_prior_mean=pm,
        choice_prior_cov=choice.served_cov(pc),
        choice_video_mean=mean,
        choice_video_cov=choice.served_cov(cov),
        choice_sharpness=None if choice.link is None else choice.link.sharpness(),
    )


def _queue_global(
    pipe: Any, prefix: str, rec: GlobalRecord, ttl_s: int, previous: int | None
) -> None:
    key = global_key(prefix, rec.version)
    pipe.delete(key)  # a republished version must not keep fields of the old one
    pipe.hset(key, mapping=encode_global_record(rec))
    pipe.set(global_current_key(prefix), int_text(rec.version))
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
