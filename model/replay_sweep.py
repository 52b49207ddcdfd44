"""The learner's replay sweep: coordinate-ascent passes over the replay window.

One sweep alternates the two conjugate updates over every event of the window
(:mod:`model.replay_window`), as batch variational inference does, with each
event's evidence decayed by its age, exp(-(T - t)/N_eff):

1. users: q(x_i) from *all* of user i's window events (weight = age decay
   only), against the current video posteriors (:func:`model.local_step.user_local_step`);
2. videos: the data part of every window video's natural parameters, rebuilt
   from scratch from its window events with those users' posteriors
   (:func:`model.video_step.video_batch_statistics`).

Why users get their whole window here, not the forgetting-weighted recent
history the worker serves them with: the worker's forgetting (gamma per later
event) says how a user's taste drifts, so it serves the freshest estimate; but
for teaching the videos, a user with 40 events whose evidence is down-weighted
to ~20 carries too little taste, and on MovieLens 100K the taste dimensions then
collapse to the zero fixed point of mean-field coordinate ascent (every
video's taste shift is zero when every user's taste mean is). Measured in the
prototype behind docs/evaluation.md: forgetting-weighted users in the sweep,
RMSE 0.9452 at minibatch 1 (taste term ~0); whole-window users, 0.937.

The result replaces the video evidence that the incremental steps had added
for the window's videos (those steps used each user's posterior at the time of
the event: near the prior for a new user, and never revisited).

>>> import torch
>>> from model.replay_window import ReplayWindow
>>> w = ReplayWindow(100)
>>> w.add(["a", "a", "b"], np.array([0, 1, 0]), np.array([1.0, -1.0, 1.0]), clock=3.0)
>>> d, f64 = 3, torch.float64
>>> prior = (torch.zeros(d, dtype=f64), torch.full((d,), 0.5, dtype=f64))
>>> zeros = torch.zeros(2, d, d, dtype=f64), torch.zeros(2, d, dtype=f64)
>>> out = replay_sweep(
...     w.arrays(), torch.tensor([0, 1]), zeros[1], 0.25 * torch.eye(d, dtype=f64).expand(2, d, d), *zeros,
...     b0=torch.tensor(0.0, dtype=f64), noise_var=torch.tensor(1.0, dtype=f64), user_prior=prior,
...     video_prior=prior, biases=True, clock=3.0, effective_data_size=100.0, iterations=2, n_drop=1)
>>> tuple(out.kept_prec.shape), float(out.dropped_prec[1].abs().sum())  # video 1's only pair is dropped
((2, 3, 3), 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.local_step import HistoryEntries, user_local_step
from model.moments import gaussian_posterior
from model.sweep_noise import candidate_videos, forecast_errors, holdout_mask, window_pairs
from model.video_step import video_batch_statistics
from model.weighted_sums import unique_rows

DTYPE = torch.float64


@dataclass(frozen=True)
class SweepResult:
    """The window videos' new evidence (rows as passed in), split into the
    pairs that stay in the window and the ``n_drop`` oldest that leave it."""

    kept_prec: torch.Tensor  # (J, D, D)
    kept_shift: torch.Tensor  # (J, D)
    dropped_prec: torch.Tensor
    dropped_shift: torch.Tensor
    probe_errors: tuple[float, ...] | None = None
    """The forecast squared errors of the previous sweep's two candidates,
    smaller factor first, on the events since (:mod:`model.sweep_noise`)."""
    candidates: Candidates | None = None
    """This sweep's candidate video tables, to be scored at the next sweep."""


Candidates = tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], float]
"""(rows, [(video mean, cov) per candidate factor], the sweep's clock)."""


