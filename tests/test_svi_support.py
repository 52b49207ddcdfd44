"""A random SVI problem shared by the tests that compare SVI losses
(tests/test_model_svi_loss.py, tests/test_model_svi_surrogate.py)."""

from __future__ import annotations

import torch

from model.config import HPMFConfig
from model.hpmf_model import SVIData

F64 = torch.float64


def svi_problem(
    cfg: HPMFConfig,
    u: int,
    j: int,
    e: int,
    *,
    seed: int,
    cov_scale: float,
    n_videos: int,
    pad_to: int | None = None,
) -> SVIData:
    """``u`` users, ``j`` videos and ``e`` >= max(u, j) events, every user and
    video with an event (as in a real step); posterior covariances
    ``cov_scale`` x (a random Gram matrix + I), drawn from the generator ``seed``."""
    g = torch.Generator().manual_seed(seed)
    d = cfg.dim

    def tril(n: int) -> torch.Tensor:
        a = torch.randn(n, d, d, generator=g, dtype=F64)
        cov = cov_scale * (a @ a.transpose(-1, -2) / max(d, 1) + torch.eye(d, dtype=F64))
        return torch.linalg.cholesky(cov)

    ev_u = torch.cat([torch.arange(u), torch.randint(0, u, (e - u,), generator=g)])
    ev_v = torch.cat([torch.arange(j), torch.randint(0, j, (e - j,), generator=g)])
    return SVIData.build(
        0.3 * torch.randn(u, d, generator=g, dtype=F64),
        tril(u),
        0.3 * torch.randn(j, d, generator=g, dtype=F64),
        tril(j),
        ev_u,
        ev_v,
        1.0 + 4.0 * torch.rand(e, generator=g, dtype=F64),
        n_videos=n_videos,
        users_size=1000.0 * u / e,
        events_size=1000.0,
        pad_to=pad_to,
    )
