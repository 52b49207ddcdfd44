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

from model.transform import to_original_units
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
        # scoring all videos is one pass over memory (the record is float32 anyway).
        packed = np.hstack([rec.video_mean, vc[:, iu[0], iu[1]], eyw[:, iu[0]] * eyw[:, iu[1]]])
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


BLOCK_ROWS = 4096


def blocked_matmul(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``a @ y`` for a tall ``a`` and a narrow ``y``: a matrix-vector product per
    column, in blocks of rows. Blocks: one (10,000 x 143) product is big enough
    for OpenBLAS to hand to its threads, which on a busy machine costs ms (p90
    19 ms in one call vs 0.7 ms in blocks); blocks stay on the calling thread.
    Per column: the general product with 2 columns was 3-6x slower than two
    matrix-vector products (10,000 x 143 float32: p50 0.7-1.5 vs 0.24 ms)."""
    out = np.empty((y.shape[1], a.shape[0]), dtype=np.result_type(a, y))
    cols = [np.ascontiguousarray(y[:, k], dtype=out.dtype) for k in range(y.shape[1])]
    a = a.astype(out.dtype, copy=False)
    for s in range(0, a.shape[0], BLOCK_ROWS):
        block = a[s : s + BLOCK_ROWS]
        for k, col in enumerate(cols):
            np.matmul(block, col, out=out[k, s : s + BLOCK_ROWS])
    return out.T


def predictive_all(model: ServingModel, user: UserMoments) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predictive` over all videos in one float32 matrix product, for ranking.

    Both variance terms are traces against symmetric matrices, so each is a dot
    product of upper triangles: tr(S_w Eyy_x) and tr(S_x ey_w ey_w^T). Relative
    error ~1e-6 (float32 sums); only near-ties can order differently.
    """
    d, t = model.record.dim, model.tri_mult.shape[0]
    y = np.zeros((d + 2 * t, 2), dtype=np.float32)
    y[:d, 0] = user.ey
    y[d : d + t, 1] = model.sym_weights(user.eyy_flat.reshape(d, d))
    y[d + t :, 1] = model.sym_weights(user.cov)
    out = blocked_matmul(model.packed, y).astype(np.float64)
    return model.b0 + user.eb + out[:, 0], np.maximum(out[:, 1], 0.0)


def sample_factor(mean: np.ndarray, cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw of x ~ N(mean, cov); float32 storage can leave cov a hair from PSD."""
    d = mean.shape[0]
    try:
        chol = np.linalg.cholesky(cov + 1e-12 * np.eye(d))
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
        chol = vecs * np.sqrt(np.clip(vals, 0.0, None))
    return mean + chol @ rng.standard_normal(d)


def thompson_scores(
    model: ServingModel, user: UserMoments, biases: bool, rng: np.random.Generator
) -> np.ndarray:
    """Model-scale scores of one Thompson draw over all videos.

    Draw x ~ q(x); then for each video the score b0 + b + y(x).w_j with
    w_j ~ q(w_j). Given x, the videos are independent and y(x).w_j is Gaussian
    with mean y(x).m_wj and variance y(x)^T S_wj y(x), so drawing that scalar
    per video is an exact draw of the full-covariance w_j at O(V D^2), without
    materialising V x D samples.
    """
    d, t = model.record.dim, model.tri_mult.shape[0]
    x = sample_factor(user.mean, user.cov, rng)
    ey, _, eb = feature_moments(x, np.zeros((d, d)), biases)
    y = np.zeros((d + t, 2), dtype=np.float32)  # the last block (ey_w ey_w^T) is not needed
    y[:d, 0] = ey
    y[d:, 1] = model.sym_weights(np.outer(ey, ey))
    out = blocked_matmul(model.packed[:, : d + t], y).astype(np.float64)
    std = np.sqrt(np.maximum(out[:, 1], 0.0))
    return model.b0 + float(eb) + out[:, 0] + std * rng.standard_normal(model.n_videos)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k largest finite scores, best first (fewer if fewer are finite)."""
    finite = np.isfinite(scores)
    n = int(finite.sum())
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    masked = np.where(finite, scores, -np.inf)
    k = min(k, n)
    part = (
        np.argpartition(-masked, k - 1)[:k] if k < masked.shape[0] else np.arange(masked.shape[0])
    )
    order = part[np.argsort(-masked[part], kind="stable")]
    return order[:k]


CHOICE_SHARPNESS = 20.0
"""lambda of :func:`start_probability`: how steeply P(start) rises with the
choice score. Measured on the taste simulator (3 days x 1,000 users, every 5th
event after 4,000), hit@10 of P x E[minutes]: 0.23 at lambda 0 (linear), 0.29
at 6, 0.31 at 10, 0.32 at 20, against 0.33 for P(start) alone and 0.27 for
popularity; on the rank suite's 7-day simulator lambda 10 gave 0.317, 1.49x
popularity (docs/ranking.md)."""


def start_probability(s: np.ndarray, exclude: Sequence[int] | None = None) -> np.ndarray:
    """P(start) read off a user's choice scores over the catalogue, as a softmax
    choice model reads them: exp(lambda s_j) / sum_k exp(lambda s_k) over the
    candidate videos (finite scores, rows in ``exclude`` left out: the videos
    the user already watched), i.e. the probability that the user's next start
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
    """
    s = np.array(s, dtype=np.float64)
    if exclude is not None and len(exclude):
        s[np.asarray(exclude, dtype=np.int64)] = -np.inf
    finite = np.isfinite(s)
    if not finite.any():
        return np.zeros(s.shape[0])
    e = np.exp(CHOICE_SHARPNESS * (np.where(finite, s, -np.inf) - float(s[finite].max())))
    return e / e.sum()


def _minutes_scores(
    model: ServingModel, user: UserMoments, strategy: str, rng: np.random.Generator, ucb_beta: float
) -> np.ndarray:
    """The minutes model's ranked value per video (model scale for ucb/thompson)."""
    rec = model.record
    if strategy == "thompson":
        return thompson_scores(model, user, rec.biases, rng)
    m_y, epi = predictive_all(model, user)  # float32 pass over all videos
    if strategy == "ucb":
        return m_y + ucb_beta * np.sqrt(epi)
    if strategy != "mean":
        raise ValueError(f"unknown strategy {strategy!r}")
    if rec.transform == "identity":
        return m_y
    return to_original_units(rec.transform, m_y, np.sqrt(epi + model.noise_var))[0]


def rank_scores(
    model: ServingModel,
    user: UserMoments,
    strategy: str,
    rng: np.random.Generator,
    ucb_beta: float = 2.0,
    choice: tuple[ServingModel, UserMoments] | None = None,
    exclude: Sequence[int] | None = None,
) -> np.ndarray:
    """What ``recommend`` ranks, one score per video row (higher is better).

    Without a choice component (a v1 record), the minutes model alone:

    * ``mean``: the predictive mean in original units (for log1p,
      exp(m + s^2/2) - 1 with the full predictive s^2; identity: m).
    * ``ucb``: m + beta * e, e the *epistemic* std (model scale).
    * ``thompson``: one joint draw (:func:`thompson_scores`).

    With one (``choice``: its serving model, rows aligned with ``model``'s, and
    the user's choice moments), expected minutes if shown,
    P(start) x E[minutes | start], with P(start) the softmax of lambda s over the
    candidates (:func:`start_probability`; ``exclude``: rows that are not, the
    watched videos) and minutes >= 0 in original units:

    * ``mean``: P(E[s]) x E[minutes];
    * ``ucb``: P(E[s] + beta sd[s]) x (the minutes' UCB mapped to original units);
    * ``thompson``: P(one draw of s) x (one draw of the minutes), both
      components drawn from their posteriors.

    :meth:`streamer.reader.lookup.Lookup.recommend` and the ranking evaluation
    (:mod:`streamer.evaluation.ranking_eval`) both call this, so what is evaluated is what
    is served.
    """
    minutes = _minutes_scores(model, user, strategy, rng, ucb_beta)
    if choice is None:
        return minutes
    rec = model.record
    c_model, c_user = choice
    if strategy != "mean":  # ucb / thompson values are on the model scale
        minutes = to_original_units(rec.transform, minutes, np.zeros(minutes.shape[0]))[0]
    if strategy == "thompson":
        s = thompson_scores(c_model, c_user, True, rng)
    elif strategy == "mean":  # E[s] alone: one (V, cd) pass instead of the packed variance terms
        cd = c_model.record.dim
        ey = c_user.ey.astype(np.float32)[:, None]
        s = (
            c_model.b0
            + c_user.eb
            + blocked_matmul(c_model.packed[:, :cd], ey)[:, 0].astype(np.float64)
        )
    else:
        s, epi = predictive_all(c_model, c_user)
        if strategy == "ucb":
            s = s + ucb_beta * np.sqrt(epi)
    return start_probability(s, exclude) * np.maximum(minutes, 0.0)


def served_scores(
    model: ServingModel,
    mean: np.ndarray,
    cov: np.ndarray,
    choice_mean: np.ndarray | None,
    choice_cov: np.ndarray | None,
    strategy: str,
    rng: np.random.Generator,
    ucb_beta: float = 2.0,
    exclude: Sequence[int] | None = None,
) -> tuple[np.ndarray, UserMoments]:
    """:func:`rank_scores` for a user's minutes posterior N(mean, cov) and, when
    the model has a choice component, their choice posterior (the choice prior
    if they have none, e.g. a version 1 record, or its size differs). Returns
    the scores and the user's minutes moments. ``exclude``: rows that are not
    candidates (see :func:`start_probability`)."""
    user = UserMoments.of(mean, cov, model.record.biases)
    choice = None
    if model.choice is not None:
        crec = model.choice.record
        if choice_mean is None or choice_cov is None or np.shape(choice_mean) != (crec.dim,):
            choice_mean, choice_cov = crec.prior_mean, crec.prior_cov
        choice = (model.choice, UserMoments.of(choice_mean, choice_cov, True))
    return rank_scores(model, user, strategy, rng, ucb_beta, choice, exclude), user
