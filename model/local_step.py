"""Local step: the exact Gaussian posterior of the users touched by a minibatch.

With the globals fixed (video posteriors q(w_j) = N(m_j, S_j), noise sigma,
pooled prior N(mu_u, diag(s_u)^2)), the coordinate-ascent update of user i's
factor x_i = [u_i, b_i] is Gaussian in closed form:

    P_i = diag(s_u)^-2 + sigma^-2 sum_j a_ij E[y_j y_j^T]
    h_i = diag(s_u)^-2 mu_u + sigma^-2 sum_j a_ij ((r_ij - b0) E[y_j] - E[y_j c_j])
    q(x_i) = N(P_i^-1 h_i, P_i^-1)

over the user's H most recent videos j, where y_j = [v_j, 1] and c_j is the video
bias, with expectations under q(w_j) (so video uncertainty counts, not just the
means) and a_ij = gamma^(n_i - seq_ij) the forgetting weight of that history
entry. Vectorised over all touched users with one segment sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.moments import feature_moments, gaussian_posterior
from model.weighted_sums import pair_weights, unique_rows


@dataclass(frozen=True)
class HistoryEntries:
    """All history entries of the touched users, flattened.

    user: (E,) which touched user (0..B-1) the entry belongs to.
    video: (E,) row of the video in the model's video tables.
    target: (E,) transformed value r_ij.
    weight: (E,) forgetting weight a_ij.
    """

    user: torch.Tensor
    video: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor


@dataclass(frozen=True)
class LocalPairs:
    """What :func:`user_local_step` sums per (user, distinct video) before it
    meets the video posteriors: the distinct video rows (sorted), and per
    (user, video) the entries' weights and weighted residuals (r - b0). They
    depend on neither the videos' posteriors nor the noise, so a replay
    sweep's passes over one window share them (:func:`local_pairs`)."""

    uniq: torch.Tensor  # (J,)
    weights: torch.Tensor  # (U, J)
    weighted_resid: torch.Tensor  # (U, J)


def local_pairs(
    entries: HistoryEntries,
    n_users: int,
    n_videos: int,
    b0: torch.Tensor,
    dtype: torch.dtype = torch.float64,
) -> LocalPairs:
    """The :class:`LocalPairs` of ``entries`` over ``n_users`` users and video
    rows below ``n_videos``, residuals against ``b0``, in ``dtype`` (the
    factors')."""
    uniq, inv = unique_rows(entries.video, n_videos)
    w = entries.weight.to(dtype)
    resid = entries.target.to(dtype) - b0
    n_src = len(uniq)
    weights = pair_weights(entries.user, inv, w, n_users, n_src)
    weighted_resid = pair_weights(entries.user, inv, w * resid, n_users, n_src)
    return LocalPairs(uniq, weights, weighted_resid)


def user_local_step(
    entries: HistoryEntries,
    n_users: int,
    video_mean: torch.Tensor,
    video_cov: torch.Tensor,
    b0: torch.Tensor,
    noise_var: torch.Tensor,
    prior_mean: torch.Tensor,
    prior_scale: torch.Tensor,
    biases: bool,
    tril: bool = True,
    pairs: LocalPairs | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Closed-form q(x_i) for ``n_users`` users; returns mean, cov, cholesky(cov)
    (None unless ``tril``).

    ``video_mean``/``video_cov`` are indexed by ``entries.video``. ``pairs``:
    :func:`local_pairs` of these entries, ``n_users``, ``len(video_mean)`` and
    ``b0``, when the caller already holds them (the same numbers).
    """
    d = prior_mean.shape[-1]
    dtype = prior_mean.dtype
    if d == 0:  # the global-mean model has no user factor at all
        empty = torch.zeros(n_users, 0, 0, dtype=dtype)
        return torch.zeros(n_users, 0, dtype=dtype), empty, empty if tril else None
    # Moments once per distinct video; the entries' weights are summed per
    # (user, video) and multiplied in once (a user's history shares videos
    # with other users': far fewer videos than entries).
    if pairs is None:
        pairs = local_pairs(entries, n_users, video_mean.shape[0], b0, dtype)
    uniq, weights, weighted_resid = pairs.uniq, pairs.weights, pairs.weighted_resid
    ey, eyy, eyc, _ = feature_moments(
        video_mean.index_select(0, uniq), video_cov.index_select(0, uniq), biases
    )
    data_prec = weights @ eyy.reshape(-1, d * d)
    data_shift = weighted_resid @ ey - weights @ eyc
    prior_prec = torch.diag_embed(prior_scale.pow(-2)).expand(n_users, d, d)
    prior_shift = (prior_scale.pow(-2) * prior_mean).expand(n_users, d)
    return gaussian_posterior(
        prior_prec,
        prior_shift,
        data_prec.reshape(n_users, d, d) / noise_var,
        data_shift / noise_var,
        tril=tril,
    )
