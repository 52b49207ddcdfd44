"""The HPMF model and its guide in Pyro: the single definition of the model.

    r_ij = transform(minutes_ij) ~ N(b0 + b_i + c_j + u_i . v_j, sigma)
    x_i = [u_i, b_i] ~ N(mu_u, diag(s_u)^2)      user factors and bias, pooled prior
    mu_u ~ N(0, I)                               the population mean, learned
    s_u  ~ LogNormal(log s_init, 1)              the population spread, weak hyperprior
    w_j = [v_j, c_j] ~ N(mu_v, diag(s_v)^2)      video factors and bias (pooled as an option)
    b0 ~ N(global_mean_prior, 10^2),  sigma ~ LogNormal(0, 1.5)

Plates: ``videos`` (the touched videos, out of all), ``users`` and ``events``
(the minibatch, scaled up to the effective data size N_eff).

Inference splits the guide in two, as in stochastic variational inference:
the local factors q(x_i) and the video factors q(w_j) are conditionally
conjugate, so :mod:`model.local_step` and :mod:`model.video_step` set them in
closed form and the guide takes them as given; the hyper-parameters
(b0, sigma, mu_u, s_u, mu_v, s_v) are learned by Pyro SVI steps on the ELBO of
this model and guide. (The online step takes its gradients from
:mod:`model.svi_surrogate`, this model and guide under ``Trace_ELBO`` written
out op for op: the same gradients bit for bit, without Pyro's tracing.)

A doctest: one SVI loss evaluation on a tiny problem.

>>> import torch, pyro
>>> from model.config import HPMFConfig
>>> cfg = HPMFConfig(n_factors=2)
>>> hp = Hypers.initial(cfg, b0=3.0, sigma=1.0)
>>> d = cfg.dim
>>> data = SVIData.build(
...     user_mean=torch.zeros(2, d), user_tril=torch.eye(d).expand(2, d, d),
...     video_mean=torch.zeros(2, d), video_tril=torch.eye(d).expand(2, d, d),
...     event_user=torch.tensor([0, 1, 1]), event_video=torch.tensor([0, 0, 1]),
...     target=torch.tensor([4.0, 3.0, 2.0]), n_videos=10, users_size=200.0, events_size=300.0)
>>> loss = pyro.infer.Trace_ELBO().differentiable_loss(hpmf_model, hpmf_guide, data, cfg, hp)
>>> bool(torch.isfinite(loss))
True
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from model.config import HPMFConfig


@dataclass
class SVIData:
    """What one SVI step sees: a buffer of recent events and the closed-form factors.

    The plates are subsampled: each plate's log-densities are scaled by how many
    it stands for over how many it holds (``scales``: videos, users, events),
    as ``pyro.plate(size, subsample=...)`` scales them, but with the scale a
    tensor, so that a compiled trace (:mod:`model.svi_loss`) takes it as an
    input. Rows past the masks' True entries are padding (a fixed shape for
    the compiled trace) and count for nothing."""

    user_mean: torch.Tensor  # (U, D)
    user_tril: torch.Tensor  # (U, D, D) Cholesky factor of q(x_i)'s covariance
    video_mean: torch.Tensor  # (J, D) the touched videos
    video_tril: torch.Tensor  # (J, D, D)
    event_user: torch.Tensor  # (E,) index into users
    event_video: torch.Tensor  # (E,) index into touched videos
    target: torch.Tensor  # (E,) transformed values
    scales: torch.Tensor  # (3,) videos, users, events: how many each row stands for
    user_mask: torch.Tensor  # (U,) bool, False: padding
    video_mask: torch.Tensor  # (J,)
    event_mask: torch.Tensor  # (E,)

    @staticmethod
    def build(
        user_mean: torch.Tensor,
        user_tril: torch.Tensor,
        video_mean: torch.Tensor,
        video_tril: torch.Tensor,
        event_user: torch.Tensor,
        event_video: torch.Tensor,
        target: torch.Tensor,
        n_videos: int,
        users_size: float,
        events_size: float,
        pad_to: int | None = None,
    ) -> SVIData:
        """The step's data: ``n_videos`` (all videos), ``users_size`` and
        ``events_size`` (N_eff) are the plates' full sizes. ``pad_to``: pad
        users, videos and events to that many rows (at least as many as each
        holds), masked out."""
        u, j, e = len(user_mean), len(video_mean), len(target)
        scales = torch.tensor([n_videos / j, users_size / u, events_size / e], dtype=torch.float64)
        n = pad_to
        if n is None:
            t = torch.ones(max(u, j, e), dtype=torch.bool)
            return SVIData(
                *(user_mean, user_tril, video_mean, video_tril),
                event_user,
                event_video,
                target,
                scales,
                t[:u],
                t[:j],
                t[:e],
            )
        return SVIData(
            _pad(user_mean, n),
            _pad_tril(user_tril, n),
            _pad(video_mean, n),
            _pad_tril(video_tril, n),
            _pad(event_user, n),
            _pad(event_video, n),
            _pad(target, n),
            scales,
            torch.arange(n) < u,
            torch.arange(n) < j,
            torch.arange(n) < e,
        )

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f) for f in SVIData.__dataclass_fields__)


def _pad(t: torch.Tensor, n: int) -> torch.Tensor:
    out = t.new_zeros((n, *t.shape[1:]))
    out[: len(t)] = t
    return out


def _pad_tril(t: torch.Tensor, n: int) -> torch.Tensor:
    """Padding rows get the identity (a valid factor whose terms are masked out)."""
    d = t.shape[-1]
    out = torch.eye(d, dtype=t.dtype).expand(n, d, d).clone()
    out[: len(t)] = t
    return out


@dataclass
class Hypers:
    """Unconstrained variational parameters of the hyper-parameters (torch leaves)."""

    b0: torch.Tensor
    log_sigma: torch.Tensor
    mu_u_loc: torch.Tensor
    mu_u_log_scale: torch.Tensor
    log_s_u: torch.Tensor
    mu_v: torch.Tensor
    log_s_v: torch.Tensor

    @staticmethod
    def initial_scales(cfg: HPMFConfig) -> torch.Tensor:
        """The priors' initial scales (shared: do not modify in place)."""
        return _initial_scales(cfg.dim, cfg.biases, cfg.prior_scale, cfg.bias_prior_scale)

    @staticmethod
    def initial(cfg: HPMFConfig, b0: float, sigma: float) -> Hypers:
        d = cfg.dim
        scales = Hypers.initial_scales(cfg).log()

        def leaf(t: torch.Tensor) -> torch.Tensor:
            return t.to(torch.float64).clone().requires_grad_(True)

        return Hypers(
            b0=leaf(torch.tensor(b0)),
            log_sigma=leaf(torch.tensor(math.log(sigma))),
            mu_u_loc=leaf(torch.zeros(d)),
            mu_u_log_scale=leaf(torch.full((d,), -3.0)),
            log_s_u=leaf(scales),
            mu_v=leaf(torch.zeros(d)),
            log_s_v=leaf(scales),
        )

    def learned_leaves(self) -> list[torch.Tensor]:
        """The leaves SVI moves; b0 is set in closed form (a running mean)."""
        return [t for t in self.leaves() if t is not self.b0]

    def leaves(self) -> list[torch.Tensor]:
        return [
            self.b0,
            self.log_sigma,
            self.mu_u_loc,
            self.mu_u_log_scale,
            self.log_s_u,
            self.mu_v,
            self.log_s_v,
        ]


