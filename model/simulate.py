"""A synthetic ad-supported VOD watch stream, drawn from the HPMF model itself.

The generative story (the same one :mod:`model.hpmf_model` assumes, on the
log1p scale):

    x_i = [u_i, b_i] ~ N(mu_u, diag(s_u)^2)        user tastes and bias
    w_j = [v_j, c_j] ~ N(mu_v, diag(s_v)^2)        video factors and bias
    r_ij ~ N(b0 + b_i + c_j + u_i . v_j, sigma^2)
    minutes_ij = max(expm1(r_ij), 0)

and the traffic around it:

* videos have Zipf-like popularity, P(video of rank k) proportional to k^-a;
* every day ``users_per_day`` new users arrive (uniformly over the day), watch a
  geometric number of distinct videos (mean ``light_mean_views``) in one short
  session and churn; a minority (``heavy_fraction``) are heavy watchers
  (mean ``heavy_mean_views``) whose views spread over days;
* events after the last day are dropped.

With the defaults about 0.4% of the user x video matrix is observed. Pure numpy,
no I/O: :mod:`streamer.cli.simulate` writes the files.

>>> sim = simulate(SimConfig(days=1, users_per_day=200, n_videos=50, seed=3))
>>> sim.truth.user_factors().shape[1] == SimConfig().n_factors + 1
True
>>> bool((sim.values >= 0).all()) and bool((np.diff(sim.timestamps) >= 0).all())
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DAY = 86_400.0
EPOCH = 1_700_000_000.0  # timestamps start here (seconds), only to look like real ones


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the simulated stream; the defaults give ~0.4% density on 565 videos."""

    days: int = 7
    users_per_day: int = 2000
    n_videos: int = 565
    n_factors: int = 10
    biases: bool = True
    zipf_exponent: float = 0.9
    heavy_fraction: float = 0.05
    light_mean_views: float = 1.9
    heavy_mean_views: float = 12.0
    light_gap_s: float = 20 * 60.0
    """Mean gap between a light user's views (one session)."""
    heavy_gap_s: float = 6 * 3600.0
    """Mean gap between a heavy watcher's views (they come back over days)."""
    b0: float = 3.0
    """Grand mean of log1p(minutes): exp(3) - 1 = ~19 minutes."""
    sigma: float = 0.5
    mu_u_scale: float = 0.3
    """The population mean of the user tastes is drawn N(0, mu_u_scale^2) per factor."""
    user_scale: float = 0.5
    user_bias_scale: float = 0.5
    video_scale: float = 0.5
    video_bias_scale: float = 0.5
    seed: int = 0
    choice_strength: float = 0.0
    """How much taste drives which videos a user starts: user i starts video j
    with probability proportional to popularity_j x exp(choice_strength x
    (u_i . v_j) / sd(u . v)), drawn without replacement. 0: popularity alone
    (the stream does not depend on taste; the original behaviour)."""

    def __post_init__(self) -> None:
        if self.days < 1 or self.users_per_day < 1 or self.n_videos < 1:
            raise ValueError("days, users_per_day and n_videos must be >= 1")
        if self.n_factors < 0:
            raise ValueError(f"n_factors must be >= 0, got {self.n_factors}")
        if not 0.0 <= self.heavy_fraction <= 1.0:
            raise ValueError(f"heavy_fraction must be in [0, 1], got {self.heavy_fraction}")
        if self.light_mean_views < 1 or self.heavy_mean_views < 1:
            raise ValueError("mean views per user must be >= 1 (everyone watches once)")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if not (self.choice_strength >= 0 and np.isfinite(self.choice_strength)):
            raise ValueError(f"choice_strength must be finite and >= 0, got {self.choice_strength}")

    @property
    def dim(self) -> int:
        return self.n_factors + (1 if self.biases else 0)


