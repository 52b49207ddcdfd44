"""The predictive maths of the reader, in numpy: what ``OnlineHPMF.predict`` computes
in torch, vectorised over all videos of one user.

A user factor x = [u, b] ~ N(m_x, S_x) and a video factor w = [v, c] ~ N(m_w, S_w)
(independent) meet through the feature y(x) = [u, 1] (``ey``): the model-scale
value is  y = b0 + y(x).w + b.  With E[y(x)] = ey_x, E[y(x) y(x)^T] = Eyy_x and
E[y(w)] = ey_w (the same split for the video):

    mean  = b0 + E[b] + ey_x . m_w
    var   = sigma^2 + tr(S_w Eyy_x) + ey_w^T S_x ey_w

which is exactly ``OnlineHPMF.predict`` (model/online.py, model/moments.py). The
last two terms are the *epistemic* part (uncertainty about the factors); sigma^2
is observation noise. Without biases y(x) = x and E[b] = 0.

Everything that depends only on the global record is computed once per global
version (:class:`ServingModel`), so one user against 10,000 videos is a couple
of matrix-vector products.

>>> import numpy as np
>>> ey, eyy, eb = feature_moments(np.array([1.0, 2.0]), 0.5 * np.eye(2), biases=True)
>>> ey.tolist(), eyy.tolist(), float(eb)
([1.0, 1.0], [[1.5, 1.0], [1.0, 1.0]], 2.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamer.reader.redis_record import GlobalRecord


def feature_moments(
    mean: np.ndarray, cov: np.ndarray, biases: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E[y], E[y y^T] and E[b] of a factor N(mean, cov), batched over leading axes.

    With biases the last coordinate is the bias: the feature puts a constant 1
    there (so y.w picks up the other side's bias) and has zero variance in it.
    """
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if not biases:
        return mean, cov + mean[..., :, None] * mean[..., None, :], np.zeros(mean.shape[:-1])
    k = mean.shape[-1] - 1
    ey = mean.copy()
    ey[..., k] = 1.0
    cov_y = cov.copy()
    cov_y[..., k, :] = 0.0
    cov_y[..., :, k] = 0.0
    return ey, cov_y + ey[..., :, None] * ey[..., None, :], mean[..., k].copy()


@dataclass(frozen=True)
class ServingModel:
    """One global version, decoded and precomputed for fast scoring."""

    record: GlobalRecord
    index: dict[str, int]  # video id -> row
    ids: np.ndarray  # (V,) object: video ids, for fancy indexing of the top k
    wm: np.ndarray  # (V, D) m_w
    eyw: np.ndarray  # (V, D) ey_w, the videos' feature means
    vc_flat: np.ndarray  # (V, D*D) S_w, flattened for tr(S_w A) = vc_flat @ A.ravel()
    b0: float
    noise_var: float  # sigma^2
    tri: tuple[np.ndarray, np.ndarray]  # upper-triangle indices (d <= e), T = D(D+1)/2
    tri_mult: np.ndarray  # (T,) 1 on the diagonal, 2 off it: tr(S A) = sum S_tri A_tri mult
    packed: np.ndarray  # (V, D + 2T) float32: [m_w | S_w upper | (ey_w ey_w^T) upper]
    means: np.ndarray  # (V, D) float32 m_w, contiguous: the passes that need E[w] alone
    covs: np.ndarray  # (V, T) float32 S_w upper, contiguous: Thompson's variance pass
    choice: ServingModel | None = None
    """A version 2 record's choice component, rows aligned with these (see
    :func:`choice_record`); None for a version 1 record."""

    @classmethod
    def from_record(cls, rec: GlobalRecord) -> ServingModel:
        v, d = rec.n_videos, rec.dim
        choice = cls.from_record(choice_record(rec)) if rec.has_choice else None
        eyw = (
            feature_moments(rec.video_mean, rec.video_cov, rec.biases)[0] if v else np.zeros((0, d))
        )
        vc = np.ascontiguousarray(rec.video_cov, dtype=np.float64).reshape(v, d, d)
        iu = np.triu_indices(d)
        # Every per-video quantity recommend needs, in one float32 row per video, so
        # the mean's value is one pass over memory (the record is float32 anyway);
        # the means and S_w alone also contiguous, once per version, for the passes
        # that read only them (a strided slice of the packed rows costs ~2x).
        cov_up = vc[:, iu[0], iu[1]]
        packed = np.hstack([rec.video_mean, cov_up, eyw[:, iu[0]] * eyw[:, iu[1]]])
        return cls(
            record=rec,
            index={vid: row for row, vid in enumerate(rec.video_ids)},
            ids=np.array(rec.video_ids, dtype=object),
            wm=np.ascontiguousarray(rec.video_mean, dtype=np.float64),
            eyw=np.ascontiguousarray(eyw, dtype=np.float64),
            vc_flat=vc.reshape(v, d * d),
            b0=float(rec.b0),
            noise_var=float(rec.sigma) ** 2,
            tri=iu,
            tri_mult=np.where(iu[0] == iu[1], 1.0, 2.0),
            packed=np.ascontiguousarray(packed, dtype=np.float32),
            means=np.ascontiguousarray(rec.video_mean, dtype=np.float32),
            covs=np.ascontiguousarray(cov_up, dtype=np.float32),
            choice=choice,
        )

    def sym_weights(self, a: np.ndarray) -> np.ndarray:
        """The weights w with tr(S a) = S_upper . w for symmetric S and a."""
        return a[self.tri] * self.tri_mult

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def n_videos(self) -> int:
        return self.record.n_videos


