"""The Bayes-oracle rung: what the best possible online model scores on a simulated stream.

It knows everything the simulator drew except the users: the true video
factors w_j = [v_j, c_j], the population prior N(mu_u, diag(s_u)^2) of
x_i = [u_i, b_i], the noise sigma and b0. It learns each user online by the
exact conjugate update, so its predictive error is the floor that an online
model of users can reach when the videos and the prior are perfectly learned:

    P_i = diag(s_u)^-2 + sigma^-2 sum_j y_j y_j^T,      y_j = [v_j, 1]
    h_i = diag(s_u)^-2 mu_u + sigma^-2 sum_j (r_ij - b0 - c_j) y_j
    predict r_ij:  mean b0 + c_j + y_j . P_i^-1 h_i,   var sigma^2 + y_j^T P_i^-1 y_j

Prequential, in minibatches like :func:`model.evaluate.run_stream`: a
minibatch is predicted with the users' posteriors from before it, then learned.
A video the truth does not know is predicted at the prior (its factor 0).

>>> t = {"video_ids": np.array(["a", "b"]), "V": np.array([[1.0], [-1.0]]), "video_bias": np.zeros(2),
...      "mu_u": np.zeros(2), "s_u": np.ones(2), "b0": 0.0, "sigma": 0.1, "biases": True}
>>> res = oracle_stream(["x"] * 4, ["a", "b", "a", "b"], np.array([1.0, -1.0, 1.0, -1.0]), t)
>>> [abs(round(float(m), 2)) for m in res.mean]  # taste and bias are told apart after two videos
[0.0, 0.0, 1.0, 1.0]
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model.evaluate import StreamResult, earlier_events


def oracle_stream(
    user_ids: Sequence[str],
    video_ids: Sequence[str],
    targets: np.ndarray,
    truth: Mapping[str, Any],
    batch_size: int = 1,
) -> StreamResult:
    """Score ``targets`` (already on the truth's scale, e.g. log1p minutes)
    prequentially with the oracle; ``truth`` as saved by ``hpmf simulate``
    (``SIM.truth.npz``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    biases = bool(np.asarray(truth["biases"]))
    V = np.asarray(truth["V"], dtype=np.float64)
    k = V.shape[1]
    d = k + (1 if biases else 0)
    feats = np.column_stack([V, np.ones(len(V))]) if biases else V
    offset = np.asarray(truth["video_bias"], dtype=np.float64) if biases else np.zeros(len(V))
    row = {str(v): j for j, v in enumerate(np.asarray(truth["video_ids"]).tolist())}
    b0 = float(np.asarray(truth["b0"]))
    noise_var = float(np.asarray(truth["sigma"])) ** 2
    s_u = np.asarray(truth["s_u"], dtype=np.float64)
    mu_u = np.asarray(truth["mu_u"], dtype=np.float64)
    prior_prec = np.diag(s_u**-2)
    prior_shift = s_u**-2 * mu_u
    prior_mean = mu_u.copy()
    prior_cov = np.diag(s_u**2)
    unknown_feat = np.zeros(d)
    if biases:
        unknown_feat[-1] = 1.0
    targets = np.asarray(targets, dtype=np.float64)
    n = len(targets)
    prec: dict[str, np.ndarray] = {}
    shift: dict[str, np.ndarray] = {}
    post: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    mean = np.empty(n)
    std = np.empty(n)
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        for e in range(start, stop):
            j = row.get(str(video_ids[e]))
            y = feats[j] if j is not None else unknown_feat
            c = offset[j] if j is not None else 0.0
            m, cov = post.get(user_ids[e], (prior_mean, prior_cov))
            mean[e] = b0 + c + y @ m
            std[e] = np.sqrt(noise_var + y @ cov @ y)
        touched = set()
        for e in range(start, stop):
            u = user_ids[e]
            j = row.get(str(video_ids[e]))
            y = feats[j] if j is not None else unknown_feat
            c = offset[j] if j is not None else 0.0
            p = prec.get(u)
            if p is None:
                p, h = prior_prec.copy(), prior_shift.copy()
            else:
                h = shift[u]
            prec[u] = p + np.outer(y, y) / noise_var
            shift[u] = h + (targets[e] - b0 - c) * y / noise_var
            touched.add(u)
        for u in touched:
            cov = np.linalg.inv(prec[u])
            post[u] = (cov @ shift[u], cov)
    seconds = time.perf_counter() - t0
    return StreamResult(
        index=np.arange(n),
        target=targets,
        mean=mean,
        std=std,
        n_prior=earlier_events(list(user_ids)),
        n_events=n,
        seconds=seconds,
    )