def replay_sweep(
    window: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int],
    rows: torch.Tensor,
    video_mean: torch.Tensor,
    video_cov: torch.Tensor,
    base_prec: torch.Tensor,
    base_shift: torch.Tensor,
    b0: torch.Tensor,
    noise_var: torch.Tensor,
    user_prior: tuple[torch.Tensor, torch.Tensor],
    video_prior: tuple[torch.Tensor, torch.Tensor],
    biases: bool,
    clock: float,
    effective_data_size: float,
    iterations: int,
    n_drop: int = 0,
    user_variance: float = 1.0,
    noise_factor: float = 1.0,
    probe: float = 1.0,
    holdout: float = 0.0,
    previous: Candidates | None = None,
) -> SweepResult:
    """``iterations`` coordinate-ascent passes over ``window`` (from
    :meth:`ReplayWindow.arrays`, oldest first).

    ``rows`` (J,) are the distinct video rows of the window, sorted, and
    ``video_mean``/``video_cov`` their posteriors now (where the passes start);
    ``base_prec``/``base_shift`` their evidence from outside the window (decayed
    to ``clock``), which the sweep's video posteriors include but do not
    return. The returned evidence is decayed to ``clock``; the first ``n_drop``
    pairs' share comes back apart, so the caller can keep it when they leave.
    ``user_variance``: the share of each user's posterior covariance that the
    video update counts (``HPMFConfig.sweep_user_variance``; 1: mean-field
    coordinate ascent). ``noise_factor``: the sweep's noise variance is
    ``noise_factor x noise_var``; with ``probe`` c != 1 the result also
    carries two candidate video tables, this sweep's (f) and one more pass
    with f x c, and, given the ``previous`` sweep's, their forecast errors
    on the events since (:mod:`model.sweep_noise`; at most ``holdout`` x the
    window's events).
    """
    user_np, video_np, target_np, clock_np, _ = window
    d = base_shift.shape[-1]
    n_v = len(rows)
    event_video = torch.from_numpy(sorted_positions(rows.numpy(), video_np))
    # np.unique(user_np, return_inverse=True)'s inverse, by a table (no sort).
    _, event_user = unique_rows(
        torch.from_numpy(user_np), int(user_np.max()) + 1 if len(user_np) else 0
    )
    event_user_np = event_user.numpy()
    n_u = int(event_user_np.max()) + 1 if len(event_user_np) else 0
    decay = torch.from_numpy(np.exp(-(clock - clock_np) / effective_data_size))
    target = torch.from_numpy(target_np)
    pm, ps = video_prior
    prior_prec = torch.diag_embed(ps.pow(-2)).expand(n_v, d, d) + base_prec
    prior_shift = (ps.pow(-2) * pm).expand(n_v, d) + base_shift
    entries = HistoryEntries(event_user, event_video, target, decay)
    weight = decay
    served_noise, noise_var = noise_var, noise_factor * noise_var
    um = uc = prec = shift = torch.zeros(0)
    vm, vc = video_mean, video_cov
    # The per-pair sums of the window's weights and residuals do not change
    # from pass to pass (nor for the probe's pass): computed once, ~30% of a
    # sweep's time before (dense tables of window users x videos).
    pairs = window_pairs(entries, n_u, n_v, b0, video_mean.dtype)
    for _ in range(max(iterations, 1)):
        # 1. Every window user against the current videos, from all their window events.
        um, uc, _ = user_local_step(
            entries, n_u, vm, vc, b0, noise_var, *user_prior, biases, tril=False, pairs=pairs[0]
        )
        # 2. Every window video's evidence, rebuilt from those users.
        if user_variance != 1.0:
            uc = user_variance * uc
        prec, shift = video_batch_statistics(
            event_video,
            n_v,
            um,
            uc,
            target,
            b0,
            noise_var,
            biases,
            weight=weight,
            event_source=event_user,
            pairs=pairs[1],
        )
        vm, vc, _ = gaussian_posterior(prior_prec, prior_shift, prec, shift, tril=False)
    probed = candidates = None
    if probe != 1.0 and n_u > 0:
        args = (prior_prec, prior_shift, b0, served_noise, user_prior, biases)
        # This sweep's own videos (f) against one more pass with f x probe,
        # ordered by factor.
        [other] = candidate_videos(
            entries, n_u, vm, vc, *args, (noise_factor * probe,), pairs=pairs
        )
        tables = [(vm, vc), other] if probe > 1.0 else [other, (vm, vc)]
        candidates = (rows, tables, clock)
        if previous is not None:
            probed = _forecast(previous, rows, entries, user_np, clock_np, holdout, *args)
    if n_drop <= 0:
        zero = torch.zeros_like(prec), torch.zeros_like(shift)
        return SweepResult(prec, shift, *zero, probed, candidates)
    old = torch.zeros(len(target), dtype=DTYPE)
    old[:n_drop] = 1.0
    dropped_prec, dropped_shift = video_batch_statistics(
        event_video,
        n_v,
        um,
        uc,
        target,
        b0,
        noise_var,
        biases,
        weight=weight * old,
        event_source=event_user,
    )
    return SweepResult(
        prec - dropped_prec, shift - dropped_shift, dropped_prec, dropped_shift, probed, candidates
    )


def _forecast(
    previous: Candidates,
    rows: torch.Tensor,
    entries: HistoryEntries,
    user_np: np.ndarray,
    clock_np: np.ndarray,
    share: float,
    prior_prec: torch.Tensor,
    prior_shift: torch.Tensor,
    b0: torch.Tensor,
    noise_var: torch.Tensor,
    user_prior: tuple[torch.Tensor, torch.Tensor],
    biases: bool,
) -> tuple[float, ...] | None:
    """The previous sweep's candidates scored on the latest event of each user
    seen since (:func:`model.sweep_noise.forecast_errors`); videos they lack
    take their prior with the evidence from outside the window."""
    prev_rows, tables, since = previous
    held = holdout_mask(user_np, clock_np, since, share)
    if not held.any():
        return None
    zero = torch.zeros_like(prior_shift)
    base_mean, base_cov, _ = gaussian_posterior(
        prior_prec, prior_shift, torch.zeros_like(prior_prec), zero, tril=False
    )
    pos = torch.searchsorted(prev_rows, rows).clamp(max=max(len(prev_rows) - 1, 0))
    found = prev_rows[pos] == rows if len(prev_rows) else torch.zeros_like(rows, dtype=torch.bool)
    full = []
    for mean, cov in tables:
        m, c = base_mean.clone(), base_cov.clone()
        m[found], c[found] = mean[pos[found]], cov[pos[found]]
        full.append((m, c))
    return forecast_errors(
        entries.user, entries.video, entries.target, held, full, b0, noise_var, user_prior, biases
    )


def sorted_positions(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.searchsorted(rows, values)`` for sorted distinct ``rows``: by a lookup
    table when every value is one of the rows (a sweep's window videos always
    are; ~4x faster on its ~100,000 events), else by the search itself.

    >>> sorted_positions(np.array([2, 5, 9]), np.array([9, 2, 2, 5])).tolist()
    [2, 0, 0, 1]
    >>> sorted_positions(np.array([2, 5, 9]), np.array([3, 9])).tolist()  # 3 is no row
    [1, 2]
    """
    if len(rows) == 0 or len(values) == 0 or rows[0] < 0 or values.min() < 0:
        return np.searchsorted(rows, values)
    bound = int(max(rows[-1], values.max())) + 1
    table = np.zeros(bound, dtype=np.int64)
    table[rows] = np.arange(len(rows))
    pos = table[values]
    if not np.array_equal(rows[pos], values):
        return np.searchsorted(rows, values)
    return pos
