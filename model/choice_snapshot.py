"""The choice component's snapshot (what a worker needs for its local step) and
checkpoint (what the learner needs to go on learning), and their round trips."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from model.choice import ChoiceModel
from model.choice_config import ChoiceConfig


@dataclass
class ChoiceSnapshot:
    """What a worker needs to run the choice local step (:meth:`ChoiceModel.user_posteriors`)
    against the learner's choice globals: the video posteriors, the pooled
    user prior and the video prior (for videos the worker registers itself).
    Arrays only plus ids and numbers, so the service's generic blob codec
    carries it. float32 video arrays: they are published as float32 anyway."""

    version: int
    n_factors: int
    video_ids: list[str]
    video_mean: np.ndarray  # (V, K+1)
    video_cov: np.ndarray  # (V, K+1, K+1)
    prior_mean: np.ndarray  # (K,)
    prior_var: np.ndarray  # (K,)
    video_prior_mean: np.ndarray  # (K+1,)
    video_prior_var: np.ndarray  # (K+1,)
    noise_var: float = 1.0
    """sigma^2 the workers serve the users' covariances with (a blob written
    before it existed reads as 1, the implicit-ALS convention)."""


@dataclass
class ChoiceCheckpoint:
    """The learner's choice state, enough to go on learning: the snapshot's
    globals plus the videos' natural parameters, G_u and the replay window
    ((user, row, clock) pairs; the window users' posteriors are recomputed
    from their window histories on restore, as every sweep does)."""

    snapshot: ChoiceSnapshot
    prec: np.ndarray  # (V, K+1, K+1)
    shift: np.ndarray  # (V, K+1)
    gu: np.ndarray  # (K+1, K+1)
    clock: int
    since_sweep: int
    pair_users: list[str]
    pair_rows: np.ndarray  # (P,) int64
    pair_clock: np.ndarray  # (P,) int64


def export_snapshot(model: ChoiceModel, dtype: type = np.float32) -> ChoiceSnapshot:
    """The worker's view of ``model``'s choice globals.

    >>> m = ChoiceModel(ChoiceConfig(n_factors=2, sweep_every=3))
    >>> st = m.learn_event("ann", "a", None)
    >>> w = import_snapshot(export_snapshot(m, np.float64), ChoiceConfig(n_factors=2))
    >>> bool(np.allclose(w.user_posteriors([["a"]])[0], m.user_posteriors([["a"]])[0]))
    True
    """
    n = model.n_videos
    return ChoiceSnapshot(
        version=int(model.version),
        n_factors=int(model.config.n_factors),
        video_ids=list(model.video_ids),
        video_mean=model._mean[:n].astype(dtype),
        video_cov=model._cov[:n].astype(dtype),
        prior_mean=model.prior_mean.copy(),
        prior_var=model.prior_var.copy(),
        video_prior_mean=model.video_prior_mean.copy(),
        video_prior_var=model.video_prior_var.copy(),
        noise_var=float(model.noise_var),
    )


def import_snapshot(snap: ChoiceSnapshot, config: ChoiceConfig) -> ChoiceModel:
    """A model that computes local steps against ``snap`` (a worker's; it
    learns no globals). ``config``'s factor count must match the snapshot's."""
    if int(snap.n_factors) != config.n_factors:
        raise ValueError(
            f"choice snapshot has {snap.n_factors} factors, this model {config.n_factors}"
        )
    m = ChoiceModel(config)
    _load_videos(m, snap)
    m.version = int(snap.version)
    m.noise_var = float(snap.noise_var)
    return m


def _load_videos(m: ChoiceModel, snap: ChoiceSnapshot) -> None:
    v, d = len(snap.video_ids), m.config.dim
    cap = max(64, v)
    m._mean, m._cov = np.zeros((cap, d)), np.zeros((cap, d, d))
    m._prec, m._shift = np.zeros((cap, d, d)), np.zeros((cap, d))
    m.video_ids = [str(x) for x in snap.video_ids]
    m.video_index = {vid: k for k, vid in enumerate(m.video_ids)}
    m._mean[:v] = np.asarray(snap.video_mean, dtype=np.float64).reshape(v, d)
    m._cov[:v] = np.asarray(snap.video_cov, dtype=np.float64).reshape(v, d, d)
    m.gram = (m._cov[:v] + m._mean[:v, :, None] * m._mean[:v, None, :]).sum(0)
    m.prior_mean = np.asarray(snap.prior_mean, dtype=np.float64).copy()
    m.prior_var = np.asarray(snap.prior_var, dtype=np.float64).copy()
    m.video_prior_mean = np.asarray(snap.video_prior_mean, dtype=np.float64).copy()
    m.video_prior_var = np.asarray(snap.video_prior_var, dtype=np.float64).copy()


def export_checkpoint(model: ChoiceModel) -> ChoiceCheckpoint:
    n = model.n_videos
    pairs = list(model._pairs.items())
    return ChoiceCheckpoint(
        snapshot=export_snapshot(model, np.float64),
        prec=model._prec[:n].copy(),
        shift=model._shift[:n].copy(),
        gu=model._gu.copy(),
        clock=int(model.clock),
        since_sweep=int(model._since_sweep),
        pair_users=[u for (u, _), _ in pairs],
        pair_rows=np.fromiter((r for (_, r), _ in pairs), dtype=np.int64, count=len(pairs)),
        pair_clock=np.fromiter((t for _, t in pairs), dtype=np.int64, count=len(pairs)),
    )


def import_checkpoint(ck: ChoiceCheckpoint, config: ChoiceConfig) -> ChoiceModel:
    """The learner's model back from :func:`export_checkpoint`.

    >>> m = ChoiceModel(ChoiceConfig(n_factors=2, sweep_every=3))
    >>> for u, v in [("ann", "a"), ("bob", "b"), ("ann", "b"), ("cat", "a")]:
    ...     _ = m.learn_event(u, v, None)
    >>> r = import_checkpoint(export_checkpoint(m), m.config)
    >>> r.clock, r.n_videos, len(r._pairs), bool(np.allclose(r.video_mean(), m.video_mean()))
    (4, 2, 4, True)
    """
    m = import_snapshot(ck.snapshot, config)
    n, d = m.n_videos, config.dim
    m._prec[:n] = np.asarray(ck.prec, dtype=np.float64).reshape(n, d, d)
    m._shift[:n] = np.asarray(ck.shift, dtype=np.float64).reshape(n, d)
    m._gu = np.asarray(ck.gu, dtype=np.float64).copy()
    m.clock, m._since_sweep = int(ck.clock), int(ck.since_sweep)
    m._pairs = OrderedDict(
        ((str(u), int(r)), int(t))
        for u, r, t in zip(
            ck.pair_users, ck.pair_rows.tolist(), ck.pair_clock.tolist(), strict=True
        )
    )
    hist: dict[str, list[str]] = {}
    last: dict[str, int] = {}
    for (u, r), t in m._pairs.items():
        hist.setdefault(u, []).append(m.video_ids[r])
        last[u] = max(last.get(u, 0), t)
    if hist:
        names = list(hist)
        um, uc = m.user_posteriors([hist[u] for u in names])
        for k, u in enumerate(names):
            m._users[u] = (um[k], uc[k], last[u])
    # G_u is restored as saved; each user's weight in it is not (a later
    # replacement of a restored user subtracts with weight 1; the next sweep
    # rebuilds G_u exactly).
    return m