@dataclass(frozen=True)
class Truth:
    """The parameters the stream was drawn from (user rows in ``user_ids`` order).

    Factors follow the model's layout: x_i = [u_i, b_i], w_j = [v_j, c_j]
    (without the bias column when ``biases`` is False).
    """

    user_ids: np.ndarray  # (U,) str
    video_ids: np.ndarray  # (J,) str
    U: np.ndarray  # (U, K)
    V: np.ndarray  # (J, K)
    user_bias: np.ndarray  # (U,)  zeros without biases
    video_bias: np.ndarray  # (J,)
    popularity: np.ndarray  # (J,) the Zipf choice probabilities
    b0: float
    sigma: float
    mu_u: np.ndarray  # (D,)
    s_u: np.ndarray  # (D,)
    mu_v: np.ndarray  # (D,)
    s_v: np.ndarray  # (D,)
    biases: bool
    choice_strength: float = 0.0
    """The SimConfig setting the choices were drawn with (see :meth:`choice_probabilities`)."""
    affinity_sd: float = 1.0
    """sd(u_i . v_j) over all pairs, the scale the choice strength is relative to."""

    def choice_probabilities(self, users: np.ndarray) -> np.ndarray:
        """(len(users), J) the true probabilities of the next video each of
        ``users`` (row indices) starts, before excluding what they watched:
        popularity_j x exp(strength x u_i . v_j / affinity_sd), normalised."""
        logits = (
            np.log(self.popularity)[None, :]
            + self.choice_strength * (self.U[users] @ self.V.T) / self.affinity_sd
        )
        logits -= logits.max(axis=1, keepdims=True)
        w = np.exp(logits)
        return w / w.sum(axis=1, keepdims=True)

    def user_factors(self) -> np.ndarray:
        """(U, D) true x_i."""
        return np.column_stack([self.U, self.user_bias]) if self.biases else self.U.copy()

    def video_factors(self) -> np.ndarray:
        """(J, D) true w_j."""
        return np.column_stack([self.V, self.video_bias]) if self.biases else self.V.copy()

    def mean(self, users: np.ndarray, videos: np.ndarray) -> np.ndarray:
        """b0 + b_i + c_j + u_i . v_j for row indices ``users``, ``videos``."""
        return (
            self.b0
            + self.user_bias[users]
            + self.video_bias[videos]
            + (self.U[users] * self.V[videos]).sum(-1)
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything as numpy arrays (for ``np.savez``)."""
        return {k: np.asarray(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Simulation:
    """The events (in timestamp order) and the truth behind them."""

    user_ids: np.ndarray  # (N,) str
    video_ids: np.ndarray  # (N,) str
    values: np.ndarray  # (N,) minutes watched, >= 0
    timestamps: np.ndarray  # (N,) seconds
    user_rows: np.ndarray  # (N,) row of the event's user in truth.user_ids
    video_rows: np.ndarray  # (N,) row of the event's video in truth.video_ids
    log_value: np.ndarray  # (N,) r_ij before clipping (log1p scale)
    truth: Truth

    def __len__(self) -> int:
        return len(self.values)

    def density(self) -> float:
        """Observed fraction of the user x video matrix (distinct pairs)."""
        pairs = len(set(zip(self.user_rows.tolist(), self.video_rows.tolist(), strict=True)))
        return pairs / (len(self.truth.user_ids) * len(self.truth.video_ids))


PRESETS: dict[str, dict[str, int | float]] = {
    "churn60": {"days": 60, "users_per_day": 1000, "n_factors": 6, "sigma": 0.8},
}
"""Documented regimes (SimConfig overrides; ``hpmf simulate --preset NAME``).
``churn60``: the regime the taste targets are judged on (docs/evaluation.md):
565 videos with Zipf popularity, 1,000 new users a day for 60 days who mostly
churn after one session, 6 true taste dimensions, noise sd 0.8 on the log1p
scale; ~143k events, 0.42% dense."""


def _draw_truth(cfg: SimConfig, n_users: int, rng: np.random.Generator) -> Truth:
    k, d = cfg.n_factors, cfg.dim
    mu_f = rng.normal(0.0, cfg.mu_u_scale, size=k)
    U = mu_f + cfg.user_scale * rng.standard_normal((n_users, k))
    V = cfg.video_scale * rng.standard_normal((cfg.n_videos, k))
    if cfg.biases:
        ub = cfg.user_bias_scale * rng.standard_normal(n_users)
        vb = cfg.video_bias_scale * rng.standard_normal(cfg.n_videos)
    else:
        ub, vb = np.zeros(n_users), np.zeros(cfg.n_videos)
    rank = rng.permutation(cfg.n_videos) + 1.0
    pop = rank ** (-cfg.zipf_exponent)
    pop /= pop.sum()
    mu_u = np.concatenate([mu_f, [0.0]]) if cfg.biases else mu_f
    s_u = np.full(d, cfg.user_scale)
    s_v = np.full(d, cfg.video_scale)
    if cfg.biases:
        s_u[-1], s_v[-1] = cfg.user_bias_scale, cfg.video_bias_scale
    # sd of u.v over all pairs: sum_k E[u_k^2] Var[v_k] with v ~ N(0, video_scale^2)
    aff_sd = (
        float(np.sqrt(np.sum(np.mean(np.square(U), axis=0)) * cfg.video_scale**2)) if k else 1.0
    )
    return Truth(
        user_ids=np.array([f"u{i:07d}" for i in range(n_users)]),
        video_ids=np.array([f"v{j:04d}" for j in range(cfg.n_videos)]),
        U=U,
        V=V,
        user_bias=ub,
        video_bias=vb,
        popularity=pop,
        b0=cfg.b0,
        sigma=cfg.sigma,
        mu_u=mu_u,
        s_u=s_u,
        mu_v=np.zeros(d),
        s_v=s_v,
        biases=cfg.biases,
        choice_strength=cfg.choice_strength,
        affinity_sd=max(aff_sd, 1e-12),
    )


def simulate(cfg: SimConfig | None = None) -> Simulation:
    """Draw a stream (deterministic given ``cfg.seed``)."""
    cfg = cfg or SimConfig()
    rng = np.random.default_rng(cfg.seed)
    n_users = cfg.days * cfg.users_per_day
    truth = _draw_truth(cfg, n_users, rng)
    heavy = rng.random(n_users) < cfg.heavy_fraction
    mean_views = np.where(heavy, cfg.heavy_mean_views, cfg.light_mean_views)
    n_views = np.minimum(rng.geometric(1.0 / mean_views), cfg.n_videos)
    arrive = (np.repeat(np.arange(cfg.days), cfg.users_per_day) + rng.random(n_users)) * DAY
    gap = np.where(heavy, cfg.heavy_gap_s, cfg.light_gap_s)
    ev_user, ev_video, ev_time = [], [], []
    for i in range(n_users):
        n = int(n_views[i])
        if cfg.choice_strength > 0:  # taste drives what is started
            p = truth.choice_probabilities(np.array([i]))[0]
        else:
            p = truth.popularity
        vids = rng.choice(cfg.n_videos, size=n, replace=False, p=p)
        times = arrive[i] + np.concatenate([[0.0], np.cumsum(rng.exponential(gap[i], n - 1))])
        ev_user.append(np.full(n, i))
        ev_video.append(vids)
        ev_time.append(times)
    users = np.concatenate(ev_user)
    videos = np.concatenate(ev_video)
    times = np.concatenate(ev_time)
    keep = times < cfg.days * DAY
    users, videos, times = users[keep], videos[keep], times[keep]
    order = np.argsort(times, kind="stable")
    users, videos, times = users[order], videos[order], times[order]
    r = truth.mean(users, videos) + cfg.sigma * rng.standard_normal(len(users))
    minutes = np.maximum(np.expm1(r), 0.0)
    return Simulation(
        user_ids=truth.user_ids[users],
        video_ids=truth.video_ids[videos],
        values=minutes,
        timestamps=EPOCH + times,
        user_rows=users,
        video_rows=videos,
        log_value=r,
        truth=truth,
    )
