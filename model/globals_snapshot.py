"""The shared globals as plain numpy arrays: what the learner publishes and every
worker (and every reader service) loads.

A snapshot is enough to run the local step and to predict; it is not enough to
go on learning the globals (the natural parameters and optimiser state live in
the learner's checkpoint, :mod:`model.checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class GlobalsSnapshot:
    version: int
    config: dict[str, Any]
    b0: float
    sigma: float
    user_prior_mean: np.ndarray  # (D,) E[mu_u]: the local step's prior mean
    user_prior_scale: np.ndarray  # (D,) s_u: the local step's prior scale
    user_prior_cov: np.ndarray  # (D, D) the pooled prior a new user gets (adds Var[mu_u])
    video_prior_mean: np.ndarray  # (D,)
    video_prior_scale: np.ndarray  # (D,)
    video_ids: list[str] = field(default_factory=list)
    video_mean: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (V, D)
    video_cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))  # (V, D, D)
    n_seen: float = 0.0  # the learner's stream clock: events learned (stamps UserState.seen_at)

    @property
    def dim(self) -> int:
        return int(self.user_prior_mean.shape[0])

    def validate(self) -> None:
        d, v = self.dim, len(self.video_ids)
        checks = {
            "user_prior_scale": (self.user_prior_scale.shape, (d,)),
            "user_prior_cov": (self.user_prior_cov.shape, (d, d)),
            "video_prior_mean": (self.video_prior_mean.shape, (d,)),
            "video_prior_scale": (self.video_prior_scale.shape, (d,)),
            "video_mean": (self.video_mean.shape, (v, d)),
            "video_cov": (self.video_cov.shape, (v, d, d)),
        }
        for name, (got, want) in checks.items():
            if tuple(got) != want:
                raise ValueError(
                    f"globals snapshot field {name} has shape {tuple(got)}, expected {want}"
                )
