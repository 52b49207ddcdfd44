"""The SVI step's gradient without Pyro's tracing: the same draws, the same ops.

``pyro.infer.Trace_ELBO().differentiable_loss(hpmf_model, hpmf_guide, ...)``
spends most of an SVI step on bookkeeping (poutine messengers, traces, site
dicts, the guide's multivariate log-densities that carry no gradient): ~7 ms
a step against well under 1 ms of arithmetic on a few hundred events.
:func:`svi_surrogate` builds the same distributions in the same order, draws
the guide's samples with the same calls on the same generator, and sums the
same log-densities into the surrogate in the same order, so autograd runs the
same graph: the gradients of the hyper-parameters are bit-identical to
``Trace_ELBO``'s (tests/test_model_svi_surrogate.py). What it leaves out are
the terms with no gradient (the guide's Delta sites and the log-densities of
the closed-form factors q(w_j), q(x_i), which depend on the data only), so
its *value* is not the ELBO: use it for ``backward`` only.

Mirrors, for one particle: ``Trace_ELBO._get_trace`` (guide run, then the
model replayed on its samples, each plate site's distribution expanded to the
plate as ``BroadcastMessenger`` does), ``Trace.compute_log_prob`` (scaled and
masked by ``scale_and_mask``), then ``_differentiable_loss_particle``'s sums.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from model.config import HPMFConfig
from model.hpmf_model import Hypers, SVIData, mean_mask, predicted_mean

F64 = torch.float64


def _in_plate(fn: dist.TorchDistribution, size: int) -> dist.TorchDistribution:
    """What BroadcastMessenger does to a site inside a one-dimensional plate."""
    shape = list(fn.batch_shape) or [1]
    shape[-1] = size
    return fn.expand(shape)


def _scaled(lp: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """pyro.distributions.util.scale_and_mask with a tensor scale and a mask."""
    return torch.where(mask, lp * scale, lp.new_zeros(()))


def svi_surrogate(data: SVIData, cfg: HPMFConfig, hp: Hypers) -> torch.Tensor:
    """The negative surrogate ELBO of :func:`model.hpmf_model.hpmf_model` and its
    guide on ``data`` (unpadded), for ``backward``: the gradients Trace_ELBO's
    ``differentiable_loss`` gives on the same generator state, bit for bit."""
    d = cfg.dim
    # --- the guide (Trace_ELBO runs it first; its draws in this order) ---
    guide_b0 = dist.Delta(hp.b0)
    b0 = guide_b0()
    sigma = dist.Delta(hp.log_sigma.exp())()
    guide_mu_u = None
    if cfg.user_pooling:
        guide_mu_u = dist.Normal(hp.mu_u_loc, hp.mu_u_log_scale.exp()).to_event(1)
        mu_u_value = guide_mu_u()
        s_u = dist.Delta(hp.log_s_u.exp()).to_event(1)()
    if cfg.video_pooling:
        mu_v_value = dist.Delta(hp.mu_v).to_event(1)()
        s_v = dist.Delta(hp.log_s_v.exp()).to_event(1)()
    n_videos, n_users, n_events = len(data.video_mean), len(data.user_mean), len(data.target)
    if d > 0:
        w = _in_plate(
            dist.MultivariateNormal(data.video_mean, scale_tril=data.video_tril), n_videos
        )()
        x = _in_plate(dist.MultivariateNormal(data.user_mean, scale_tril=data.user_tril), n_users)()
    # --- the model, replayed on those values ---
    fixed_scale = Hypers.initial_scales(cfg)
    zeros = torch.zeros(d, dtype=F64)
    sites: list[tuple[dist.TorchDistribution, torch.Tensor, int | None]] = [
        (dist.Normal(torch.tensor(cfg.global_mean_prior, dtype=F64), 10.0), b0, None),
        (dist.LogNormal(torch.tensor(0.0, dtype=F64), 1.5), sigma, None),
    ]
    if cfg.user_pooling:
        sites.append((dist.Normal(zeros, 1.0).to_event(1), mu_u_value, None))
        mu_u = mu_u_value * mean_mask(cfg)
        sites.append(
            (dist.LogNormal(fixed_scale.log(), cfg.scale_hyperprior_sd).to_event(1), s_u, None)
        )
    else:
        mu_u, s_u = zeros, fixed_scale
    if cfg.video_pooling:
        sites.append((dist.Normal(zeros, 1.0).to_event(1), mu_v_value, None))
        mu_v = mu_v_value * mean_mask(cfg)
        sites.append(
            (dist.LogNormal(fixed_scale.log(), cfg.scale_hyperprior_sd).to_event(1), s_v, None)
        )
    else:
        mu_v, s_v = zeros, fixed_scale
    if d == 0:
        r = dist.Normal(b0.expand(n_events), sigma)
    else:
        sites.append((_in_plate(dist.Normal(mu_v, s_v).to_event(1), n_videos), w, 0))
        sites.append((_in_plate(dist.Normal(mu_u, s_u).to_event(1), n_users), x, 1))
        mean = b0 + predicted_mean(x[data.event_user], w[data.event_video], cfg.biases)
        r = dist.Normal(mean, sigma)
    sites.append((_in_plate(r, n_events), data.target, 2))
    masks = (data.video_mask, data.user_mask, data.event_mask)
    # --- Trace.compute_log_prob on the model's sites, in order ---
    sums = []
    for fn, value, plate in sites:
        lp = fn.log_prob(value)
        if plate is not None:
            lp = _scaled(lp, data.scales[plate], masks[plate])
        sums.append(lp.sum())
    # The guide's only term with a gradient: q(mu_u)'s log-density (its entropy term).
    guide_lp = None if guide_mu_u is None else guide_mu_u.log_prob(mu_u_value)
    # --- _differentiable_loss_particle's sums ---
    surrogate = 0
    for s in sums:
        surrogate = surrogate + s
    if guide_lp is not None:
        surrogate = surrogate - guide_lp.sum()
    return -surrogate
