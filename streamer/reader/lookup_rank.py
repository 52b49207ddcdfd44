"""What ``recommend`` ranks: one score per video of the catalogue for one user,
from a few float32 passes over the arrays a :class:`ServingModel` precomputed
once per global version (see :mod:`streamer.reader.lookup_math` for the maths).

Each pass is a matrix-vector product written as ``np.einsum`` (numpy's own
loop, on the calling thread), not a BLAS call: OpenBLAS hands a float32
matrix-vector product to its threads depending on the shape (on this project's
build from about 70 columns, or 8,000 x 66), and a reader on a busy machine
then waits for a second core, milliseconds at the p99 (BENCHMARKS.md). einsum
costs about 2x a one-threaded BLAS product at the median but never does that.

Which passes each strategy reads (V videos, D = factor size, T = D(D+1)/2;
D = 11: D + 2T = 143 columns):

* ``mean``: the minutes' E[minutes] in one pass over the packed rows (for log1p
  exp(m + var/2) - 1 has m + var/2 linear in [m_w | S_w | ey_w ey_w^T]), the
  choice score's mean in one pass over its means (D columns);
* ``ucb``: per component a means pass and one over the two variance blocks;
* ``thompson``: per component a means pass given the drawn user factor, one
  over S_w (T columns) for the draw's variance, and V standard normals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamer.reader.lookup_math import (
    ServingModel,
    UserMoments,
    feature_moments,
    sample_factor,
    start_probability,
)


def matvec(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``a @ x`` in float32 for a tall float32 ``a``, on the calling thread."""
    return np.einsum("ij,j->i", a, np.asarray(x, dtype=np.float32))


def _variance_weights(model: ServingModel, user: UserMoments) -> np.ndarray:
    """Weights of the packed rows' two variance blocks: their dot product is the
    epistemic variance tr(S_w Eyy_x) + ey_w^T S_x ey_w."""
    d = model.record.dim
    return np.concatenate(
        [model.sym_weights(user.eyy_flat.reshape(d, d)), model.sym_weights(user.cov)]
    )


