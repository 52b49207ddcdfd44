"""model.svi_surrogate against Pyro's Trace_ELBO: the same gradients of the learned
leaves, bit for bit."""

from __future__ import annotations

import pyro
import pytest
import torch
from test_svi_support import svi_problem

from model.config import HPMFConfig
from model.hpmf_model import Hypers, SVIData, hpmf_guide, hpmf_model
from model.svi_surrogate import svi_surrogate

CONFIGS = [
    {"n_factors": 10},
    {"n_factors": 3, "biases": False},
    {"n_factors": 0},
    {"n_factors": 0, "biases": False},
    {"n_factors": 4, "user_pooling": False},
    {"n_factors": 4, "video_pooling": False},
    {"n_factors": 2, "user_pooling": False, "video_pooling": False},
]


def _problem(cfg: HPMFConfig, u: int, j: int, e: int) -> SVIData:
    return svi_problem(cfg, u, j, e, seed=u + 7 * j + 13 * e, cov_scale=0.04, n_videos=4 * j)


def _grads(fast: bool, data: SVIData, cfg: HPMFConfig, seed: int):
    """The leaves' gradients after one backward, and the generator's next draws."""
    hp = Hypers.initial(cfg, b0=3.0, sigma=0.9)
    with torch.no_grad():  # away from the initial values, every leaf differently
        for k, leaf in enumerate(hp.leaves()):
            leaf.add_(0.01 * (k + 1) * torch.linspace(-1.0, 1.0, leaf.numel()).reshape(leaf.shape))
    torch.manual_seed(seed)
    with pyro.validation_enabled(False):
        if fast:
            loss = svi_surrogate(data, cfg, hp)
        else:
            loss = pyro.infer.Trace_ELBO().differentiable_loss(
                hpmf_model, hpmf_guide, data, cfg, hp
            )
    (loss / 1000.0).backward()
    # b0 is not learned (a running mean): the surrogate leaves its gradient out.
    return [t.grad.clone() for t in hp.learned_leaves() if t.grad is not None], torch.rand(4)


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_surrogate_gradients_equal_trace_elbo_bit_for_bit(kw: dict) -> None:
    """Same generator state in: the same draws, the same gradients (torch.equal,
    not close) and the generator left in the same state. A step that dropped
    or reordered a term, drew in another order or scaled a plate otherwise
    would move them."""
    cfg = HPMFConfig(**kw)
    for u, j, e in [(7, 9, 30), (40, 120, 512)]:
        data = _problem(cfg, u, j, e)
        for seed in (0, 1):
            ref, ref_next = _grads(False, data, cfg, seed)
            got, got_next = _grads(True, data, cfg, seed)
            assert torch.equal(got_next, ref_next)
            assert len(got) == len(ref)
            for a, b in zip(got, ref, strict=True):
                assert torch.equal(a, b)
    if cfg.dim > 0:  # (the global-mean model draws nothing)
        # The gradients do depend on the draws: another seed, other gradients.
        other, _ = _grads(True, data, cfg, 2)
        assert any(not torch.equal(a, b) for a, b in zip(other, got, strict=True))
