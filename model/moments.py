"""Expected features of a Gaussian factor, the building block of both exact steps.

A user factor x = [u, b] (taste u, bias b) meets a video through the feature
y = [u, 1] and the offset b, so that the mean rating is

    b0 + u.v + b + c = b0 + y(x) . w  + ...   (symmetrically for the video w = [v, c]).

Under q(x) = N(m, S) the conjugate updates need E[y], E[y y^T], E[y b] and E[b].
Without biases the feature is the factor itself and the offset is zero.
"""

from __future__ import annotations

import functools

import torch


def feature_mean(mean: torch.Tensor, biases: bool) -> torch.Tensor:
    """E[y]: the factor's mean with the bias slot replaced by 1 (y = [u, 1]);
    without biases the factor itself.

    >>> feature_mean(torch.tensor([[0.5, 2.0]]), biases=True).tolist()
    [[0.5, 1.0]]
    """
    if not biases or mean.shape[-1] == 0:
        return mean
    ey = mean.clone()
    ey[..., -1] = 1.0
    return ey


def feature_moments(
    mean: torch.Tensor, cov: torch.Tensor, biases: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moments of the feature/offset split of Gaussian factors.

    Args:
        mean: (N, D) posterior means.
        cov: (N, D, D) posterior covariances.
        biases: whether the last coordinate is a bias.

    Returns:
        Ey (N, D), Eyy (N, D, D), Eyb (N, D), Eb (N,).

    >>> m = torch.tensor([[1.0, 2.0]]); S = torch.eye(2)[None] * 0.5
    >>> Ey, Eyy, Eyb, Eb = feature_moments(m, S, biases=True)
    >>> Ey.tolist(), Eyy.tolist(), Eyb.tolist(), Eb.tolist()
    ([[1.0, 1.0]], [[[1.5, 1.0], [1.0, 1.0]]], [[2.0, 2.0]], [2.0])
    """
    if not biases:
        eyy = cov + mean.unsqueeze(-1) * mean.unsqueeze(-2)
        zeros = torch.zeros_like(mean)
        return (
            mean,
            eyy,
            zeros,
            zeros[..., 0] if mean.shape[-1] else mean.new_zeros(mean.shape[:-1]),
        )
    k = mean.shape[-1] - 1
    # y = [u, 1]: its covariance is cov with the bias row and column zeroed
    # (a mask, not clone-and-assign: this runs on every batch's posteriors).
    latent, latent_outer = _latent_masks(k + 1, mean.dtype)
    ey = feature_mean(mean, biases)
    eyy = cov * latent_outer + ey.unsqueeze(-1) * ey.unsqueeze(-2)
    eb = mean[..., k]
    eyb = ey * eb.unsqueeze(-1) + cov[..., :, k] * latent
    return ey, eyy, eyb, eb


@functools.lru_cache(maxsize=16)
def _latent_masks(dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """1 on the taste dims, 0 on the bias slot, and its outer product (built
    once per shape: feature_moments runs several times per batch; shared, do
    not modify in place)."""
    latent = torch.ones(dim, dtype=dtype)
    latent[dim - 1] = 0.0
    return latent, latent.unsqueeze(-1) * latent


def gaussian_posterior(
    prior_precision: torch.Tensor,
    prior_shift: torch.Tensor,
    data_precision: torch.Tensor,
    data_shift: torch.Tensor,
    tril: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """N(mean, cov) from natural parameters: precision P = P0 + Pd, shift h = h0 + hd.

    Returns mean (N, D), cov (N, D, D) and the Cholesky factor of cov (N, D, D),
    all batched; the factor is None unless ``tril`` (it costs a third
    factorisation that the online steps do not need).

    >>> P0 = torch.eye(1)[None]; h0 = torch.zeros(1, 1)
    >>> m, c, _ = gaussian_posterior(P0, h0, 3 * torch.eye(1)[None], torch.tensor([[2.0]]))
    >>> m.item(), c.item()
    (0.5, 0.25)
    """
    precision = prior_precision + data_precision
    shift = prior_shift + data_shift
    d = precision.shape[-1]
    if d == 0:
        empty = precision.new_zeros(precision.shape)
        return shift, empty, empty if tril else None
    # Symmetrised in place (the same arithmetic as 0.5 * (P + P^T), one
    # temporary less on the (N, 11, 11) batches of every step).
    precision = (precision + precision.transpose(-1, -2)).mul_(0.5)
    chol_p, info = torch.linalg.cholesky_ex(precision)
    if bool(info.any()):
        # Withdrawn evidence can leave a data part a hair below positive
        # semi-definite (decay clocks of workers and learner differ slightly):
        # clip its negative eigenvalues, never the prior.
        vals, vecs = torch.linalg.eigh(data_precision)
        data_precision = vecs @ torch.diag_embed(vals.clamp(min=0.0)) @ vecs.transpose(-1, -2)
        precision = prior_precision + data_precision
        precision = 0.5 * (precision + precision.transpose(-1, -2))
        chol_p = torch.linalg.cholesky(precision)
    # cov = L^-T L^-1 from one batched triangular solve, mean = cov h: on the
    # (N, 11, 11) batches of the online steps this is ~40% cheaper than
    # cholesky_inverse plus cholesky_solve (LAPACK calls per matrix), and the
    # same to rounding (1e-16).
    eye = _eye(d, precision.dtype)
    linv = torch.linalg.solve_triangular(chol_p, eye, upper=False)
    cov = linv.transpose(-1, -2) @ linv
    cov = (cov + cov.transpose(-1, -2)).mul_(0.5)
    mean = (cov @ shift.unsqueeze(-1)).squeeze(-1)
    return mean, cov, torch.linalg.cholesky(cov) if tril else None


@functools.lru_cache(maxsize=16)
def _eye(dim: int, dtype: torch.dtype) -> torch.Tensor:
    """The identity (shared: do not modify in place)."""
    return torch.eye(dim, dtype=dtype)
