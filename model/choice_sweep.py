"""The choice learner's sweep: one implicit-ALS iteration over the replay window
(:mod:`model.choice` has the symbols). Every window user's posterior is refitted
from their window history against the current videos, then every video from
the window's decayed evidence, with the Gram-matrix trick on both sides; the
pooled user prior is re-estimated from the window's users."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from model.choice_user_step import feature_second_moment

if TYPE_CHECKING:
    from model.choice import ChoiceModel


def residual_noise_var(
    model: ChoiceModel, means: np.ndarray, owner: np.ndarray, rows: np.ndarray, ages: np.ndarray
) -> float:
    """The pseudo-likelihood's noise variance by maximum likelihood, plugging in
    the posterior means: sigma^2 = sum_ij c_ij (p_ij - s_ij)^2 / (users x videos)
    over the users ``means`` (padded, (U, K+1)) and every video of the catalogue,
    each user's started videos given as (``owner``, ``rows``, ``ages``). The sum
    over all videos is the Gram trick again, w0 y_i^T (sum_j m_j m_j^T) y_i,
    plus each started video's correction c (1 - s)^2 - w0 s^2.

    Implicit ALS fixes sigma^2 = 1 (only its MAP is used there); a posterior
    needs it estimated (:attr:`ChoiceModel.noise_var`).
    """
    cfg = model.config
    w0, a, f = cfg.negative_weight, cfg.positive_weight, cfg.user_forgetting
    vm = model.video_mean()
    y = means.copy()
    y[:, -1] = 1.0  # the feature [a_i, 1]
    total = w0 * float(np.einsum("ud,de,ue->", y, vm.T @ vm, y))
    s = np.einsum("nd,nd->n", y[owner], vm[rows])
    conf = w0 + a * f**ages
    total += float((conf * (1.0 - s) ** 2 - w0 * s**2).sum())
    return max(total / (means.shape[0] * vm.shape[0]), 1e-6)


def sweep_window(model: ChoiceModel) -> None:
    """One ALS iteration over the window: every window user's posterior from
    their window history against the current videos, then every video."""
    cfg = model.config
    uids = list(model._users)
    uindex = {u: k for k, u in enumerate(uids)}
    pu = np.fromiter((uindex[u] for u, _ in model._pairs), dtype=np.int64, count=len(model._pairs))
    pr = np.fromiter((r for _, r in model._pairs), dtype=np.int64, count=len(model._pairs))
    if cfg.own_user_factors and pu.size:
        # Every window user's started videos, oldest first (the window is
        # in clock order; a stable sort by user keeps it), the latest
        # history_size of each: no Python loop over the pairs' ids.
        order = np.argsort(pu, kind="stable")
        owner, rows = pu[order], pr[order]
        counts = np.bincount(owner, minlength=len(uids))
        from_end = np.cumsum(counts)[owner] - 1 - np.arange(owner.shape[0])
        keep = from_end < cfg.history_size
        owner, rows = owner[keep], rows[keep]
        lens = np.bincount(owner, minlength=len(uids))
        present = np.flatnonzero(lens)
        um, uc = model._posteriors_of_rows(rows, lens[present])
        for k, u in enumerate(present.tolist()):
            uid = uids[u]
            model._users[uid] = (um[k], uc[k], model._users[uid][2])
        if cfg.noise_from_residuals and present.size and model.n_videos:
            ages = from_end[keep].astype(np.float64)
            model.noise_var = residual_noise_var(
                model, um, np.searchsorted(present, owner), rows, ages
            )
    means = np.stack([model._users[u][0] for u in uids])
    covs = np.stack([model._users[u][1] for u in uids])
    last = np.array([model._users[u][2] for u in uids], dtype=np.float64)
    ey, eyy = feature_second_moment(means, covs)
    d_user = np.exp(-(model.clock - last) / cfg.effective_data_size)
    model._gu = np.einsum("u,uab->ab", d_user, eyy)
    model._gu_weight = dict(zip(uids, d_user.tolist(), strict=True))
    n = model.n_videos
    pt = np.fromiter(model._pairs.values(), dtype=np.float64, count=len(model._pairs))
    w0, a = cfg.negative_weight, cfg.positive_weight
    c = (w0 + a) * np.exp(-(model.clock - pt) / cfg.effective_data_size)
    extra = np.maximum(c - w0 * d_user[pu], 0.0)
    # Sum each pair's term into its video: pairs sorted by video, then
    # segment sums in blocks (O(pairs x d^2); a dense videos x users
    # weight matrix costs O(videos x users x d^2) and dominated the sweep).
    d = cfg.dim
    eyy_flat = eyy.reshape(len(uids), d * d)
    prec = np.zeros((n, d * d))
    shift = np.zeros((n, d))
    order = np.argsort(pr, kind="stable")
    pr_s, pu_s, extra_s, c_s = pr[order], pu[order], extra[order], c[order]
    for lo in range(0, pr_s.shape[0], 8192):
        rows_b = pr_s[lo : lo + 8192]
        starts = np.flatnonzero(np.r_[True, rows_b[1:] != rows_b[:-1]])
        ub = pu_s[lo : lo + 8192]
        rows_u = rows_b[starts]  # distinct within the block: += is exact
        prec[rows_u] += np.add.reduceat(
            extra_s[lo : lo + 8192, None] * eyy_flat[ub], starts, axis=0
        )
        shift[rows_u] += np.add.reduceat(c_s[lo : lo + 8192, None] * ey[ub], starts, axis=0)
    model._prec[:n] = prec.reshape(n, d, d)
    model._shift[:n] = shift
    if cfg.pooled:
        k = cfg.n_factors
        w = d_user / d_user.sum()
        mu = w @ means[:, :k]
        var = w @ (np.square(means[:, :k] - mu) + np.diagonal(covs, axis1=1, axis2=2)[:, :k])
        # The scale is not identified (a.z is unchanged by a -> ca, z -> z/c),
        # and empirical Bayes on it alone collapses to 0 (measured): the
        # pooled prior learns the population mean, and its variance may grow
        # above the configured prior_scale^2 but not shrink below it.
        model.prior_mean = mu
        model.prior_var = np.maximum(var, cfg.prior_scale**2)
        e = model._mean[:n, -1]
        model.video_prior_mean = np.zeros(d)
        model.video_prior_mean[-1] = float(e.mean()) if n else 0.0
    model.gram = np.zeros((d, d))
    model._mean[:n] = 0.0
    model._cov[:n] = 0.0
    model._refresh(np.arange(n))