def mean_mask(cfg: HPMFConfig) -> torch.Tensor:
    """1 for latent dims, 0 for the bias slot: the mean user (and video) bias is
    not identifiable apart from b0, so the pooled means act on tastes only.
    (Shared: do not modify in place.)"""
    return _mean_mask(cfg.dim, cfg.biases)


# Built once per shape: these run on every predict/learn and inside every SVI step.
@functools.lru_cache(maxsize=32)
def _mean_mask(dim: int, biases: bool) -> torch.Tensor:
    m = torch.ones(dim, dtype=torch.float64)
    if biases:
        m[-1] = 0.0
    return m


@functools.lru_cache(maxsize=32)
def _initial_scales(
    dim: int, biases: bool, prior_scale: float, bias_prior_scale: float
) -> torch.Tensor:
    s = torch.full((dim,), prior_scale, dtype=torch.float64)
    if biases:
        s[-1] = bias_prior_scale
    return s


def predicted_mean(x: torch.Tensor, w: torch.Tensor, biases: bool) -> torch.Tensor:
    """b_i + c_j + u_i . v_j for factors x = [u, b] and w = [v, c] (without b0)."""
    if not biases:
        return (x * w).sum(-1)
    return (x[..., :-1] * w[..., :-1]).sum(-1) + x[..., -1] + w[..., -1]


