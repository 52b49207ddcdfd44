"""What a worker's local step hands to the learner's global step.

:class:`GlobalStats` is keyed by video id (not row), so a learner in another
process can apply it (``streamer.global_stats_record`` frames it for Kafka);
:class:`LocalUpdate` pairs it with the batch users' new states.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.posterior import UserState


@dataclass
class GlobalStats:
    """What a local update hands to the global step, keyed by video id (not row),
    so a learner in another process can apply it. All arrays are numpy.

    ``video_prec``/``video_shift``: natural-parameter increments per touched video.
    ``user_mean``/``user_cov``: posteriors of the batch's users (for SVI).
    ``event_user``/``event_video``/``target``: the batch's (deduplicated) events.
    """

    video_ids: list[str]
    video_prec: np.ndarray
    video_shift: np.ndarray
    user_mean: np.ndarray
    user_cov: np.ndarray
    event_user: np.ndarray
    event_video: np.ndarray
    target: np.ndarray
    n_events: int
    user_ids: list[str] = field(default_factory=list)
    """The batch's users (``event_user`` indexes them): the learner's replay
    window needs to know whose events these are. Empty in statistics written by
    an older worker: those still update the videos, but are not replayed."""
    choice_mean: np.ndarray | None = None
    """(U, K_c+1) the batch's users' choice posteriors q(a_i), padded, in
    ``user_ids`` order (:mod:`model.choice`; computed by the worker's local
    step, applied by the learner). None in statistics of a worker that does
    not run the choice component: those update the minutes model only."""
    choice_cov: np.ndarray | None = None
    served_sq_err: np.ndarray = field(default_factory=lambda: np.zeros(0))
    served_model_var: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per event: the squared error of the mean served from the user's state
    before the batch, and that prediction's variance less the noise (the
    learner's noise estimate, :mod:`model.noise_calibration`). Empty from an
    older worker."""


@dataclass
class LocalUpdate:
    states: dict[str, UserState]
    stats: GlobalStats
