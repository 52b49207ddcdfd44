"""The compiled SVI loss (model.svi_loss) against Pyro's uncompiled Trace_ELBO."""

from __future__ import annotations

import pyro
import torch
from test_svi_support import svi_problem

from model.config import HPMFConfig
from model.hpmf_model import Hypers, SVIData, hpmf_guide, hpmf_model
from model.svi_loss import svi_loss, svi_padding


def _problem(cfg: HPMFConfig, u: int, j: int, e: int, tril_scale: float, pad: bool) -> SVIData:
    return svi_problem(
        cfg,
        u,
        j,
        e,
        seed=5,
        cov_scale=tril_scale**2,
        n_videos=50,
        pad_to=svi_padding(cfg) if pad else None,
    )


def _loss_and_grads(compiled: bool, data: SVIData, cfg: HPMFConfig, seed: int):
    hp = Hypers.initial(cfg, b0=3.0, sigma=0.9)
    with torch.no_grad():
        hp.mu_u_loc.add_(0.1)
    torch.manual_seed(seed)
    with pyro.validation_enabled(False):
        if compiled:
            loss = svi_loss(data, cfg, hp)
        else:
            loss = pyro.infer.Trace_ELBO().differentiable_loss(
                hpmf_model, hpmf_guide, data, cfg, hp
            )
    loss.backward()
    return loss.detach(), [t.grad.clone() for t in hp.learned_leaves()]


def test_compiled_loss_equals_trace_elbo_on_the_same_draws() -> None:
    """Without padding (users, videos and events fill the rows) the compiled
    trace draws exactly what Trace_ELBO draws once compiled (the first call
    runs the model twice more to trace it, drawing more): the gradients agree to rounding, the loss to 1e-7 (the
    trace keeps Python float constants, such as the Normal's log sqrt(2 pi),
    in single precision: an offset that does not depend on the parameters)."""
    cfg = HPMFConfig(n_factors=3, svi_max_events=12, svi_compiled=True)
    data = _problem(cfg, 12, 12, 12, tril_scale=0.2, pad=False)
    _loss_and_grads(True, data, cfg, 0)  # traces
    for seed in (0, 1):
        le, ge = _loss_and_grads(False, data, cfg, seed)
        lc, gc = _loss_and_grads(True, data, cfg, seed)
        torch.testing.assert_close(lc, le, rtol=1e-7, atol=0.0)
        for a, b in zip(gc, ge, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # The loss does depend on the draws: another seed gives another value.
    assert not torch.equal(_loss_and_grads(True, data, cfg, 2)[0], lc)


def test_padding_is_masked_out_and_the_plates_scaled_as_subsampled() -> None:
    """Padded to svi_max_events rows, the compiled loss's gradients equal the
    unpadded Trace_ELBO's when the factors' draws sit at their means (tiny
    posterior covariances; q(mu_u) is drawn first, the same in both): the padding rows count for nothing and each
    plate's scale is its size over the rows it holds."""
    cfg = HPMFConfig(n_factors=3, svi_max_events=16, svi_compiled=True)
    small, padded = (_problem(cfg, 4, 5, 11, tril_scale=1e-9, pad=p) for p in (False, True))
    assert len(padded.target) == 16 and int(padded.event_mask.sum()) == 11
    _loss_and_grads(True, padded, cfg, 0)  # traces
    _, ge = _loss_and_grads(False, small, cfg, 0)
    _, gc = _loss_and_grads(True, padded, cfg, 0)
    for a, b in zip(gc, ge, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # Unmasked, the padding rows would change the gradients.
    padded.user_mask[:] = True
    _, gu = _loss_and_grads(True, padded, cfg, 0)
    assert max(float((a - b).abs().max()) for a, b in zip(gu, ge, strict=True)) > 1e-3


def test_padded_compiled_gradients_have_trace_elbos_distribution() -> None:
    """With real posterior spreads the draws differ from Trace_ELBO's (the
    padded shapes draw more), but the gradient is the same estimator: over
    many draws its mean agrees with the uncompiled one's within Monte Carlo
    error, and its spread is alike."""
    cfg = HPMFConfig(n_factors=3, svi_max_events=64, svi_compiled=True)
    small, padded = (_problem(cfg, 10, 20, 50, tril_scale=0.3, pad=p) for p in (False, True))
    _loss_and_grads(True, padded, cfg, 0)  # traces

    def draws(compiled: bool) -> torch.Tensor:
        data = padded if compiled else small
        return torch.stack(
            [
                torch.cat([g.flatten() for g in _loss_and_grads(compiled, data, cfg, s)[1]])
                for s in range(200)
            ]
        )

    eager, compiled = draws(False), draws(True)
    se = torch.sqrt((eager.var(0) + compiled.var(0)) / 200) + 1e-9
    assert float(((compiled.mean(0) - eager.mean(0)).abs() / se).max()) < 4.0
    live = eager.std(0) > 1e-3
    ratio = compiled.std(0)[live] / eager.std(0)[live]
    assert float(ratio.min()) > 0.7 and float(ratio.max()) < 1.4
