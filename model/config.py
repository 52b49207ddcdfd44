"""Hyper-parameters of the online HPMF model, validated when built."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from model.transform import TRANSFORMS


@dataclass(frozen=True)
class HPMFConfig:
    """Settings of :class:`model.online.OnlineHPMF`.

    The defaults are the ones tuned on MovieLens 100K (see BENCHMARKS.md).

    >>> HPMFConfig(n_factors=4).dim
    5
    >>> HPMFConfig(transform="sqrt")
    Traceback (most recent call last):
    ...
    ValueError: unknown transform 'sqrt'; choose one of: identity, log1p
    """

    n_factors: int = 10
    """K, the number of latent taste dimensions."""
    biases: bool = True
    """Add a user bias b_i and a video bias c_j (they ride in the Gaussian factors)."""
    transform: str = "identity"
    """How raw values (minutes, ratings) map to the Gaussian scale: identity or log1p."""
    global_mean_prior: float = 0.0
    """Prior mean of b0 (transformed scale): what is predicted before anything is
    learned, e.g. the midpoint of a rating scale (3.0 for 1-5 stars)."""
    user_pooling: bool = True
    """Learn the population prior N(mu_u, diag(s_u)^2) of user factors from all users."""
    video_pooling: bool = True
    """Learn the prior N(mu_v, diag(s_v)^2) of video factors from all videos."""
    prior_scale: float = 0.5
    """Initial (and, with pooling off, fixed) prior standard deviation of factors.
    0.5 since the replay sweeps: in the prototype (docs/evaluation.md) MovieLens
    100K at minibatch 1 scored 0.9370 at 0.3, 0.9288 at 0.45, 0.9278 at 0.6."""
    serving_taste_scale: float | None = None
    """Prior sd of the user taste dims in the local step and for new users (the
    served posteriors), when set; the replay sweeps still fit users with
    ``prior_scale``, which teaches the videos taste (see docs/evaluation.md,
    the cold slice: 0.25 took ``rmse_lt5`` 1.0069 -> 1.0039 but the RMSE 0.9324
    -> 0.9335 on MovieLens 100K at minibatch 1). None: ``prior_scale``. Only
    with ``user_pooling``."""
    bias_prior_scale: float = 0.6
    """Initial (and, with pooling off, fixed) prior standard deviation of biases."""
    scale_hyperprior_sd: float = 1.0
    """Spread (log scale) of the LogNormal hyperprior on the prior scales s_u, s_v
    around their initial values (when ``learn_prior_scales``)."""
    learn_prior_scales: bool = False
    """Let SVI move the taste dims' prior scales in s_u, s_v (the bias scales are
    learned either way). Off: learned, they shrink and take the taste dims with
    them, back to a bias model. Prototype (docs/evaluation.md),
    MovieLens 100K at minibatch 1: 0.9454 with the scales learned, 0.9288 fixed.
    The real model with the scales learned under a tight hyperprior (sd 0.05)
    still let s_u fall 0.5 -> 0.05-0.12 (the users plate is scaled to N_eff and
    outweighs it) and scored 0.9387."""
    history_size: int = 200
    """H: a user's posterior is computed from their H most recently watched videos."""
    user_forgetting: float = 0.95
    """Weight kept by an event per later event of the same user (1.0: never forget)."""
    effective_data_size: float = 200_000.0
    """N_eff: video evidence decays as exp(-events/N_eff); also scales the SVI likelihood."""
    refresh_video_evidence: bool = False
    """When a user's posterior is recomputed, replace (not just add to) that user's
    evidence about the videos in their history: exact incremental coordinate
    ascent, so videos learn from what is known about users now, not from the
    near-prior guess made when the user was new. Off by default: on MovieLens
    100K it is worse at minibatch 256 (RMSE 1.0276 vs 1.0257, first-5 slice
    1.0864 vs 1.0773) and on the first-5 slice at minibatch 1 (1.0069 vs
    1.0025), 0.0016 better overall at minibatch 1, and it re-reads every
    touched user's whole history on every batch (a quarter slower)."""
    replay_window_events: int = 200_000
    """The learner keeps this many recent (user, video) pairs and revisits them
    in replay sweeps (:mod:`model.replay_sweep`): without them the video factors
    learn no taste (see docs/evaluation.md). 0 turns replay off."""
    replay_warmup_events: int = 10_000
    """The first replay sweep runs once this many events were learned (fewer
    events cannot carry taste; sweeps on them only shrink the factors)."""
    replay_interval_min: int = 1000
    replay_interval_growth: float = 0.05
    replay_interval_max: int = 20_000
    """Events between replay sweeps: clamp(events learned x growth, min, max).
    A sweep costs about the window's size, so the interval grows with the
    stream: on MovieLens 100K (prototype, minibatch 1) a growing interval
    (0.05) scores as one sweep per 1,000 events did (0.9280 vs 0.9279) with
    ~40 sweeps instead of 90; and the learner's sweep work per event stays
    bounded (window / interval_max) in a long-running service."""
    replay_iterations: int = 3
    """Coordinate-ascent passes (users, then videos) per replay sweep."""
    sweep_user_variance: float = 1.0
    """The share of each user's posterior covariance that the replay sweep's
    video update counts: E[y y^T] = m m^T + share x S. 1 is mean-field
    coordinate ascent, where a user known from one or two events (S still the
    prior's) pulls every video they watched towards zero taste; 0 takes users
    at their means, which lets the scale of u.v run away (docs/evaluation.md)."""
    sweep_noise_learning: bool = True
    """Learn the factor f on the noise variance of the replay sweeps (how hard
    they shrink the video tastes) per stream, by forecasting
    (:mod:`model.sweep_noise`): each sweep keeps its videos (f) and one more
    pass with f x c (c = ``sweep_noise_probe``, 1 / c on alternate sweeps);
    the next sweep predicts each returning user's latest event with both,
    and log f moves by ``sweep_noise_rate`` towards the better, within
    [-``sweep_noise_bound``, ``sweep_noise_bound``]. No fixed f serves every
    stream: the simulated churn60 stream wants less shrinkage than the
    served-error noise gives, MovieLens 100K more. Whole streams at minibatch
    1 (docs/evaluation.md): churn60 1.0911 -> 1.0903 (25% of the
    biases-to-oracle gap, f ends at 0.74), MovieLens 100K 0.9324 -> 0.9290
    (``rmse_lt5`` 1.0069 -> 1.0054, f ends at 1.82); one more pass per sweep
    (~+45% of a sweep's work, in the learner). False: f = 1."""
    sweep_noise_probe: float = 1.25
    sweep_noise_holdout: float = 0.05
    """At most this share of the window's events is forecast per sweep (the
    latest events of the users who came back since the last sweep)."""
    sweep_noise_rate: float = 0.05
    sweep_noise_bound: float = 0.7
    replay_background: bool = False
    """Run each replay sweep in a background thread and fold its result in at
    the first global step after it finished (the service's learner: the sweep
    stays off the loop that applies batches). False: a sweep is folded in the
    moment it is due, so a replayed stream gives the same numbers every time
    (the evaluation harness). Either way the evidence learned while a sweep
    ran is kept (:meth:`model.online.OnlineHPMF.apply_global`)."""
    noise_from_served_errors: bool = True
    """sigma^2 from the errors of what was served, by the method of moments
    (:mod:`model.noise_calibration`), not from SVI's ELBO, which counts the
    posteriors' variance twice and makes the intervals too wide."""
    noise_calibration_horizon: float = 20_000.0
    """Events over which the served errors are averaged (exponential forgetting)."""
    noise_first_event_only: bool = True
    """Feed the noise estimate from each user's first event of a minibatch only
    (:func:`model.noise_calibration.served_noise_pairs`): the user's later
    events were served from a state without the batch's earlier ones, and
    their staleness moved sigma at large minibatches (MovieLens 100K at 256 /
    1024: RMSE 1.0147 / 1.0391 with every event, 1.0078 / 1.0354 with the
    first). No change at minibatch 1."""
    svi_min_events: int = 512
    """The Pyro SVI step on the hyper-parameters runs once this many events have
    gathered, early in a stream; the interval then grows with the stream (see
    ``svi_interval_growth``) up to ``svi_interval_max``."""
    svi_interval_growth: float = 1 / 16
    svi_interval_max: int = 2048
    """Events between SVI steps: clamp(events learned x growth, svi_min_events,
    svi_interval_max). A step costs ~5 ms of Pyro bookkeeping whatever its size,
    and the hyper-parameters are few: they need many steps while they are far
    from their optimum (a short simulated stream), few once they only track it.
    On MovieLens 100K (svi_lr 0.06) one step per 2048 events scores as one per
    256 did at 0.02 (minibatch 256: 1.0263 vs 1.0257, minibatch 1: 0.9466 vs
    0.9463, minibatch 1024: 1.0958 vs 1.1016) in half the time at minibatch 256."""
    svi_max_events: int = 512
    """An SVI step looks at a random subset of at most this many buffered events."""
    svi_steps: int = 1
    svi_lr: float = 0.06
    svi_compiled: bool = False
    """Run the SVI loss as a trace compiled once (``pyro.infer.JitTrace_ELBO``,
    inputs padded to ``svi_max_events`` rows; :mod:`model.svi_loss`) instead of
    re-tracing the model and guide in Python at every step."""
    max_value: float = 1e6
    """Raw values above this are rejected as absurd."""
    max_videos: int = 0
    """Catalogue cap: the learner keeps at most this many videos (0: no cap). Past
    it, the least recently touched tenth of the cap is forgotten at once (their
    posteriors were decaying towards the prior anyway; one that comes back
    starts again at the prior). Bounds memory, the published global record and
    the checkpoint whatever ids producers send."""
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(
                f"unknown transform {self.transform!r}; choose one of: {', '.join(TRANSFORMS)}"
            )
        if self.n_factors < 0:
            raise ValueError(f"n_factors must be >= 0, got {self.n_factors}")
        if not 0.0 < self.user_forgetting <= 1.0:
            raise ValueError(f"user_forgetting must be in (0, 1], got {self.user_forgetting}")
        if self.effective_data_size <= 0:
            raise ValueError(f"effective_data_size must be > 0, got {self.effective_data_size}")
        if self.history_size < 1:
            raise ValueError(f"history_size must be >= 1, got {self.history_size}")
        if self.prior_scale <= 0 or self.bias_prior_scale <= 0:
            raise ValueError("prior scales must be > 0")
        if self.serving_taste_scale is not None and self.serving_taste_scale <= 0:
            raise ValueError(f"serving_taste_scale must be > 0, got {self.serving_taste_scale}")
        if self.svi_min_events < 1 or self.svi_steps < 0 or self.svi_lr <= 0:
            raise ValueError("svi_min_events >= 1, svi_steps >= 0 and svi_lr > 0 are required")
        if not math.isfinite(self.global_mean_prior):
            raise ValueError(f"global_mean_prior must be finite, got {self.global_mean_prior}")
        if (
            self.replay_window_events < 0
            or self.replay_iterations < 1
            or self.replay_interval_min < 1
        ):
            raise ValueError(
                "replay_window_events >= 0, replay_iterations >= 1 and replay_interval_min >= 1 are required"
            )
        if not self.sweep_user_variance >= 0.0:
            raise ValueError(f"sweep_user_variance must be >= 0, got {self.sweep_user_variance}")
        if self.sweep_noise_probe <= 1.0 or not 0.0 < self.sweep_noise_holdout <= 1.0:
            raise ValueError("sweep_noise_probe > 1 and sweep_noise_holdout in (0, 1] are required")
        if self.max_videos < 0:
            raise ValueError(f"max_videos must be >= 0 (0: no cap), got {self.max_videos}")
        if self.svi_interval_growth < 0 or self.svi_interval_max < 1:
            raise ValueError("svi_interval_growth >= 0 and svi_interval_max >= 1 are required")

    @property
    def dim(self) -> int:
        """Length of a user (or video) Gaussian factor: K taste dims plus the bias."""
        return self.n_factors + (1 if self.biases else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HPMFConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)
