"""A replay sweep computes its window's per-pair weight sums once and shares
them between its passes (model.local_step.local_pairs, model.video_step.video_pairs):
the same numbers, bit for bit, as every pass computing its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import model.replay_sweep as replay_sweep_module
import model.sweep_noise as sweep_noise_module
from model.local_step import HistoryEntries, local_pairs
from model.replay_sweep import SweepResult, replay_sweep, sorted_positions
from model.replay_window import ReplayWindow
from model.video_step import video_pairs

F64 = torch.float64


def _sweep(arrays: tuple, clock: float, previous: object = None) -> SweepResult:
    rng = np.random.default_rng(5)
    n_v, d = 14, 3
    rows = torch.arange(n_v)
    prior = (torch.zeros(d, dtype=F64), torch.full((d,), 0.5, dtype=F64))
    return replay_sweep(
        arrays,
        rows,
        torch.from_numpy(rng.normal(0, 0.3, size=(n_v, d))),
        0.1 * torch.eye(d, dtype=F64).expand(n_v, d, d),
        0.05 * torch.eye(d, dtype=F64).expand(n_v, d, d),
        torch.from_numpy(rng.normal(0, 0.1, size=(n_v, d))),
        torch.tensor(0.3, dtype=F64),
        torch.tensor(0.8, dtype=F64),
        user_prior=prior,
        video_prior=prior,
        biases=True,
        clock=clock,
        effective_data_size=40.0,  # the decay weights are not all 1
        iterations=3,
        n_drop=20,
        noise_factor=1.1,
        probe=1.25,
        holdout=0.5,
        previous=previous,  # type: ignore[arg-type]
    )


def _window() -> ReplayWindow:
    rng = np.random.default_rng(4)
    w = ReplayWindow(1000)
    for clock in (1.0, 2.0, 3.0):
        n = 90
        w.add(
            [f"u{k}" for k in rng.integers(0, 30, size=n)],
            rng.integers(0, 14, size=n),
            rng.normal(size=n),
            clock=clock,
        )
    return w


def _results() -> list[SweepResult]:
    w = _window()
    first = _sweep(w.arrays(), 3.0)
    rng = np.random.default_rng(6)
    w.add([f"u{k}" for k in range(8)], rng.integers(0, 14, size=8), rng.normal(size=8), clock=4.0)
    return [first, _sweep(w.arrays(), 4.0, previous=first.candidates)]


def test_shared_pairs_give_the_sweep_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _results()
    # The reference: no pairs handed down (sweep_noise builds every shared
    # pair table: window_pairs and forecast_errors), so every pass computes its own.
    monkeypatch.setattr(sweep_noise_module, "local_pairs", lambda *a, **k: None)
    monkeypatch.setattr(sweep_noise_module, "video_pairs", lambda *a, **k: None)
    slow = _results()
    assert fast[1].probe_errors is not None and fast[1].candidates is not None
    for a, b in zip(fast, slow, strict=True):
        for t, u in [
            (a.kept_prec, b.kept_prec),
            (a.kept_shift, b.kept_shift),
            (a.dropped_prec, b.dropped_prec),
            (a.dropped_shift, b.dropped_shift),
        ]:
            assert torch.equal(t, u)
        assert a.probe_errors == b.probe_errors
        assert a.candidates is not None and b.candidates is not None
        for (m1, c1), (m2, c2) in zip(a.candidates[1], b.candidates[1], strict=True):
            assert torch.equal(m1, m2) and torch.equal(c1, c2)


def test_pairs_are_the_sums_per_pair() -> None:
    rng = np.random.default_rng(7)
    e, n_u, n_v = 60, 5, 9
    user = torch.from_numpy(rng.integers(0, n_u, size=e))
    video = torch.from_numpy(rng.integers(2, n_v, size=e))  # rows 0 and 1 unused
    target = torch.from_numpy(rng.normal(size=e))
    weight = torch.from_numpy(rng.uniform(0.2, 1.0, size=e))
    b0 = torch.tensor(0.4, dtype=F64)
    lp = local_pairs(HistoryEntries(user, video, target, weight), n_u, n_v, b0)
    assert lp.uniq.tolist() == sorted(set(video.tolist()))
    vw, vr = video_pairs(video, n_v, n_u, target, b0, weight, user)
    for k in range(e):
        j = lp.uniq.tolist().index(int(video[k]))
        assert lp.weights[user[k], j] > 0 and vw[video[k], user[k]] > 0
    want_w = torch.zeros(n_u, len(lp.uniq), dtype=F64)
    want_r = torch.zeros(n_u, len(lp.uniq), dtype=F64)
    for k in range(e):
        j = lp.uniq.tolist().index(int(video[k]))
        want_w[user[k], j] += weight[k]
        want_r[user[k], j] += weight[k] * (target[k] - b0)
    assert torch.allclose(lp.weights, want_w) and torch.allclose(lp.weighted_resid, want_r)
    assert torch.allclose(vw[lp.uniq].T, want_w) and torch.allclose(vr[lp.uniq].T, want_r)


def test_table_lookups_give_the_sweep_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _results()
    # The reference: the sorting versions (np.searchsorted, torch.unique).
    monkeypatch.setattr(replay_sweep_module, "sorted_positions", np.searchsorted)
    monkeypatch.setattr(
        replay_sweep_module, "unique_rows", lambda x, bound: torch.unique(x, return_inverse=True)
    )
    slow = _results()
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a.kept_prec, b.kept_prec) and torch.equal(a.kept_shift, b.kept_shift)
        assert torch.equal(a.dropped_prec, b.dropped_prec)
        assert a.probe_errors == b.probe_errors


def test_sorted_positions_is_searchsorted() -> None:
    rng = np.random.default_rng(8)
    for _ in range(20):
        rows = np.unique(rng.integers(0, 50, size=rng.integers(1, 30)))
        inside = rng.choice(rows, size=40)
        assert np.array_equal(sorted_positions(rows, inside), np.searchsorted(rows, inside))
        anything = rng.integers(-3, 60, size=40)
        assert np.array_equal(sorted_positions(rows, anything), np.searchsorted(rows, anything))