def hpmf_model(data: SVIData, cfg: HPMFConfig, hp: Hypers) -> None:
    d = cfg.dim
    fixed_scale = Hypers.initial_scales(cfg)
    zeros = torch.zeros(d, dtype=torch.float64)
    # Globals
    b0 = pyro.sample(
        "b0", dist.Normal(torch.tensor(cfg.global_mean_prior, dtype=torch.float64), 10.0)
    )
    sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 1.5))
    if cfg.user_pooling:
        mu_u = pyro.sample("mu_u", dist.Normal(zeros, 1.0).to_event(1)) * mean_mask(cfg)
        s_u = pyro.sample(
            "s_u", dist.LogNormal(fixed_scale.log(), cfg.scale_hyperprior_sd).to_event(1)
        )
    else:
        mu_u, s_u = zeros, fixed_scale
    if cfg.video_pooling:
        mu_v = pyro.sample("mu_v", dist.Normal(zeros, 1.0).to_event(1)) * mean_mask(cfg)
        s_v = pyro.sample(
            "s_v", dist.LogNormal(fixed_scale.log(), cfg.scale_hyperprior_sd).to_event(1)
        )
    else:
        mu_v, s_v = zeros, fixed_scale
    n_users, n_events = data.user_mean.shape[0], data.target.shape[0]
    if d == 0:  # the global-mean model: no factors, only b0 and sigma
        with _plate("events", n_events, data.scales[2], data.event_mask):
            pyro.sample("r", dist.Normal(b0.expand(n_events), sigma), obs=data.target)
        return
    with _plate("videos", data.video_mean.shape[0], data.scales[0], data.video_mask):
        w = pyro.sample("w", dist.Normal(mu_v, s_v).to_event(1))
    # Locals
    with _plate("users", n_users, data.scales[1], data.user_mask):
        x = pyro.sample("x", dist.Normal(mu_u, s_u).to_event(1))
    with _plate("events", n_events, data.scales[2], data.event_mask):
        mean = b0 + predicted_mean(x[data.event_user], w[data.event_video], cfg.biases)
        pyro.sample("r", dist.Normal(mean, sigma), obs=data.target)


def hpmf_guide(data: SVIData, cfg: HPMFConfig, hp: Hypers) -> None:
    # Globals
    pyro.sample("b0", dist.Delta(hp.b0))
    pyro.sample("sigma", dist.Delta(hp.log_sigma.exp()))
    if cfg.user_pooling:
        pyro.sample("mu_u", dist.Normal(hp.mu_u_loc, hp.mu_u_log_scale.exp()).to_event(1))
        pyro.sample("s_u", dist.Delta(hp.log_s_u.exp()).to_event(1))
    if cfg.video_pooling:
        pyro.sample("mu_v", dist.Delta(hp.mu_v).to_event(1))
        pyro.sample("s_v", dist.Delta(hp.log_s_v.exp()).to_event(1))
    if cfg.dim == 0:
        return
    # The conjugate blocks, set in closed form by the local and video steps.
    with _plate("videos", data.video_mean.shape[0], data.scales[0], data.video_mask):
        pyro.sample("w", dist.MultivariateNormal(data.video_mean, scale_tril=data.video_tril))
    # Locals
    with _plate("users", data.user_mean.shape[0], data.scales[1], data.user_mask):
        pyro.sample("x", dist.MultivariateNormal(data.user_mean, scale_tril=data.user_tril))


@contextlib.contextmanager
def _plate(name: str, size: int, scale: torch.Tensor, mask: torch.Tensor) -> Iterator[None]:
    """A subsampled plate of ``size`` rows, each standing for ``scale`` (see SVIData)."""
    with pyro.plate(name, size), poutine.scale(scale=scale), poutine.mask(mask=mask):
        yield
