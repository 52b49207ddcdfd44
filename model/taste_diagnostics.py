"""How much taste a fitted model carries: diagnostics on its video factors.

* :func:`taste_share`: for a user drawn from the pooled prior, how much of the
  spread of predictions across videos comes from the taste term u . v_j rather
  than the video bias c_j:

      taste = E_u[Var_j(u . m_j)] = mu^T C mu + tr(S C),   C = Cov_j(m_j) (taste dims)
      share = taste / (taste + Var_j(c_j))

  0 means every video sits at one shared taste vector (the model is a bias
  model whatever its machinery), which is what the model served before replay.
* :func:`subspace_cosines`: on a simulated stream, the cosines of the principal
  angles between the learned and the true video taste factors (1: the learned
  factors span the true taste space; 0: orthogonal to it).

>>> rng = np.random.default_rng(0)
>>> m = np.column_stack([rng.normal(size=(50, 2)), rng.normal(size=50)])
>>> 0.4 < taste_share(m, np.zeros(3), np.eye(3)) < 0.8
True
>>> taste_share(np.column_stack([np.ones((50, 2)), rng.normal(size=50)]), np.zeros(3), np.eye(3))
0.0
>>> [round(c, 6) for c in subspace_cosines(m[:, :2] @ np.array([[1.0, 2.0], [0.0, 1.0]]), m[:, :2])]
[1.0, 1.0]
"""

from __future__ import annotations

import numpy as np


def taste_share(
    video_mean: np.ndarray, user_prior_mean: np.ndarray, user_prior_cov: np.ndarray
) -> float:
    """Share of the across-video prediction variance that comes from taste
    (see module docstring); factors laid out [taste..., bias]."""
    vm = np.asarray(video_mean, dtype=np.float64)
    if vm.shape[0] < 2 or vm.shape[1] < 2:
        return 0.0
    k = vm.shape[1] - 1
    cov = np.atleast_2d(np.cov(vm[:, :k], rowvar=False))
    mu = np.asarray(user_prior_mean, dtype=np.float64)[:k]
    s = np.asarray(user_prior_cov, dtype=np.float64)[:k, :k]
    taste = float(mu @ cov @ mu + np.trace(s @ cov))
    bias = float(np.var(vm[:, k], ddof=1))
    total = taste + bias
    return max(taste, 0.0) / total if total > 0 else 0.0


def subspace_cosines(learned: np.ndarray, true: np.ndarray) -> list[float]:
    """Cosines of the principal angles between the column spaces of ``learned``
    (J, K1) and ``true`` (J, K2), the same videos in the same row order, largest first."""
    qa, _ = np.linalg.qr(np.asarray(learned, dtype=np.float64) - np.mean(learned, axis=0))
    qb, _ = np.linalg.qr(np.asarray(true, dtype=np.float64) - np.mean(true, axis=0))
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)
    return [float(min(c, 1.0)) for c in s[: min(qa.shape[1], qb.shape[1])]]
