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
>>> d = 3
>>> rows, prec, shift = replay_sweep(
...     w.arrays(), torch.zeros(2, d, dtype=torch.float64),
...     0.1 * torch.eye(d, dtype=torch.float64).expand(2, d, d), b0=torch.tensor(0.0, dtype=torch.float64),
...     noise_var=torch.tensor(1.0, dtype=torch.float64), user_prior=(torch.zeros(d, dtype=torch.float64),
...     torch.full((d,), 0.5, dtype=torch.float64)), video_prior=(torch.zeros(d, dtype=torch.float64),
...     torch.full((d,), 0.5, dtype=torch.float64)), biases=True, clock=3.0, effective_data_size=100.0,
...     iterations=2)
>>> rows.tolist(), tuple(prec.shape), tuple(shift.shape)
([0, 1], (2, 3, 3), (2, 3))
"""

from __future__ import annotations

import numpy as np
import torch

from model.local_step import HistoryEntries, user_local_step
from model.moments import gaussian_posterior
from model.video_step import video_batch_statistics

DTYPE = torch.float64


def replay_sweep(
    window: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int],
    video_mean: torch.Tensor,
    video_cov: torch.Tensor,
    b0: torch.Tensor,
    noise_var: torch.Tensor,
    user_prior: tuple[torch.Tensor, torch.Tensor],
    video_prior: tuple[torch.Tensor, torch.Tensor],
    biases: bool,
    clock: float,
    effective_data_size: float,
    iterations: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``iterations`` coordinate-ascent passes over ``window`` (from
    :meth:`ReplayWindow.arrays`), starting from the video posteriors
    ``video_mean``/``video_cov`` (all rows of the model).

    Returns the window's video rows and the new data part of their natural
    parameters (precision (J, D, D), shift (J, D)), decayed to ``clock``.
    """
    user_np, video_np, target_np, clock_np, _ = window
    d = video_mean.shape[-1]
    if len(user_np) == 0 or d == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, torch.zeros(0, d, d, dtype=DTYPE), torch.zeros(0, d, dtype=DTYPE)
    rows, event_video = np.unique(video_np, return_inverse=True)
    live, event_user = np.unique(user_np, return_inverse=True)
    n_u, n_v = len(live), len(rows)
    decay = torch.from_numpy(np.exp(-(clock - clock_np) / effective_data_size))
    target = torch.from_numpy(target_np)
    ev_user = torch.from_numpy(event_user)
    ev_video = torch.from_numpy(event_video)
    vm = video_mean[torch.from_numpy(rows)].clone()
    vc = video_cov[torch.from_numpy(rows)].clone()
    pm, ps = video_prior
    prior_prec = torch.diag_embed(ps.pow(-2)).expand(n_v, d, d)
    prior_shift = (ps.pow(-2) * pm).expand(n_v, d)
    entries = HistoryEntries(ev_user, ev_video, target, decay)
    prec = shift = torch.zeros(0)
    for _ in range(max(iterations, 1)):
        # 1. Every window user against the current videos, from all their window events.
        um, uc, _ = user_local_step(
            entries, n_u, vm, vc, b0, noise_var, user_prior[0], user_prior[1], biases, tril=False
        )
        # 2. Every window video's evidence, rebuilt from those users.
        prec, shift = video_batch_statistics(
            ev_video, n_v, um, uc, target, b0, noise_var, biases, weight=decay, event_source=ev_user
        )
        vm, vc, _ = gaussian_posterior(prior_prec, prior_shift, prec, shift, tril=False)
    return torch.from_numpy(rows), prec, shift