def choice_record(rec: GlobalRecord) -> GlobalRecord:
    """The choice component of a version 2 record as a record of its own: the
    score s = a.z + e is the minutes model's predictive mean with biases on,
    b0 = 0 and the user's bias slot fixed at 0 (model/choice.py), so the same
    precomputation and passes serve it."""
    assert rec.choice_video_mean is not None and rec.choice_video_cov is not None
    assert rec.choice_prior_mean is not None and rec.choice_prior_cov is not None
    cd = int(rec.choice_prior_mean.shape[0])
    cov = np.asarray(rec.choice_video_cov, dtype=np.float64)
    return GlobalRecord(
        version=rec.version,
        dim=cd,
        n_factors=cd - 1,
        biases=True,
        transform="identity",
        b0=0.0,
        sigma=1.0,
        prior_mean=rec.choice_prior_mean,
        prior_cov=rec.choice_prior_cov,
        video_ids=rec.video_ids,
        video_mean=rec.choice_video_mean,
        video_cov=cov,
        video_scale=np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0)),
        updated_ms=rec.updated_ms,
        choice_sharpness=rec.choice_sharpness,
    )


@dataclass(frozen=True)
class UserMoments:
    """A user's posterior N(mean, cov) and its feature moments (computed once per call)."""

    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D)
    ey: np.ndarray  # (D,)
    eyy_flat: np.ndarray  # (D*D,)
    eb: float

    @classmethod
    def of(cls, mean: np.ndarray, cov: np.ndarray, biases: bool) -> UserMoments:
        ey, eyy, eb = feature_moments(mean, cov, biases)
        return cls(
            np.asarray(mean, np.float64), np.asarray(cov, np.float64), ey, eyy.ravel(), float(eb)
        )


def predictive(
    model: ServingModel, user: UserMoments, rows: np.ndarray | slice = slice(None)
) -> tuple[np.ndarray, np.ndarray]:
    """Model-scale predictive mean and *epistemic* variance for the video ``rows``,
    in float64 (the exact path: :meth:`Lookup.predict` and the reported top k).

    Add ``model.noise_var`` for the predictive variance of an observation.
    """
    mean = model.b0 + user.eb + model.wm[rows] @ user.ey
    eyw = model.eyw[rows]
    epi = model.vc_flat[rows] @ user.eyy_flat + ((eyw @ user.cov) * eyw).sum(-1)
    return mean, np.maximum(epi, 0.0)


