"""The hyper-parameters as the steps read them: b0, the noise, the pooled priors.

Before the first batch (``hp`` None) every accessor falls back to the
configured priors: b0's prior mean, unit noise, N(0, diag(initial scales)^2).
"""

from __future__ import annotations

import numpy as np
import torch

from model.adam import Adam
from model.config import HPMFConfig
from model.derived_cache import derived
from model.hpmf_model import Hypers, mean_mask
from model.posterior import PooledPrior
from model.serving_prior import serving_scales

DTYPE = torch.float64


class HyperState:
    """The hyper-parameter accessors of :class:`model.online.OnlineHPMF` (a mixin)."""

    config: HPMFConfig
    hp: Hypers | None
    _opt: Adam | None

    def _ensure_hypers(self, targets: np.ndarray) -> Hypers:
        if self.hp is None:
            b0 = float(np.mean(targets)) if targets.size else 0.0
            sd = float(np.std(targets)) if targets.size > 1 else 1.0
            self.hp = Hypers.initial(self.config, b0=b0, sigma=max(sd, 1e-2))
            self._opt = Adam(self.hp.learned_leaves(), lr=self.config.svi_lr)
        return self.hp

    def _b0(self) -> torch.Tensor:
        if self.hp is None:  # nothing learned yet: b0's prior mean
            return torch.tensor(self.config.global_mean_prior, dtype=DTYPE)
        return self.hp.b0.detach()

    def _noise_var(self) -> torch.Tensor:
        if self.hp is None:
            return torch.tensor(1.0, dtype=DTYPE)
        hp = self.hp
        return derived(
            self, "noise_var", (hp.log_sigma,), lambda: (2 * hp.log_sigma.detach()).exp()
        )

    def _user_prior(self, serving: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled user prior's mean and scales. ``serving``: the one the
        local step and new users get, whose taste scales are
        ``serving_taste_scale`` when set; the replay sweeps fit users with
        ``serving=False`` (the taste scales that teach the videos)."""
        cfg = self.config
        if self.hp is None or not cfg.user_pooling:
            return torch.zeros(cfg.dim, dtype=DTYPE), Hypers.initial_scales(cfg).clone()
        hp = self.hp
        mean, scale = derived(
            self,
            "user_prior",
            (hp.mu_u_loc, hp.log_s_u),
            lambda: (hp.mu_u_loc.detach() * mean_mask(cfg), hp.log_s_u.detach().exp()),
        )
        if serving and cfg.serving_taste_scale is not None:
            scale = serving_scales(scale, cfg.serving_taste_scale, cfg.n_factors)
        return mean, scale

    def _video_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if self.hp is None or not cfg.video_pooling:
            return torch.zeros(cfg.dim, dtype=DTYPE), Hypers.initial_scales(cfg).clone()
        hp = self.hp
        return derived(
            self,
            "video_prior",
            (hp.mu_v, hp.log_s_v),
            lambda: (hp.mu_v.detach() * mean_mask(cfg), hp.log_s_v.detach().exp()),
        )

    def pooled_prior(self) -> PooledPrior:
        """What a brand-new user gets: N(E[mu_u], diag(s_u)^2 + Var[mu_u])."""
        mean, scale = self._user_prior()
        var = scale.pow(2)
        if self.hp is not None and self.config.user_pooling:
            var = var + (2 * self.hp.mu_u_log_scale.detach()).exp() * mean_mask(self.config)
        return PooledPrior(mean.numpy().copy(), torch.diag(var).numpy())

    @property
    def sigma(self) -> float:
        return float(self._noise_var().sqrt())

    @property
    def global_mean(self) -> float:
        return float(self._b0())
