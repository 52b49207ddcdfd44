"""The choice component's settings and a user's choice state (:mod:`model.choice`
has the model and the symbols)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ChoiceConfig:
    """Settings of :class:`ChoiceModel` (see the module docstring for the symbols)."""

    n_factors: int = 10
    negative_weight: float = 1.0
    """w0: the confidence of every not-started video (a weak negative)."""
    positive_weight: float = 15.0
    """alpha: the extra confidence of a started video (at age 0). 15 rather than
    20: MovieLens 100K hit@10 0.1616 against 0.1511 (the issue's protocol) and
    the taste simulator 1.553x popularity against 1.543x (docs/ranking.md)."""
    user_forgetting: float = 0.97
    """f: a started video's extra confidence is alpha * f^(the user's later events)."""
    effective_data_size: float = 20_000.0
    """N_eff: the learner's evidence about videos decays as exp(-events / N_eff)."""
    prior_scale: float = 0.3
    """s_a at the start, and s_q (the video prior scale, fixed)."""
    pooled: bool = True
    """Learn mu_a and s_a from the window's users (empirical Bayes); else fixed at 0, prior_scale."""
    history_size: int = 200
    """The user step uses the user's latest H started videos."""
    window: int = 60_000
    """(user, video) pairs the learner keeps for the video step."""
    sweep_every: int = 1000
    """Events between full recomputations of every video from the window."""
    own_user_factors: bool = True
    """False: the users' factors come from elsewhere (the minutes model's u_i,
    shared) and the learner only fits the videos' choice factors to them."""
    sweep_iterations: int = 1
    """ALS iterations (all window users, then all videos) per sweep."""
    init_jitter: float = 0.1
    """Scale of a new video's deterministic initial offset of z_j (breaks symmetry)."""
    session_weight: float = 1.0
    """gamma: the served user vector is E[a_i] + gamma x the mean z_j of the
    user's latest ``session_size`` started videos (the session term; 0: off)."""
    session_size: int = 5
    """L: how many of the latest started videos the session term averages."""
    noise_from_residuals: bool = True
    """Estimate the pseudo-likelihood's noise variance sigma^2 at each sweep
    (:func:`model.choice_sweep.residual_noise_var`) and serve the covariances
    scaled by it (:attr:`model.choice.ChoiceModel.noise_var`); False: the
    implicit-ALS convention sigma^2 = 1. The means do not depend on it."""
    learn_sharpness: bool = False
    """Learn P(start)'s lambda from the stream (:mod:`model.choice_link`, the
    learner's step) and publish it in the global record; False: readers use the
    fixed ``streamer.reader.lookup_math.CHOICE_SHARPNESS`` (20). Off by default:
    the learned lambda (4-6) is calibrated but costs the taste simulator's
    hit@10 its 1.5x target (docs/ranking.md)."""

    def __post_init__(self) -> None:
        if self.n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {self.n_factors}")
        if self.negative_weight <= 0 or self.positive_weight <= 0:
            raise ValueError("negative_weight and positive_weight must be > 0")
        if not 0.0 < self.user_forgetting <= 1.0:
            raise ValueError(f"user_forgetting must be in (0, 1], got {self.user_forgetting}")
        if self.effective_data_size <= 0 or self.prior_scale <= 0:
            raise ValueError("effective_data_size and prior_scale must be > 0")
        if self.history_size < 1 or self.window < 1 or self.sweep_every < 1:
            raise ValueError("history_size, window and sweep_every must be >= 1")
        if self.session_weight < 0 or self.session_size < 1:
            raise ValueError("session_weight must be >= 0 and session_size >= 1")

    @property
    def dim(self) -> int:
        """Length of a video's q_j = [z_j, e_j] (and of a stored user vector [a_i, 0])."""
        return self.n_factors + 1


@dataclass
class ChoiceState:
    """One user's choice posterior and the started videos it came from.

    ``mean``/``cov`` are padded to K+1 dims ([a_i, 0], zero variance in the
    last): the layout :mod:`streamer.reader.lookup_math` serves. ``history``: the
    started videos, oldest first, each once.
    """

    history: list[str] = field(default_factory=list)
    mean: np.ndarray | None = None
    cov: np.ndarray | None = None

    def copy(self) -> ChoiceState:
        return ChoiceState(
            list(self.history),
            None if self.mean is None else self.mean.copy(),
            None if self.cov is None else self.cov.copy(),
        )
