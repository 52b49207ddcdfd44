"""The SVI step's gradient without Pyro: the same draws, the same ops, the same order.

``pyro.infer.Trace_ELBO().differentiable_loss(hpmf_model, hpmf_guide, ...)``
spends most of an SVI step on bookkeeping (poutine messengers, traces, site
dicts, distribution objects, the guide's multivariate log-densities that
carry no gradient): ~7 ms a step against well under 1 ms of arithmetic on a
few hundred events. :func:`svi_surrogate` writes out what it computes, op
for op, for one particle:

* the guide runs first: q(mu_u)'s draw, then the closed-form factors' draws
  (``MultivariateNormal.rsample``: loc + scale_tril @ eps), on the same
  generator, with the same shapes, in the same order;
* the model is replayed on those values: Pyro builds every site's
  distribution (broadcasting its parameters, expanding them to the plate as
  ``BroadcastMessenger`` does) before ``Trace.compute_log_prob`` computes any
  log-density, and autograd accumulates a tensor's gradients in the order its
  uses were created, so the same order is kept here;
* each plate site is scaled and masked (``scale_and_mask``), summed, and the
  sums chained in ``_differentiable_loss_particle``'s order.

The gradients of the hyper-parameters are then bit-identical to
``Trace_ELBO``'s (tests/test_model_svi_surrogate.py, ``torch.equal`` over
the configurations). b0 (set as a running mean, never stepped) gets no
gradient. What is left out are the terms with no gradient (the
guide's Delta sites, the log-densities of q(w_j) and q(x_i), which depend
on the data only), so the *value* is not the ELBO: use it for ``backward``.
"""

from __future__ import annotations

import functools
import math

import torch

from model.config import HPMFConfig
from model.hpmf_model import Hypers, SVIData, mean_mask, predicted_mean

F64 = torch.float64
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def _normal_lp(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """torch.distributions.Normal(loc, scale).log_prob(value), tensor parameters."""
    var = scale**2
    return -((value - loc) ** 2) / (2 * var) - scale.log() - _LOG_SQRT_2PI


def _lognormal_lp(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """LogNormal(loc, scale).log_prob: the ExpTransform's Jacobian, then the base Normal's."""
    x = value.log()
    return (0.0 - x) + _normal_lp(x, loc, scale)


def _draw(shape: tuple[int, ...]) -> torch.Tensor:
    """torch.distributions.utils._standard_normal on the default generator."""
    return torch.empty(shape, dtype=F64).normal_()


def _mv(tril: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """torch.distributions.multivariate_normal._batch_mv."""
    return torch.matmul(tril, eps.unsqueeze(-1)).squeeze(-1)


@functools.lru_cache(maxsize=64)
def _scalar(value: float) -> torch.Tensor:
    """A 0-d float64 constant (shared: do not modify in place)."""
    return torch.tensor(value, dtype=F64)


def svi_surrogate(data: SVIData, cfg: HPMFConfig, hp: Hypers) -> torch.Tensor:
    """The negative surrogate ELBO of :func:`model.hpmf_model.hpmf_model` and its
    guide on ``data`` (unpadded), for ``backward``: the gradients Trace_ELBO's
    ``differentiable_loss`` gives on the same generator state, bit for bit."""
    d = cfg.dim
    # The guide (Trace_ELBO runs it first): its draws, in its order.
    # Delta sites: the value is the parameter. b0 is not learned by SVI (a
    # running mean sets it), so its gradient is not computed: the backward
    # skips the events' mean branch; every learned leaf's gradient is the same.
    b0 = hp.b0.detach()
    sigma = hp.log_sigma.exp()
    if cfg.user_pooling:
        mu_u_scale = hp.mu_u_log_scale.exp()
        mu_u_value = hp.mu_u_loc + _draw((d,)) * mu_u_scale
        s_u = hp.log_s_u.exp()
    if cfg.video_pooling:
        mu_v_value = hp.mu_v
        s_v = hp.log_s_v.exp()
    n_videos, n_users, n_events = len(data.video_mean), len(data.user_mean), len(data.target)
    if d > 0:
        # MultivariateNormal.rsample: loc + scale_tril @ eps.
        w = data.video_mean + _mv(data.video_tril, _draw((n_videos, d)))
        x = data.user_mean + _mv(data.user_tril, _draw((n_users, d)))
    fixed_scale = Hypers.initial_scales(cfg)
    zeros = torch.zeros(d, dtype=F64)
    ones = torch.ones(d, dtype=F64)
    hyper_sd = torch.full((d,), cfg.scale_hyperprior_sd, dtype=F64)
    # The model's run (Pyro builds every site's distribution before any log-density):
    if cfg.user_pooling:
        mu_u = mu_u_value * mean_mask(cfg)
    else:
        mu_u, s_u = zeros, fixed_scale
    if cfg.video_pooling:
        mu_v = mu_v_value * mean_mask(cfg)
    else:
        mu_v, s_v = zeros, fixed_scale
    if d == 0:
        mean = b0.expand(n_events)
    else:
        w_loc, w_scale = mu_v.expand(n_videos, d), s_v.expand(n_videos, d)
        x_loc, x_scale = mu_u.expand(n_users, d), s_u.expand(n_users, d)
        mean = b0 + predicted_mean(x[data.event_user], w[data.event_video], cfg.biases)
    r_scale = sigma.expand(n_events)
    # Then the log-densities, site by site:
    sums = [
        _normal_lp(b0, _scalar(cfg.global_mean_prior), _scalar(10.0)).sum(),
        _lognormal_lp(sigma, _scalar(0.0), _scalar(1.5)).sum(),
    ]
    if cfg.user_pooling:
        sums.append(_normal_lp(mu_u_value, zeros, ones).sum(-1).sum())
        sums.append(_lognormal_lp(s_u, fixed_scale.log(), hyper_sd).sum(-1).sum())
    if cfg.video_pooling:
        sums.append(_normal_lp(mu_v_value, zeros, ones).sum(-1).sum())
        sums.append(_lognormal_lp(s_v, fixed_scale.log(), hyper_sd).sum(-1).sum())
    sc = data.scales
    if d > 0:
        lw = _normal_lp(w, w_loc, w_scale).sum(-1)
        sums.append(torch.where(data.video_mask, lw * sc[0], lw.new_zeros(())).sum())
        lx = _normal_lp(x, x_loc, x_scale).sum(-1)
        sums.append(torch.where(data.user_mask, lx * sc[1], lx.new_zeros(())).sum())
    lr = _normal_lp(data.target, mean, r_scale)
    sums.append(torch.where(data.event_mask, lr * sc[2], lr.new_zeros(())).sum())
    # The guide's only term with a gradient: q(mu_u)'s log-density (its entropy term).
    guide_lp = None
    if cfg.user_pooling:
        guide_lp = _normal_lp(mu_u_value, hp.mu_u_loc, mu_u_scale).sum(-1)
    # _differentiable_loss_particle's sums, in its order.
    surrogate = 0
    for s in sums:
        surrogate = surrogate + s
    if guide_lp is not None:
        surrogate = surrogate - guide_lp.sum()
    return -surrogate
