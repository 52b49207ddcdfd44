"""Global step, part 1: the video posteriors, by a natural-gradient SVI step.

Given the users' posteriors q(x_i) from the local step, the video factor
w_j = [v_j, c_j] is conditionally conjugate, so the SVI step on q(w_j) can be
taken in natural parameters, where it is exact and needs no learning rate
(Hoffman et al. 2013). In a stream the "data set" is the recent past: the data
part of the natural parameters is an exponentially weighted sum of minibatch
statistics with weight exp(-dt / N_eff) for evidence dt events old, so N_eff
(the effective data size) sets how fast the model forgets old tastes:

    P_j = diag(s_v)^-2 + sum_t exp(-(T - t)/N_eff) sigma^-2 sum_{i in batch t} E[y_i y_i^T]
    h_j = diag(s_v)^-2 mu_v + sum_t exp(-(T - t)/N_eff) sigma^-2 sum_i ((r_ij - b0) E[y_i] - E[y_i b_i])

with y_i = [u_i, 1] and expectations under q(x_i).
"""

from __future__ import annotations

import torch

from model.moments import feature_moments
from model.weighted_sums import pair_weights


def video_batch_statistics(
    event_video: torch.Tensor,
    n_videos: int,
    user_mean: torch.Tensor,
    user_cov: torch.Tensor,
    target: torch.Tensor,
    b0: torch.Tensor,
    noise_var: torch.Tensor,
    biases: bool,
    weight: torch.Tensor | None = None,
    event_source: torch.Tensor | None = None,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One minibatch's contribution to the natural parameters of ``n_videos`` videos.

    ``event_video`` (E,) indexes the touched videos; ``user_mean``/``user_cov``
    are the posteriors of the user of each event (E, D) / (E, D, D);
    ``weight`` (E,) scales each term (forgetting weights; negative to withdraw
    evidence given earlier). Returns precision (J, D, D) and shift (J, D) increments.

    With ``event_source`` (E,), ``user_mean``/``user_cov`` are (S, D)/(S, D, D)
    posteriors shared by several events and ``event_source`` says which one each
    event uses: the moments are then computed once per posterior, not per event
    (the same numbers). ``pairs``: :func:`video_pairs` of these arguments, when
    the caller already holds them (a replay sweep's passes share them).
    """
    d = user_mean.shape[-1]
    dtype = user_mean.dtype
    if d == 0:  # the global-mean model has no video factor at all
        return torch.zeros(n_videos, 0, 0, dtype=dtype), torch.zeros(n_videos, 0, dtype=dtype)
    ey, eyy, eyb, _ = feature_moments(user_mean, user_cov, biases)
    if pairs is None:
        pairs = video_pairs(
            event_video, n_videos, user_mean.shape[0], target, b0, weight, event_source, dtype
        )
    weights, weighted_resid = pairs
    prec = weights @ eyy.reshape(-1, d * d)
    shift = weighted_resid @ ey - weights @ eyb
    return prec.reshape(n_videos, d, d) / noise_var, shift / noise_var


def video_pairs(
    event_video: torch.Tensor,
    n_videos: int,
    n_sources: int,
    target: torch.Tensor,
    b0: torch.Tensor,
    weight: torch.Tensor | None = None,
    event_source: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-(video, posterior) sums :func:`video_batch_statistics` multiplies
    the moments with: the events' weights and weighted residuals (r - b0), each
    (``n_videos``, ``n_sources``). Independent of the users' posteriors and the
    noise, so a replay sweep's passes over one window compute them once."""
    w = torch.ones_like(target, dtype=dtype) if weight is None else weight.to(dtype)
    resid = target.to(dtype) - b0
    if event_source is None:
        event_source = torch.arange(len(target))
    # Summed per (video, posterior) and multiplied once: no (E, D, D) gather.
    weights = pair_weights(event_video, event_source, w, n_videos, n_sources)
    weighted_resid = pair_weights(event_video, event_source, w * resid, n_videos, n_sources)
    return weights, weighted_resid
