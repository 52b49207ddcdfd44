"""How hard the replay sweeps shrink the videos, learned from the events that follow.

The sweeps' video update weighs each event by 1 / (f sigma^2), sigma^2 the
served-error noise (:mod:`model.noise_calibration`), so the factor f sets how
far the video tastes are pulled towards their prior. No fixed f serves every
stream (docs/evaluation.md: the simulated churn60 stream wants f ~0.8,
MovieLens 100K f ~1.25), so the learner chooses it per stream, by a forecast
criterion that never looks at the future:

1. at the end of each sweep (factor f), its videos and one more
   coordinate-ascent pass (users, then videos) from them with f x c (c, then
   1 / c on the next sweep, and so on) give two *candidate* video tables
   (``candidate_videos``), kept until the next sweep;
2. at the next sweep, the latest event of each user who came back since
   (at most ``share`` x the window's events) is predicted from that user's
   other window events against each candidate table (``forecast_errors``):
   events that neither candidate saw (videos new since then: their prior and
   evidence from before the window, the same for both);
3. log f moves one step (``rate``) towards the candidate with the smaller
   squared error, within bounds (``step_log_factor``): a sign step, so the
   size of the error difference (tiny, and noisy from sweep to sweep) does
   not set the pace. At the best f the probe loses on both sides and f
   hovers there, one step either way.

Why forecast, not hold out: held-out events inside the window are already in
the videos the sweep starts from, and a pass from them with less noise fits
that leak harder (tried: f ran to its lower bound on the first 30,000 events
of churn60, 1.1221 against 1.1186 with f = 1). Cost: one pass over the window
per sweep (a sweep makes ``replay_iterations`` = 3 of them) and two user
steps for the returning users, in the learner, off the worker's path; the
sweep keeps one more table of its videos until the next.

>>> mask = holdout_mask(np.array([0, 1, 0, 2, 1]), np.array([1.0, 1, 2, 2, 3]), since=1.5, share=1.0)
>>> np.flatnonzero(mask).tolist()  # the latest event of each user seen after the clock 1.5
[2, 3, 4]
>>> step_log_factor(0.0, (1.00, 0.98), rate=0.05, bound=0.7)  # the larger factor forecast better
0.05
"""

from __future__ import annotations

import numpy as np
import torch

from model.local_step import HistoryEntries, LocalPairs, local_pairs, user_local_step
from model.moments import feature_mean, gaussian_posterior
from model.video_step import video_batch_statistics, video_pairs


def holdout_mask(
    event_user: np.ndarray, event_clock: np.ndarray, since: float, share: float
) -> np.ndarray:
    """The events to forecast: the latest (rows are oldest first) of each user
    with an event after the clock ``since``, at most ``share`` x #events of
    them (the latest of those users, by time). A boolean mask over the events."""
    n = len(event_user)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    _, rev_first = np.unique(event_user[::-1], return_index=True)
    latest = np.sort(n - 1 - rev_first)  # each user's last row, oldest first
    latest = latest[event_clock[latest] > since]
    k = min(len(latest), max(1, int(share * n)))
    mask[latest[len(latest) - k :]] = True
    return mask


WindowPairs = tuple[LocalPairs, tuple[torch.Tensor, torch.Tensor]]
"""A window's per-pair sums for the user step and for the video step."""


def window_pairs(
    entries: HistoryEntries, n_users: int, n_videos: int, b0: torch.Tensor, dtype: torch.dtype
) -> WindowPairs:
    """The sums a coordinate-ascent pass over the window ``entries`` multiplies
    the posteriors' moments with: :func:`~model.local_step.local_pairs` for the
    user step and :func:`~model.video_step.video_pairs` for the video step.
    They depend on neither the posteriors nor the noise, so every pass of a
    sweep (and its probe's) shares one."""
    return (
        local_pairs(entries, n_users, n_videos, b0, dtype),
        video_pairs(
            entries.video,
            n_videos,
            n_users,
            entries.target,
            b0,
            entries.weight,
            entries.user,
            dtype,
        ),
    )


