"""The prior a brand-new user gets: N(E[mu_u], diag(s_u)^2 + Var[mu_u]) over the
coordinates mu_u actually acts on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF


def _learned(cfg: HPMFConfig) -> OnlineHPMF:
    rng = np.random.default_rng(0)
    model = OnlineHPMF(cfg)
    users = [f"u{k}" for k in rng.integers(0, 50, 600)]
    videos = [f"v{k}" for k in rng.integers(0, 30, 600)]
    model.learn(Batch.of(users, videos, rng.uniform(1, 5, 600)), {})
    return model


def test_pooled_prior_is_the_fixed_prior_without_pooling() -> None:
    model = _learned(HPMFConfig(n_factors=3, user_pooling=False, prior_scale=0.3))
    prior = model.pooled_prior()
    np.testing.assert_array_equal(prior.mean, np.zeros(4))
    np.testing.assert_allclose(np.diag(prior.cov), [0.09, 0.09, 0.09, 0.36])


def test_pooled_prior_adds_no_variance_where_mu_u_is_masked() -> None:
    """hpmf_model multiplies mu_u by mean_mask (bias slot 0), so the bias slot of
    q(mu_u) never touches the likelihood and drifts to its N(0, 1) hyperprior
    (scale ~1.09 after MovieLens 100K); its variance must not reach new users
    (it did before commit 056106c: docs/evaluation.md)."""
    model = _learned(HPMFConfig(n_factors=3))
    assert model.hp is not None
    with torch.no_grad():  # as SVI leaves it after a long stream: the unused slot at its hyperprior
        model.hp.mu_u_log_scale[-1] = 0.0
    prior = model.pooled_prior()
    s_bias = float(model.hp.log_s_u[-1].detach().exp())
    assert prior.mean[-1] == 0.0
    assert prior.cov[-1, -1] == pytest.approx(s_bias**2)
