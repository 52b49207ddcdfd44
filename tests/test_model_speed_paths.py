"""The cheaper learn path at minibatch 1024 computes what the straightforward
code did: the Gaussian posterior by one triangular solve, the hyper-derived
priors cached per change of the leaves, the replay window joined without a
sort, one pass for the batch's pairs, the fold loop, distinct rows by a
presence table, the new videos' jitter in one pass; and the sweep's
user-variance share (``HPMFConfig.sweep_user_variance``) is the old sweep at 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.adam import Adam
from model.batch import Batch
from model.config import HPMFConfig
from model.moments import gaussian_posterior
from model.online import OnlineHPMF
from model.online_local import _pairs
from model.posterior import UserState
from model.replay_sweep import replay_sweep
from model.replay_window import ReplayWindow

F64 = torch.float64


def test_gaussian_posterior_matches_the_explicit_inverse() -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 64, 11
    a = torch.randn(n, d, 3 * d, generator=g, dtype=F64)
    data_prec = a @ a.transpose(-1, -2)
    prior_prec = torch.diag_embed(torch.full((d,), 4.0, dtype=F64)).expand(n, d, d)
    prior_shift = torch.randn(n, d, generator=g, dtype=F64)
    data_shift = torch.randn(n, d, generator=g, dtype=F64)
    mean, cov, tril = gaussian_posterior(prior_prec, prior_shift, data_prec, data_shift)
    want_cov = torch.linalg.inv(prior_prec + data_prec)
    want_mean = (want_cov @ (prior_shift + data_shift).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(cov, want_cov, rtol=0, atol=1e-12)
    assert torch.allclose(mean, want_mean, rtol=0, atol=1e-12)
    assert torch.equal(cov, cov.transpose(-1, -2))
    assert tril is not None and torch.allclose(tril @ tril.transpose(-1, -2), cov, atol=1e-12)


def _learned_model() -> OnlineHPMF:
    m = OnlineHPMF(HPMFConfig(n_factors=2, seed=3))
    m.learn(Batch.of(["a", "a", "b"], ["v1", "v2", "v1"], [3.0, 1.0, 2.0]), {})
    return m


def test_cached_priors_follow_every_change_of_the_hypers() -> None:
    m = _learned_model()
    mean, scale = m._video_prior()
    assert m._video_prior()[0] is mean  # cached: the same tensor while nothing changed
    with torch.no_grad():
        m.hp.mu_v.add_(0.25)  # an in-place change, as Adam's step makes
        m.hp.log_s_u.fill_(0.0)
        m.hp.log_sigma.fill_(np.log(0.5))
    mean2, scale2 = m._video_prior()
    assert torch.allclose(mean2 - mean, 0.25 * torch.tensor([1.0, 1.0, 0.0], dtype=F64))
    assert torch.equal(scale2, scale)
    assert torch.equal(m._user_prior()[1], torch.ones(3, dtype=F64))
    assert float(m._noise_var()) == pytest.approx(0.25)
    # A loaded state brings new leaves: never the values cached for the old ones.
    fresh = OnlineHPMF(m.config)
    fresh.load_state_dict(m.state_dict())
    fresh._video_prior()
    with torch.no_grad():
        fresh.hp.mu_v.zero_()
    assert torch.equal(fresh._video_prior()[0], torch.zeros(3, dtype=F64))


def test_a_drop_of_nothing_keeps_what_the_window_reads() -> None:
    w = ReplayWindow(10)
    w.add(["a", "b"], np.array([0, 1]), np.array([1.0, 2.0]), clock=1.0)
    w.add(["a", "c"], np.array([0, 2]), np.array([5.0, 3.0]), clock=2.0)
    before = w.arrays()
    w.drop_oldest(0)
    after = w.arrays()
    for x, y in zip(before[:4], after[:4], strict=True):
        assert np.array_equal(x, y)
    assert before[4] == after[4] == 3
    # Over capacity, a drop of nothing still deduplicates (memory stays bounded).
    small = ReplayWindow(1)
    small.add(["a", "a"], np.array([0, 0]), np.array([1.0, 2.0]), clock=1.0)
    small.drop_oldest(0)
    assert len(small) == 1 and small.arrays()[2].tolist() == [2.0]


def test_fold_events_and_pairs_are_the_per_event_loops() -> None:
    users, videos, values = ["a", "b", "a", "a"], ["v1", "v1", "v2", "v1"], [1.0, 2.0, 3.0, 4.0]
    one, many = {"a": UserState(), "b": UserState()}, {"a": UserState(), "b": UserState()}
    for u, v, x in zip(users, videos, values, strict=True):
        one[u].fold(v, x)
    UserState.fold_events(many, users, videos, values)
    assert {u: (s.history, s.n_events) for u, s in one.items()} == {
        u: (s.history, s.n_events) for u, s in many.items()
    }
    first, sums = _pairs(Batch.of(users, videos, values))
    assert first == {("a", "v1"): 0, ("b", "v1"): 1, ("a", "v2"): 2}
    assert sums == {("a", "v1"): 5.0, ("b", "v1"): 2.0, ("a", "v2"): 3.0}


def _sweep(user_variance: float) -> torch.Tensor:
    w = ReplayWindow(100)
    w.add(["a", "a", "b", "c"], np.array([0, 1, 0, 1]), np.array([1.0, -1.0, 0.5, 2.0]), clock=4.0)
    d = 3
    prior = (torch.zeros(d, dtype=F64), torch.full((d,), 0.5, dtype=F64))
    zeros = torch.zeros(2, d, d, dtype=F64), torch.zeros(2, d, dtype=F64)
    mean = torch.tensor([[0.3, -0.2, 0.0], [-0.1, 0.4, 0.0]], dtype=F64)
    out = replay_sweep(
        w.arrays(),
        torch.tensor([0, 1]),
        mean,
        0.25 * torch.eye(d, dtype=F64).expand(2, d, d),
        *zeros,
        b0=torch.tensor(0.0, dtype=F64),
        noise_var=torch.tensor(1.0, dtype=F64),
        user_prior=prior,
        video_prior=prior,
        biases=True,
        clock=4.0,
        effective_data_size=100.0,
        iterations=1,
        user_variance=user_variance,
    )
    return out.kept_prec


def test_sweep_user_variance_scales_the_users_covariance_in_the_video_step() -> None:
    full, none, half = _sweep(1.0), _sweep(0.0), _sweep(0.5)
    # E[y y^T] = m m^T + share S: the precision is linear in the share, and
    # the users' variance only adds (taste dims); the bias slot is y's constant 1.
    assert torch.allclose(half, 0.5 * (full + none), atol=1e-12)
    taste = slice(0, 2)
    diff = (full - none)[:, taste, taste]
    assert bool((torch.linalg.eigvalsh(diff) > 0).all())
    assert torch.equal(full[:, 2, 2], none[:, 2, 2])
    with pytest.raises(ValueError, match="sweep_user_variance"):
        HPMFConfig(sweep_user_variance=-0.1)


def test_model_runs_takes_the_first_n_events(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.model_runs import main

    main(["churn60", "hpmf", "events=400", "n_factors=2"])
    out = capsys.readouterr().out
    assert "minibatch 1 events 400 {'n_factors': 2}" in out
    n = sum(
        int(line.split("n ")[1].split(",")[0])
        for line in out.splitlines()
        if "earlier events" in line
    )
    assert n == 400
    assert "taste share" in out


@pytest.mark.parametrize("bound", [1, 7, 1682])
def test_unique_rows_is_torch_unique(bound: int) -> None:
    from model.weighted_sums import unique_rows

    g = torch.Generator().manual_seed(bound)
    for n in (0, 1, 5, 300):
        # Row 0 absent on purpose in half the draws: a table must not invent it.
        low = 1 if n % 2 and bound > 1 else 0
        x = torch.randint(low, bound, (n,), generator=g)
        want_u, want_inv = torch.unique(x, return_inverse=True)
        got_u, got_inv = unique_rows(x, bound)
        assert got_u.tolist() == want_u.tolist()
        assert got_inv.tolist() == want_inv.tolist()


def _one_video_jitter(video_id: str, dim: int, scale: float, biases: bool) -> np.ndarray:
    """The per-video Box-Muller jitter as written before the batched version."""
    import hashlib

    if dim == 0:
        return np.zeros(0)
    n = dim + dim % 2
    digest = hashlib.shake_256(video_id.encode()).digest(8 * n)
    u = (np.frombuffer(digest, dtype="<u8") >> np.uint64(11)).astype(np.float64) + 0.5
    u *= 2.0**-53
    u1, u2 = u[0::2], u[1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    j = scale * np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
    j = j[:dim]
    if biases:
        j[-1] = 0.0
    return j


@pytest.mark.parametrize(("dim", "biases"), [(1, False), (3, True), (10, False), (11, True)])
def test_video_jitters_are_the_per_video_jitter(dim: int, biases: bool) -> None:
    from model.catalogue import video_jitter, video_jitters

    ids = [f"v{k}" for k in range(50)] + ["", "ünïcode"]
    many = video_jitters(ids, dim, 0.05, biases)
    assert many.shape == (len(ids), dim)
    for k, v in enumerate(ids):
        want = _one_video_jitter(v, dim, 0.05, biases)
        assert np.array_equal(many[k], want)
        assert np.array_equal(video_jitter(v, dim, 0.05, biases), want)


def test_rows_of_known_and_unknown_videos() -> None:
    """The catalogue's row lookup: without registering, an unknown id is -1
    and a known one its row, wherever it falls in the list (the lookup takes
    no KeyError round); registering appends the unknown ids in first-seen
    order and then gives every id its row."""
    m = OnlineHPMF(HPMFConfig(n_factors=1))
    m._rows(["a", "b", "c"], register=True)
    ids = ["x", "b", "a", "y", "c", "x"]
    assert m._rows(ids, register=False).tolist() == [-1, 1, 0, -1, 2, -1]
    assert m._rows(["c", "a"], register=False).tolist() == [2, 0]
    assert m._rows([], register=False).tolist() == []
    assert m.n_videos == 3  # looking up registers nothing
    assert m._rows(ids, register=True).tolist() == [3, 1, 0, 4, 2, 3]
    assert m.video_ids == ["a", "b", "c", "x", "y"]


def _adam_step_per_leaf(opt: Adam) -> None:
    """model.adam.Adam.step as it was written before the _foreach_ ops."""
    opt.t += 1
    b1, b2 = opt.betas
    c1, c2 = 1 - b1**opt.t, 1 - b2**opt.t
    with torch.no_grad():
        for p, m, v in zip(opt.params, opt.m, opt.v, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(opt.lr * (m / c1) / ((v / c2).sqrt() + opt.eps))


def test_adam_foreach_step_is_the_per_leaf_step() -> None:
    """The _foreach_ Adam step equals the per-leaf loop bit for bit over 40
    steps, leaves of several shapes and gradient scales, some leaves without a
    gradient on some steps (skipped, their moments untouched)."""
    g = torch.Generator().manual_seed(3)
    shapes = [(), (11,), (11,), (3, 4), (1,)]
    a = [torch.randn(s, generator=g, dtype=F64).requires_grad_(True) for s in shapes]
    b = [t.detach().clone().requires_grad_(True) for t in a]
    fast, slow = Adam(a, lr=0.06), Adam(b, lr=0.06)
    for step in range(40):
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            if (step + k) % 4 == 0:
                x.grad = y.grad = None
            else:
                grad = torch.randn(x.shape, generator=g, dtype=F64) * 10.0 ** (k - 2)
                x.grad, y.grad = grad.clone(), grad.clone()
        fast.step()
        _adam_step_per_leaf(slow)
    for x, y, mx, my, vx, vy in zip(a, b, fast.m, slow.m, fast.v, slow.v, strict=True):
        assert torch.equal(x, y) and torch.equal(mx, my) and torch.equal(vx, vy)
    assert not torch.equal(a[1], a[2])  # the leaves moved, each its own way
