"""The local step is the exact Gaussian posterior of a user's factors.

Two independent checks of :func:`model.local_step.user_local_step`:

1. against the closed form computed here in numpy, by a different route: the
   feature y = A w + e and the offset c = g . w are linear in the video factor
   w ~ N(m, S), so E[y] = A m + e, E[y y^T] = A S A^T + E[y] E[y]^T and
   E[y c] = A S g + E[y] (g . m);
2. against what Pyro SVI converges to with a full-rank Gaussian guide on x
   alone, the globals (video posteriors, b0, sigma, prior) held fixed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints

from model.local_step import HistoryEntries, user_local_step


def _problem(
    seed: int, d: int, n_videos: int, video_cov_scale: float = 0.3
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, video_cov_scale, (n_videos, d, d))
    return {
        "vm": rng.normal(0.0, 0.7, (n_videos, d)),
        "vc": a @ a.transpose(0, 2, 1) + 0.02 * np.eye(d),
        "mu": rng.normal(0.0, 0.3, d),
        "s": rng.uniform(0.3, 0.7, d),
    }


def numpy_posterior(
    users: np.ndarray,
    videos: np.ndarray,
    r: np.ndarray,
    a: np.ndarray,
    n_users: int,
    vm: np.ndarray,
    vc: np.ndarray,
    b0: float,
    noise_var: float,
    mu: np.ndarray,
    s: np.ndarray,
    biases: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """q(x_i) = N(P^-1 h, P^-1) with P = diag(s)^-2 + sum_j a_j E[yy^T] / noise_var and
    h = diag(s)^-2 mu + sum_j a_j ((r_j - b0) E[y] - E[y c]) / noise_var."""
    d = len(mu)
    A = np.eye(d)
    e = np.zeros(d)
    g = np.zeros(d)
    if biases:  # y = [v, 1], c = the video's last coordinate
        A[-1, -1] = 0.0
        e[-1] = 1.0
        g[-1] = 1.0
    means, covs = np.empty((n_users, d)), np.empty((n_users, d, d))
    for i in range(n_users):
        P = np.diag(s**-2.0)
        h = s**-2.0 * mu
        for k in np.flatnonzero(users == i):
            m, S = vm[videos[k]], vc[videos[k]]
            ey = A @ m + e
            eyy = A @ S @ A.T + np.outer(ey, ey)
            eyc = A @ S @ g + ey * (g @ m)
            P += a[k] * eyy / noise_var
            h += a[k] * ((r[k] - b0) * ey - eyc) / noise_var
        covs[i] = np.linalg.inv(P)
        means[i] = covs[i] @ h
    return means, covs


@pytest.mark.parametrize("biases", [True, False])
def test_local_step_equals_numpy_closed_form(biases: bool) -> None:
    d, n_videos, n_users = 4, 7, 3
    p = _problem(0, d, n_videos)
    rng = np.random.default_rng(1)
    users = np.array([0, 0, 0, 1, 1, 2, 0, 1])
    videos = np.array([0, 1, 2, 2, 3, 6, 5, 4])
    r = rng.normal(3.0, 1.0, len(users))
    a = 0.9 ** rng.integers(0, 5, len(users))  # forgetting weights
    b0, noise_var = 2.7, 0.6
    want_m, want_c = numpy_posterior(
        users, videos, r, a, n_users, p["vm"], p["vc"], b0, noise_var, p["mu"], p["s"], biases
    )
    t = torch.from_numpy
    entries = HistoryEntries(t(users), t(videos), t(r), t(a))
    got_m, got_c, got_l = user_local_step(
        entries,
        n_users,
        t(p["vm"]),
        t(p["vc"]),
        torch.tensor(b0, dtype=torch.float64),
        torch.tensor(noise_var, dtype=torch.float64),
        t(p["mu"]),
        t(p["s"]),
        biases,
    )
    np.testing.assert_allclose(got_m.numpy(), want_m, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_c.numpy(), want_c, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose((got_l @ got_l.transpose(-1, -2)).numpy(), want_c, atol=1e-10)
    # a user with no entries gets exactly the prior
    m0, c0, _ = user_local_step(
        HistoryEntries(t(users), t(videos), t(r), t(a)),
        n_users + 1,
        t(p["vm"]),
        t(p["vc"]),
        torch.tensor(b0, dtype=torch.float64),
        torch.tensor(noise_var, dtype=torch.float64),
        t(p["mu"]),
        t(p["s"]),
        biases,
    )
    np.testing.assert_allclose(m0[-1].numpy(), p["mu"], atol=1e-12)
    np.testing.assert_allclose(c0[-1].numpy(), np.diag(p["s"] ** 2), atol=1e-12)


def test_local_step_equals_pyro_svi_optimum() -> None:
    """With q(w_j) fixed (sampled identically in model and guide, so their
    log-density terms cancel), the ELBO over a full-rank Gaussian q(x) is
    maximised by the coordinate-ascent update the local step computes."""
    d, n_videos = 3, 6
    p = _problem(2, d, n_videos, video_cov_scale=0.35)
    rng = np.random.default_rng(3)
    r = rng.normal(3.0, 1.0, n_videos)
    a = 0.9 ** np.arange(n_videos)[::-1]
    b0, sigma = 2.5, 0.8
    f64 = torch.float64
    vm, vc, mu, s = (torch.tensor(p[k], dtype=f64) for k in ("vm", "vc", "mu", "s"))
    obs, weight = torch.tensor(r, dtype=f64), torch.tensor(a, dtype=f64)

    def model() -> None:
        x = pyro.sample("x", dist.Normal(mu, s).to_event(1))
        with pyro.plate("events", n_videos, dim=-1):
            w = pyro.sample("w", dist.MultivariateNormal(vm, covariance_matrix=vc))
            mean = b0 + (x[..., :2] * w[..., :2]).sum(-1) + x[..., 2] + w[..., 2]
            with poutine.scale(scale=weight):
                pyro.sample("r", dist.Normal(mean, sigma), obs=obs)

    def guide() -> None:
        loc = pyro.param("loc", mu.clone())
        tril = pyro.param("tril", torch.diag(s).clone(), constraint=constraints.lower_cholesky)
        pyro.sample("x", dist.MultivariateNormal(loc, scale_tril=tril))
        with pyro.plate("events", n_videos, dim=-1):
            pyro.sample("w", dist.MultivariateNormal(vm, covariance_matrix=vc))

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    elbo = pyro.infer.JitTrace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    svi = pyro.infer.SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.02, "lrd": 0.999}), elbo)
    locs, covs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the JIT's tracer warnings
        for step in range(1500):
            svi.step()
            if step >= 700:  # Polyak-average the tail of the iterates
                tril = pyro.param("tril").detach()
                locs.append(pyro.param("loc").detach().clone())
                covs.append(tril @ tril.T)
    svi_mean, svi_cov = torch.stack(locs).mean(0), torch.stack(covs).mean(0)

    entries = HistoryEntries(
        torch.zeros(n_videos, dtype=torch.long), torch.arange(n_videos), obs, weight
    )
    args = (torch.tensor(b0, dtype=f64), torch.tensor(sigma**2, dtype=f64), mu, s, True)
    exact_m, exact_c, _ = user_local_step(entries, 1, vm, vc, *args)
    np.testing.assert_allclose(svi_mean.numpy(), exact_m[0].numpy(), atol=0.02)
    np.testing.assert_allclose(svi_cov.numpy(), exact_c[0].numpy(), atol=0.01)
    # The check can tell: ignoring the videos' uncertainty gives a different answer.
    naive_m, naive_c, _ = user_local_step(entries, 1, vm, torch.zeros_like(vc), *args)
    assert np.abs(naive_c[0].numpy() - svi_cov.numpy()).max() > 0.03