def sample_factor(mean: np.ndarray, cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw of x ~ N(mean, cov); float32 storage can leave cov a hair from PSD."""
    d = mean.shape[0]
    try:
        chol = np.linalg.cholesky(cov + 1e-12 * np.eye(d))
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
        chol = vecs * np.sqrt(np.clip(vals, 0.0, None))
    return mean + chol @ rng.standard_normal(d)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k largest finite scores, best first (fewer if fewer are finite);
    ties in the lower row first.

    >>> top_k(np.array([0.1, np.inf, 0.3, np.nan, 0.3, -np.inf]), 3).tolist()
    [2, 4, 0]
    """
    v = scores.shape[0]
    if k <= 0 or v == 0:
        return np.zeros(0, dtype=np.int64)
    neg = -scores  # NaN stays NaN, which argpartition and argsort put last
    part = np.argpartition(neg, k - 1)[:k] if k < v else np.arange(v)
    if not np.isfinite(neg[part]).all():  # fewer than k finite, or a +inf among the best
        neg = np.where(np.isfinite(scores), neg, np.inf)
        n = int(np.isfinite(scores).sum())
        k = min(k, n)
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        part = np.argpartition(neg, k - 1)[:k] if k < v else np.arange(v)
    # Every row at least as good as the k-th, in row order (argpartition picks
    # among ties at the boundary arbitrarily): the stable sort then keeps tied
    # rows in row order, and a tie at the boundary keeps the lower rows.
    t = neg[part].max()
    sel = np.flatnonzero(neg <= t)
    if sel.shape[0] > k:
        better = sel[neg[sel] < t]
        sel = np.concatenate([better, sel[neg[sel] == t][: k - better.shape[0]]])
    return sel[np.argsort(neg[sel], kind="stable")]


CHOICE_SHARPNESS = 20.0
"""lambda of :func:`start_probability`: how steeply P(start) rises with the
choice score. Measured on the taste simulator (3 days x 1,000 users, every 5th
event after 4,000), hit@10 of P x E[minutes]: 0.23 at lambda 0 (linear), 0.29
at 6, 0.31 at 10, 0.32 at 20, against 0.33 for P(start) alone and 0.27 for
popularity; on the rank suite's 7-day simulator lambda 10 gave 0.317, 1.49x
popularity (docs/ranking.md). It is not calibrated: the softmax likelihood of
the starts peaks near 5 (MovieLens 100K 4.6, the simulator 5.5). A global record
whose learner learns lambda (``ChoiceConfig.learn_sharpness``,
:mod:`model.choice_link`) carries it as ``choice_sharpness``, which
:func:`start_probability` then uses instead."""


def start_probability(
    s: np.ndarray, exclude: Sequence[int] | None = None, sharpness: float | None = None
) -> np.ndarray:
    """P(start) read off a user's choice scores over the catalogue, as a softmax
    choice model reads them: exp(lambda s_j) / sum_k exp(lambda s_k) over the
    candidate videos (finite scores, rows in ``exclude`` left out: the videos
    the user already watched; lambda = ``sharpness``, the global record's learned
    one, or :data:`CHOICE_SHARPNESS` when None), i.e. the probability that the user's next start
    is video j if they start one of the candidates. Excluded rows get 0.

    Normalising over the candidates changes no ranking (one constant per user)
    but keeps the served expected minutes on a readable scale: against the
    whole catalogue, a heavy watcher's already started videos take almost all
    of the mass and every candidate's value reads as 0.

    A linear read (clip(s, 1e-4, 1), before) compresses what the implicit-ALS
    score knows: a video twice as likely to be started scores far less than
    twice as high, so E[minutes | start] ordered the list and hit@10 fell below
    popularity on the taste simulator (0.23 against 0.27).

    >>> start_probability(np.array([0.5, 0.45, -np.inf])).round(4).tolist()
    [0.7311, 0.2689, 0.0]
    >>> start_probability(np.array([0.5, 0.45, 0.4]), exclude=[0]).round(4).tolist()
    [0.0, 0.7311, 0.2689]
    >>> start_probability(np.array([0.5, 0.45]), sharpness=2.0).round(4).tolist()
    [0.525, 0.475]
    """
    e = np.array(s, dtype=np.float64)
    if exclude is not None and len(exclude):
        e[np.asarray(exclude, dtype=np.int64)] = -np.inf
    top = float(e.max()) if e.shape[0] else -np.inf
    if not np.isfinite(top):  # +inf or NaN somewhere (rare): keep the finite scores only
        e[~np.isfinite(e)] = -np.inf
        top = float(e.max()) if e.shape[0] else -np.inf
        if not np.isfinite(top):
            return np.zeros(e.shape[0])
    e -= top
    e *= CHOICE_SHARPNESS if sharpness is None else sharpness
    np.exp(e, out=e)
    e /= e.sum()
    return e