def predictive_all(model: ServingModel, user: UserMoments) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~streamer.reader.lookup_math.predictive` over all videos in float32
    passes, for ranking: model-scale mean and epistemic variance (float64 arrays).

    Both variance terms are traces against symmetric matrices, so each is a dot
    product of upper triangles. Relative error ~1e-6 (float32 sums); only
    near-ties can order differently.
    """
    d = model.record.dim
    mean = matvec(model.means, user.ey).astype(np.float64)
    epi = matvec(model.packed[:, d:], _variance_weights(model, user)).astype(np.float64)
    return model.b0 + user.eb + mean, np.maximum(epi, 0.0)


def mean_value(model: ServingModel, user: UserMoments) -> np.ndarray:
    """The ``mean`` strategy's value, E[minutes] in original units, over all
    videos: for log1p exp(m + (epi + sigma^2)/2) - 1 (the log-normal mean, as
    :func:`model.transform.to_original_units`), whose exponent is linear in the
    packed rows, so one pass; for identity m, a pass over the means alone."""
    rec = model.record
    if rec.transform == "identity":
        return model.b0 + user.eb + matvec(model.means, user.ey).astype(np.float64)
    if rec.transform != "log1p":
        raise ValueError(f"unknown transform {rec.transform!r}")
    w = np.concatenate([user.ey, 0.5 * _variance_weights(model, user)])
    lin = matvec(model.packed, w).astype(np.float64)
    return np.exp(model.b0 + user.eb + 0.5 * model.noise_var + lin) - 1.0


def thompson_scores(
    model: ServingModel, user: UserMoments, biases: bool, rng: np.random.Generator
) -> np.ndarray:
    """Model-scale scores of one Thompson draw over all videos (float64).

    Draw x ~ q(x); then for each video the score b0 + b + y(x).w_j with
    w_j ~ q(w_j). Given x, the videos are independent and y(x).w_j is Gaussian
    with mean y(x).m_wj and variance y(x)^T S_wj y(x), so drawing that scalar
    per video is an exact draw of the full-covariance w_j: one D-vector drawn,
    a pass over the means and one over S_w's upper triangles (T columns), and
    V standard normals, without materialising V x D samples. In float32 up to
    the sum (the draw's own spread is far above float32's rounding).
    """
    d = model.record.dim
    x = sample_factor(user.mean, user.cov, rng)
    ey, _, eb = feature_moments(x, np.zeros((d, d)), biases)
    draw = matvec(model.covs, model.sym_weights(np.outer(ey, ey)))  # the variance, float32
    np.sqrt(np.maximum(draw, 0.0, out=draw), out=draw)
    draw *= rng.standard_normal(model.n_videos, dtype=np.float32)
    draw += matvec(model.means, ey)
    return model.b0 + float(eb) + draw.astype(np.float64)


def _minutes_scores(
    model: ServingModel, user: UserMoments, strategy: str, rng: np.random.Generator, ucb_beta: float
) -> np.ndarray:
    """The minutes model's ranked value per video (model scale for ucb/thompson)."""
    if strategy == "thompson":
        return thompson_scores(model, user, model.record.biases, rng)
    if strategy == "ucb":
        m_y, epi = predictive_all(model, user)
        return m_y + ucb_beta * np.sqrt(epi)
    if strategy != "mean":
        raise ValueError(f"unknown strategy {strategy!r}")
    return mean_value(model, user)


def _choice_scores(
    c_model: ServingModel, c_user: UserMoments, strategy: str, rng: np.random.Generator, beta: float
) -> np.ndarray:
    """The choice score s the strategy reads: E[s], E[s] + beta sd[s], or a draw."""
    if strategy == "thompson":
        return thompson_scores(c_model, c_user, True, rng)
    if strategy == "mean":  # E[s] alone: one pass over the contiguous means (D columns)
        return c_model.b0 + c_user.eb + matvec(c_model.means, c_user.ey).astype(np.float64)
    s, epi = predictive_all(c_model, c_user)
    return s + beta * np.sqrt(epi)


def rank_scores(
    model: ServingModel,
    user: UserMoments,
    strategy: str,
    rng: np.random.Generator,
    ucb_beta: float = 2.0,
    choice: tuple[ServingModel, UserMoments] | None = None,
    exclude: Sequence[int] | None = None,
) -> np.ndarray:
    """What ``recommend`` ranks, one score per video row (higher is better);
    the rows in ``exclude`` (the watched videos) get -inf.

    Without a choice component (a v1 record), the minutes model alone:

    * ``mean``: the predictive mean in original units (for log1p,
      exp(m + s^2/2) - 1 with the full predictive s^2; identity: m).
    * ``ucb``: m + beta * e, e the *epistemic* std (model scale).
    * ``thompson``: one joint draw (:func:`thompson_scores`).

    With one (``choice``: its serving model, rows aligned with ``model``'s, and
    the user's choice moments), expected minutes if shown,
    P(start) x E[minutes | start], with P(start) the softmax of lambda s over the
    candidates (:func:`~streamer.reader.lookup_math.start_probability`, the rows
    not in ``exclude``) and minutes >= 0 in original units:

    * ``mean``: P(E[s]) x E[minutes];
    * ``ucb``: P(E[s] + beta sd[s]) x (the minutes' UCB mapped to original units);
    * ``thompson``: P(one draw of s) x (one draw of the minutes), both
      components drawn from their posteriors;

    a model-scale minutes value v (m + beta e, or the draw) mapped to
    E[minutes | start] under those parameters (log1p: exp(v + sigma^2/2) - 1).

    :meth:`streamer.reader.lookup.Lookup.recommend` and the ranking evaluation
    (:mod:`streamer.evaluation.ranking_eval`) both call this (through
    :func:`served_scores`), so what is evaluated is what is served.
    """
    rows = np.asarray(exclude if exclude is not None else [], dtype=np.int64)
    minutes = _minutes_scores(model, user, strategy, rng, ucb_beta)
    if choice is None:
        minutes[rows] = -np.inf
        return minutes
    if strategy != "mean" and model.record.transform == "log1p":
        # the model-scale value v (a draw, or m + beta e) -> E[minutes | start] under
        # those parameters: exp(v + sigma^2/2) - 1 (the observation noise is log-normal)
        minutes = np.expm1(minutes + 0.5 * model.noise_var)
    s = _choice_scores(choice[0], choice[1], strategy, rng, ucb_beta)
    lam = choice[0].record.choice_sharpness  # learned by the choice learner, or None: fixed
    out = start_probability(s, rows, lam) * np.maximum(minutes, 0.0)
    out[rows] = -np.inf
    return out


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
    the scores (-inf for the rows in ``exclude``, the videos the user watched,
    which are not candidates) and the user's minutes moments."""
    user = UserMoments.of(mean, cov, model.record.biases)
    choice = None
    if model.choice is not None:
        crec = model.choice.record
        if choice_mean is None or choice_cov is None or np.shape(choice_mean) != (crec.dim,):
            choice_mean, choice_cov = crec.prior_mean, crec.prior_cov
        choice = (model.choice, UserMoments.of(choice_mean, choice_cov, True))
    return rank_scores(model, user, strategy, rng, ucb_beta, choice, exclude), user
