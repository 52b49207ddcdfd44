"""The learned noise factor of the replay sweeps (model/sweep_noise.py): which
events it forecasts, the forecast errors against a direct computation, the
candidate tables against the sweep itself, and the step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.config import HPMFConfig
from model.local_step import HistoryEntries
from model.moments import gaussian_posterior
from model.online import OnlineHPMF
from model.replay_sweep import replay_sweep
from model.replay_window import ReplayWindow
from model.sweep_noise import candidate_videos, forecast_errors, holdout_mask, step_log_factor

F64 = torch.float64


def test_holdout_mask_is_each_returning_users_latest_event() -> None:
    rng = np.random.default_rng(3)
    user = rng.integers(0, 40, size=300)
    clock = np.sort(rng.integers(0, 100, size=300)).astype(float)  # ties at ``since`` too
    lasts = sorted(np.flatnonzero(user == u)[-1] for u in np.unique(user))
    since = clock[lasts[len(lasts) // 2]]  # some user's latest event is exactly at ``since``
    mask = holdout_mask(user, clock, since, share=1.0)
    expected = np.zeros(300, dtype=bool)
    for u in np.unique(user):
        last = np.flatnonzero(user == u)[-1]
        if clock[last] > since:
            expected[last] = True
    assert expected.sum() > 5
    assert np.array_equal(mask, expected)
    # The cap keeps the latest of them.
    capped = holdout_mask(user, clock, since, share=3 / 300)
    assert np.array_equal(np.flatnonzero(capped), np.flatnonzero(expected)[-3:])
    assert not holdout_mask(user, clock, 1000.0, share=1.0).any()


def _direct_forecast(user, video, target, held, vm, b0, noise, pm, ps):
    """Each held event's user from their other events (conjugate Gaussian,
    video means only: the tables below have zero covariance), then the MSE."""
    errs = []
    for e in np.flatnonzero(held):
        others = [k for k in range(len(user)) if user[k] == user[e] and not held[k]]
        prec = np.diag(ps**-2.0)
        shift = ps**-2.0 * pm
        for k in others:
            y = np.append(vm[video[k], :-1], 1.0)
            prec = prec + np.outer(y, y) / noise
            shift = shift + (target[k] - b0 - vm[video[k], -1]) * y / noise
        x = np.linalg.solve(prec, shift)
        pred = b0 + x[:-1] @ vm[video[e], :-1] + x[-1] + vm[video[e], -1]
        errs.append((target[e] - pred) ** 2)
    return float(np.mean(errs))


def test_forecast_errors_fit_each_user_without_the_event() -> None:
    rng = np.random.default_rng(0)
    n, d, n_users, n_videos = 200, 3, 25, 15
    user = np.sort(rng.integers(0, n_users, size=n))
    rng.shuffle(user)
    video = rng.integers(0, n_videos, size=n)
    true_v = rng.normal(0, 0.7, size=(n_videos, d))
    true_u = rng.normal(0, 0.7, size=(n_users, d))
    # The model's structure: taste u.v plus a user bias and a video bias (the last slots).
    taste = (true_u[user, :-1] * true_v[video, :-1]).sum(-1)
    target = taste + true_u[user, -1] + true_v[video, -1] + rng.normal(0, 0.3, size=n)
    held = holdout_mask(user, np.arange(n, dtype=float), 100.0, share=1.0)
    pm, ps = np.zeros(d), np.full(d, 0.8)
    shrunk = 0.3 * true_v
    tables = [
        (torch.from_numpy(v), torch.zeros(n_videos, d, d, dtype=F64)) for v in (true_v, shrunk)
    ]
    b0, noise = torch.tensor(0.0, dtype=F64), torch.tensor(0.09, dtype=F64)
    errors = forecast_errors(
        torch.from_numpy(user), torch.from_numpy(video), torch.from_numpy(target), held,
        tables, b0, noise, (torch.from_numpy(pm), torch.from_numpy(ps)), True,
    )  # fmt: skip
    for err, v in zip(errors, (true_v, shrunk), strict=True):
        assert err == pytest.approx(
            _direct_forecast(user, video, target, held, v, 0.0, 0.09, pm, ps)
        )
    assert errors[0] < errors[1]  # the true videos forecast better than shrunk ones


def test_candidate_videos_are_one_sweep_pass_with_the_factor() -> None:
    rng = np.random.default_rng(1)
    w = ReplayWindow(1000)
    n = 120
    w.add(
        [f"u{k}" for k in rng.integers(0, 20, size=n)],
        rng.integers(0, 10, size=n),
        rng.normal(size=n),
        clock=5.0,
    )
    arrays = w.arrays()
    d = 3
    rows = torch.arange(10)
    vm = torch.from_numpy(rng.normal(0, 0.3, size=(10, d)))
    vc = 0.1 * torch.eye(d, dtype=F64).expand(10, d, d)
    zero_p, zero_s = torch.zeros(10, d, d, dtype=F64), torch.zeros(10, d, dtype=F64)
    prior = (torch.zeros(d, dtype=F64), torch.full((d,), 0.5, dtype=F64))
    b0, noise = torch.tensor(0.1, dtype=F64), torch.tensor(0.7, dtype=F64)
    kw = dict(user_prior=prior, video_prior=prior, biases=True, clock=5.0, effective_data_size=1e9)
    one = replay_sweep(
        arrays, rows, vm, vc, zero_p, zero_s, b0, noise, iterations=1, noise_factor=1.6, **kw
    )  # type: ignore[arg-type]
    same = replay_sweep(arrays, rows, vm, vc, zero_p, zero_s, b0, 1.6 * noise, iterations=1, **kw)  # type: ignore[arg-type]
    assert torch.allclose(one.kept_prec, same.kept_prec) and torch.allclose(
        one.kept_shift, same.kept_shift
    )
    _, event_user = np.unique(arrays[0], return_inverse=True)
    entries = HistoryEntries(
        torch.from_numpy(event_user), torch.from_numpy(arrays[1]), torch.from_numpy(arrays[2]),
        torch.ones(len(arrays[0]), dtype=F64),
    )  # fmt: skip
    prior_prec = torch.diag_embed(prior[1].pow(-2)).expand(10, d, d)
    prior_shift = torch.zeros(10, d, dtype=F64)
    [(cm, cc)] = candidate_videos(
        entries,
        int(event_user.max()) + 1,
        vm,
        vc,
        prior_prec,
        prior_shift,
        b0,
        noise,
        prior,
        True,
        (1.6,),
    )
    assert torch.allclose(torch.linalg.inv(cc), prior_prec + one.kept_prec, atol=1e-9)
    assert torch.allclose(
        (torch.linalg.inv(cc) @ cm.unsqueeze(-1)).squeeze(-1), one.kept_shift, atol=1e-9
    )


def test_step_moves_towards_the_better_candidate_within_bounds() -> None:
    assert step_log_factor(0.0, (1.0, 0.9), 0.05, 0.7) == pytest.approx(0.05)
    assert step_log_factor(0.0, (0.9, 1.0), 0.05, 0.7) == pytest.approx(-0.05)
    assert step_log_factor(0.3, (1.0, 1.0), 0.05, 0.7) == pytest.approx(0.3)
    assert step_log_factor(0.69, (1.0, 0.9), 0.05, 0.7) == pytest.approx(0.7)
    assert step_log_factor(-0.69, (0.9, 1.0), 0.05, 0.7) == pytest.approx(-0.7)
    with pytest.raises(ValueError, match="sweep_noise_probe"):
        HPMFConfig(sweep_noise_probe=1.0)


def test_a_sweep_keeps_its_own_videos_and_one_more_pass_ordered_by_factor() -> None:
    rng = np.random.default_rng(2)
    w = ReplayWindow(1000)
    n, d = 150, 3
    w.add(
        [f"u{k}" for k in rng.integers(0, 25, size=n)],
        rng.integers(0, 12, size=n),
        rng.normal(size=n),
        clock=3.0,
    )
    rows = torch.arange(12)
    vm = torch.from_numpy(rng.normal(0, 0.3, size=(12, d)))
    vc = 0.1 * torch.eye(d, dtype=F64).expand(12, d, d)
    zero_p, zero_s = torch.zeros(12, d, d, dtype=F64), torch.zeros(12, d, dtype=F64)
    prior = (torch.zeros(d, dtype=F64), torch.full((d,), 0.5, dtype=F64))
    kw = dict(
        user_prior=prior,
        video_prior=prior,
        biases=True,
        clock=3.0,
        effective_data_size=1e9,
        iterations=2,
    )
    args = (
        w.arrays(),
        rows,
        vm,
        vc,
        zero_p,
        zero_s,
        torch.tensor(0.0, dtype=F64),
        torch.tensor(0.8, dtype=F64),
    )
    up = replay_sweep(*args, noise_factor=1.1, probe=1.25, **kw)  # type: ignore[arg-type]
    down = replay_sweep(*args, noise_factor=1.1, probe=0.8, **kw)  # type: ignore[arg-type]
    assert up.probe_errors is None and up.candidates is not None and down.candidates is not None
    own_mean, _, _ = gaussian_posterior(
        torch.diag_embed(prior[1].pow(-2)).expand(12, d, d), zero_s, up.kept_prec, up.kept_shift
    )
    (lo_up, _), (hi_up, _) = up.candidates[1]
    (lo_down, _), (hi_down, _) = down.candidates[1]
    assert torch.allclose(lo_up, own_mean) and torch.allclose(hi_down, own_mean)
    assert not torch.allclose(hi_up, own_mean, atol=1e-4) and not torch.allclose(
        lo_down, hi_up, atol=1e-4
    )
    # The next sweep scores them on the users who came back.
    w.add([f"u{k}" for k in range(5)], rng.integers(0, 12, size=5), rng.normal(size=5), clock=4.0)
    kw["clock"] = 4.0
    later = replay_sweep(
        w.arrays(), *args[1:], noise_factor=1.1, probe=0.8, previous=up.candidates, **kw
    )  # type: ignore[arg-type]
    assert later.probe_errors is not None and len(later.probe_errors) == 2


def test_the_factor_is_learned_in_a_stream_and_kept_in_the_state() -> None:
    from model.simulate import SimConfig, simulate

    sim = simulate(
        SimConfig(days=2, users_per_day=600, n_videos=80, n_factors=3, heavy_fraction=0.3, seed=4)
    )
    cfg = HPMFConfig(
        n_factors=3, replay_warmup_events=1000, replay_interval_min=500, transform="log1p"
    )
    m = OnlineHPMF(cfg)
    from model.evaluate import run_stream

    run_stream(m, sim.user_ids.tolist(), sim.video_ids.tolist(), sim.values, batch_size=64)
    assert m.sweeps_folded >= 4
    assert m.sweep_log_noise != 0.0 and abs(m.sweep_log_noise) <= cfg.sweep_noise_bound
    state = m.state_dict()
    again = OnlineHPMF(cfg)
    again.load_state_dict(state)
    assert again.sweep_log_noise == m.sweep_log_noise
    off = OnlineHPMF(HPMFConfig(**{**cfg.to_dict(), "sweep_noise_learning": False}))
    run_stream(off, sim.user_ids.tolist(), sim.video_ids.tolist(), sim.values, batch_size=64)
    assert off.sweep_log_noise == 0.0