def candidate_videos(
    entries: HistoryEntries,
    n_users: int,
    video_mean: torch.Tensor,
    video_cov: torch.Tensor,
    prior_prec: torch.Tensor,
    prior_shift: torch.Tensor,
    b0: torch.Tensor,
    noise_var: torch.Tensor,
    user_prior: tuple[torch.Tensor, torch.Tensor],
    biases: bool,
    factors: tuple[float, ...],
    pairs: WindowPairs | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One coordinate-ascent pass over the window ``entries`` from the videos
    ``video_mean``/``video_cov`` per factor: the videos' (mean, cov) with the
    noise ``factor x noise_var``. ``prior_prec``/``prior_shift``: the videos'
    prior plus their evidence from outside the window. ``pairs``: the
    :func:`window_pairs` of ``entries`` (computed here if not given; the same
    numbers)."""
    out = []
    n_v = video_mean.shape[0]
    if pairs is None:
        pairs = window_pairs(entries, n_users, n_v, b0, video_mean.dtype)
    for factor in factors:
        noise = factor * noise_var
        um, uc, _ = user_local_step(
            entries, n_users, video_mean, video_cov, b0, noise, *user_prior, biases,
            tril=False, pairs=pairs[0],
        )  # fmt: skip
        prec, shift = video_batch_statistics(
            entries.video, n_v, um, uc, entries.target, b0, noise, biases,
            weight=entries.weight, event_source=entries.user, pairs=pairs[1],
        )  # fmt: skip
        vm, vc, _ = gaussian_posterior(prior_prec, prior_shift, prec, shift, tril=False)
        out.append((vm, vc))
    return out


def forecast_errors(
    event_user: torch.Tensor,
    event_video: torch.Tensor,
    target: torch.Tensor,
    held: np.ndarray,
    tables: list[tuple[torch.Tensor, torch.Tensor]],
    b0: torch.Tensor,
    noise_var: torch.Tensor,
    user_prior: tuple[torch.Tensor, torch.Tensor],
    biases: bool,
) -> tuple[float, ...]:
    """Mean squared error of the ``held`` events (boolean mask) under each
    video table (mean, cov) of ``tables``: each event's user is fitted from
    their *other* events against that table (noise ``noise_var``, as served),
    and the event is predicted by the posterior means."""
    hold = torch.from_numpy(held)
    users = torch.unique(event_user[hold])
    local = torch.full((int(event_user.max()) + 1,), -1, dtype=torch.long)
    local[users] = torch.arange(len(users))
    mine = (local[event_user] >= 0) & ~hold
    entries = HistoryEntries(
        local[event_user[mine]],
        event_video[mine],
        target[mine],
        torch.ones(int(mine.sum()), dtype=target.dtype),
    )
    h_user, h_video, h_target = local[event_user[hold]], event_video[hold], target[hold]
    errors = []
    # The tables differ, the entries' per-pair sums do not.
    pairs = local_pairs(entries, len(users), len(tables[0][0]), b0, tables[0][0].dtype)
    for vm, vc in tables:
        um, _, _ = user_local_step(
            entries, len(users), vm, vc, b0, noise_var, *user_prior, biases, tril=False, pairs=pairs
        )
        x, w = um[h_user], vm[h_video]
        mean = b0 + (feature_mean(x, biases) * w).sum(-1)
        if biases:
            mean = mean + x[:, -1]
        errors.append(float((h_target - mean).pow(2).mean()))
    return tuple(errors)


def step_log_factor(
    log_factor: float, errors: tuple[float, ...], rate: float, bound: float
) -> float:
    """One step of log f towards the better of the candidates f / c and f x c
    (``errors`` in that order), clamped to [-bound, bound]; no move on a tie."""
    low, high = errors
    move = rate if high < low else -rate if low < high else 0.0
    return float(min(bound, max(-bound, log_factor + move)))
