"""The noise variance, estimated from the errors of what was served.

Mean-field VB, and the SVI step that climbs its ELBO, sets sigma^2 to the mean
of E_q[(y - x.w)^2] over events the posteriors already include: a fit's
residuals *plus* the posterior variance of x.w. The predictive variance then
adds that posterior variance a second time, so the intervals come out too wide
(MovieLens 100K at minibatch 1, before this: the predictive sd was ~1.18 x the
RMSE in every history bin, coverage90 0.944 for a 90% interval).

Here sigma^2 comes from what the service served instead. Each event is
predicted from its user's state *before* the event (mean m, and v = the
predictive variance less the noise: the part from the posteriors), and by the
method of moments

    sigma^2 = E[(y - m)^2] - E[v]

over the recent events (each weighted exp(-age / horizon), age in events), so
that the predictive variance sigma^2 + v matches the squared error of the
served mean on average. If the posteriors' variances are honest,
E[(y - m)^2] = sigma_true^2 + E[v] and this is consistent for sigma_true^2.

>>> cal = NoiseCalibration(horizon=1000.0, min_events=3)
>>> cal.noise_var() is None
True
>>> cal.add(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.5, 0.5]))
>>> round(cal.noise_var(), 6)  # (1 + 2 + 3) / 3 - 0.5
1.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class NoiseCalibration:
    """Running, exponentially forgetting moments of the served errors."""

    horizon: float
    min_events: int = 1000
    floor: float = 1e-3
    sq_err: float = 0.0
    model_var: float = 0.0
    weight: float = 0.0

    def add(self, sq_err: np.ndarray, model_var: np.ndarray) -> None:
        """One batch's squared served errors and the served model variances."""
        n = len(sq_err)
        if n == 0:
            return
        keep = math.exp(-n / self.horizon)
        self.sq_err = keep * self.sq_err + float(np.sum(sq_err))
        self.model_var = keep * self.model_var + float(np.sum(model_var))
        self.weight = keep * self.weight + n

    def noise_var(self) -> float | None:
        """sigma^2 by the method of moments, or None before ``min_events``
        (the SVI estimate stands until then)."""
        if self.weight < min(self.min_events, self.horizon * 0.5):
            return None
        return max((self.sq_err - self.model_var) / self.weight, self.floor)

    def state(self) -> list[float]:
        return [self.sq_err, self.model_var, self.weight]

    def load(self, state: list[float]) -> None:
        self.sq_err, self.model_var, self.weight = (float(x) for x in state)


def served_noise_pairs(pairs: list[tuple[str, str]]) -> np.ndarray:
    """Indices of the (user, video) pairs whose served error feeds the noise
    estimate: each user's first pair of the minibatch.

    A user's later pairs in the same minibatch were served from the state
    before it, which does not hold the batch's earlier events, and mostly
    from the pooled prior (67% of MovieLens events at minibatch 1024): their
    errors mix the minibatch's staleness into the noise. The first pair was
    predicted exactly as at minibatch 1, where every pair is its user's first.
    MovieLens 100K, prequential RMSE at minibatch 256 / 1024: 1.0147 / 1.0391
    with every pair, 1.0078 / 1.0354 with the first (docs/evaluation.md).

    >>> served_noise_pairs([("a", "v1"), ("b", "v1"), ("a", "v2")]).tolist()
    [0, 1]
    """
    seen: set[str] = set()
    keep = []
    for k, (user, _) in enumerate(pairs):
        if user not in seen:
            seen.add(user)
            keep.append(k)
    return np.array(keep, dtype=np.int64)
