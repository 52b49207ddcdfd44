"""The choice component's closed-form user step and the feature moments it and
the video step share (:mod:`model.choice` has the derivation).

q(a_i) = N(Lambda_i^-1 h_i, Lambda_i^-1) from the user's started videos and the
catalogue's Gram matrix; users are stored padded to [a_i, 0], the layout
:mod:`streamer.reader.lookup_math` serves.
"""

from __future__ import annotations

import numpy as np


def user_step(
    q_mean: np.ndarray,
    q_cov: np.ndarray,
    confidence: np.ndarray,
    gram: np.ndarray,
    prior_mean: np.ndarray,
    prior_var: np.ndarray,
    w0: float,
) -> tuple[np.ndarray, np.ndarray]:
    """q(a_i) = N(mean, cov) in closed form (see the module docstring).

    ``q_mean`` (n, K+1), ``q_cov`` (n, K+1, K+1): the user's started videos;
    ``confidence`` (n,): their c_ij; ``gram`` (K+1, K+1): sum_j E[q_j q_j^T]
    over the whole catalogue. Returns (K,) mean and (K, K) cov.

    With nothing started the negatives alone pull a towards scores of 0:

    >>> g = np.array([[2.0, 1.0], [1.0, 3.0]])
    >>> m, c = user_step(np.zeros((0, 2)), np.zeros((0, 2, 2)), np.zeros(0), g,
    ...                  np.zeros(1), np.ones(1), 1.0)
    >>> m.tolist(), c.tolist()   # Lambda = 1 + 2 = 3, h = -1
    ([-0.3333333333333333], [[0.3333333333333333]])
    """
    k = gram.shape[0] - 1
    eqq = q_cov + q_mean[:, :, None] * q_mean[:, None, :]
    extra = confidence - w0
    prec = (
        np.diag(1.0 / prior_var) + w0 * gram[:k, :k] + np.einsum("n,nab->ab", extra, eqq[:, :k, :k])
    )
    shift = (
        prior_mean / prior_var
        - w0 * gram[k, :k]
        + confidence @ q_mean[:, :k]
        - extra @ eqq[:, k, :k]
    )
    cov = np.linalg.inv(prec)
    cov = 0.5 * (cov + cov.T)
    return cov @ shift, cov


def pad_user(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[a, 0] and its covariance with a zero last row/column (the served layout)."""
    k = mean.shape[0]
    m = np.zeros(k + 1)
    m[:k] = mean
    c = np.zeros((k + 1, k + 1))
    c[:k, :k] = cov
    return m, c


def feature_second_moment(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[y] and E[y y^T] of y = [a, 1] for padded (..., K+1) posteriors."""
    ey = mean.copy()
    ey[..., -1] = 1.0
    return ey, cov + ey[..., :, None] * ey[..., None, :]


def session_means(
    video_z: np.ndarray, rows: list[list[int]], means: np.ndarray, weight: float
) -> np.ndarray:
    """Padded user means [E[a_i], 0] plus the session term weight x (mean z_k over
    ``rows[i]``, the user's latest started videos' rows in ``video_z``), so the
    score of video j is E[a_i] . z_j + e_j + gamma x mean_k z_k . z_j: taste plus
    what is near the videos just started (next-item choices follow the session).

    >>> z = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> session_means(z, [[0, 1], []], np.zeros((2, 3)), 2.0).tolist()
    [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]
    """
    out = np.array(means, dtype=np.float64, copy=True)
    if weight == 0:
        return out
    k = video_z.shape[1]
    for u, r in enumerate(rows):
        if r:
            out[u, :k] += weight * video_z[r].mean(0)
    return out
