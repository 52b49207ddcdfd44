"""The simulator: shapes, sparsity, traffic shape, determinism, and the CLI's files."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from model.simulate import DAY, EPOCH, SimConfig, simulate
from streamer.cli import simulate as simulate_cli
from streamer.files.events_file import read_events


@pytest.fixture(scope="module")
def sim():  # noqa: ANN201
    return simulate(SimConfig(days=3, seed=11))


def test_shapes_and_layout(sim) -> None:  # noqa: ANN001
    t = sim.truth
    n_users = 3 * SimConfig().users_per_day
    k = SimConfig().n_factors
    assert t.U.shape == (n_users, k) and t.V.shape == (565, k)
    assert t.user_factors().shape == (n_users, k + 1) and t.video_factors().shape == (565, k + 1)
    assert t.mu_u.shape == t.s_u.shape == (k + 1,)
    n = len(sim)
    for col in (
        sim.user_ids,
        sim.video_ids,
        sim.values,
        sim.timestamps,
        sim.user_rows,
        sim.log_value,
    ):
        assert col.shape == (n,)
    assert (t.user_ids[sim.user_rows] == sim.user_ids).all()
    assert (t.video_ids[sim.video_rows] == sim.video_ids).all()


def test_values_follow_the_model(sim) -> None:  # noqa: ANN001
    t = sim.truth
    np.testing.assert_allclose(sim.values, np.maximum(np.expm1(sim.log_value), 0.0))
    resid = sim.log_value - t.mean(sim.user_rows, sim.video_rows)
    assert abs(resid.std() - t.sigma) < 0.03 and abs(resid.mean()) < 0.03
    assert (sim.values >= 0).all() and (sim.values == 0).mean() < 0.02  # clipping is rare
    assert 10 < np.median(sim.values) < 40  # minutes watched


def test_traffic_shape(sim) -> None:  # noqa: ANN001
    assert 0.003 < sim.density() < 0.005  # ~0.4% of user x video observed
    ts = sim.timestamps
    assert (np.diff(ts) >= 0).all() and ts[0] >= EPOCH and ts[-1] < EPOCH + 3 * DAY
    # skewed popularity: the top 5% of videos draw far more than 5% of views
    counts = np.sort(np.bincount(sim.video_rows, minlength=565))[::-1]
    assert counts[:28].sum() / counts.sum() > 0.3
    # churn: most users watch a few videos, a minority binge
    per_user = np.bincount(sim.user_rows)
    assert np.median(per_user) <= 2 and (per_user <= 3).mean() > 0.8
    assert 0.01 < (per_user >= 6).mean() < 0.15 and per_user.max() >= 12
    # each user watches distinct videos (a history sums repeats; the truth has none)
    pairs = sim.user_rows.astype(np.int64) * 1000 + sim.video_rows
    assert len(np.unique(pairs)) == len(pairs)
    # most users are new each day: each day's users mostly first appear that day
    day = ((ts - EPOCH) // DAY).astype(int)
    first_day = {}
    for u, dd in zip(sim.user_rows.tolist(), day.tolist(), strict=True):
        first_day.setdefault(u, dd)
    last = [u for u, dd in zip(sim.user_rows.tolist(), day.tolist(), strict=True) if dd == 2]
    assert np.mean([first_day[u] == 2 for u in set(last)]) > 0.8


def test_deterministic_given_seed() -> None:
    a, b = simulate(SimConfig(days=1, seed=4)), simulate(SimConfig(days=1, seed=4))
    c = simulate(SimConfig(days=1, seed=5))
    assert (a.user_ids == b.user_ids).all() and (a.video_ids == b.video_ids).all()
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.truth.U, b.truth.U)
    assert len(a) != len(c) or not np.array_equal(a.values, c.values)


def test_no_biases_option() -> None:
    s = simulate(SimConfig(days=1, users_per_day=100, n_factors=2, biases=False))
    assert s.truth.user_factors().shape[1] == 2 and (s.truth.video_bias == 0).all()


@pytest.mark.parametrize(
    "bad",
    [
        {"days": 0},
        {"n_factors": -1},
        {"heavy_fraction": 1.5},
        {"light_mean_views": 0.5},
        {"sigma": 0.0},
    ],
)
def test_bad_config_raises(bad: dict) -> None:
    with pytest.raises(ValueError):
        SimConfig(**bad)


def test_cli_writes_events_and_truth(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    out = tmp_path / "sim.tsv"
    args = parser.parse_args([str(out), "--days", "1", "--users-per-day", "300", "--seed", "7"])
    assert simulate_cli.run(args) == 0
    ev = read_events(out)
    want = simulate(SimConfig(days=1, users_per_day=300, seed=7))
    assert len(ev) == len(want)
    assert ev.user_ids.tolist() == want.user_ids.tolist()
    np.testing.assert_allclose(ev.values, want.values, atol=1e-4)
    truth = np.load(simulate_cli.truth_path(out))
    np.testing.assert_array_equal(truth["U"], want.truth.U)
    assert {
        "user_ids",
        "video_ids",
        "U",
        "V",
        "user_bias",
        "video_bias",
        "b0",
        "sigma",
        "mu_u",
        "s_u",
        "mu_v",
        "s_v",
    } <= set(truth.files)


class _Drawn(Exception):
    """Raised by the stand-in simulator with the configuration it was given."""


def _config_of(argv: list[str], monkeypatch) -> SimConfig:  # type: ignore[no-untyped-def]
    def capture(cfg: SimConfig) -> None:
        raise _Drawn(cfg)

    monkeypatch.setattr(simulate_cli, "simulate", capture)
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    with pytest.raises(_Drawn) as drawn:
        simulate_cli.run(parser.parse_args(argv))
    return drawn.value.args[0]


def test_cli_preset_replaces_defaults_and_flags_win(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = _config_of(["x.tsv", "--preset", "churn60"], monkeypatch)
    assert (cfg.days, cfg.users_per_day, cfg.n_factors, cfg.sigma) == (60, 1000, 6, 0.8)
    assert cfg.n_videos == SimConfig().n_videos  # not in the preset: the default
    # A flag wins over the preset, even when its value is the plain default.
    cfg = _config_of(["x.tsv", "--preset", "churn60", "--sigma", "0.5", "--days", "2"], monkeypatch)
    assert (cfg.days, cfg.sigma, cfg.n_factors) == (2, 0.5, 6)
    cfg = _config_of(["x.tsv", "--videos", "40", "--choice-strength", "2"], monkeypatch)
    assert (cfg.n_videos, cfg.choice_strength, cfg.days) == (40, 2.0, SimConfig().days)


def test_taste_driven_choices_follow_affinity_and_the_truth_is_saved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from model.simulate import SimConfig, simulate
    from streamer.cli.simulate import truth_path

    base = dict(days=1, users_per_day=600, n_videos=80, heavy_fraction=0.3, seed=5)
    flat = simulate(SimConfig(**base))
    taste = simulate(SimConfig(**base, choice_strength=2.0))
    t = taste.truth
    assert t.choice_strength == 2.0 and flat.truth.choice_strength == 0.0

    # the affinity u_i . v_j of what was started, in units of its sd over all pairs
    def started_affinity(sim):  # type: ignore[no-untyped-def]
        tr = sim.truth
        return float(np.mean((tr.U[sim.user_rows] * tr.V[sim.video_rows]).sum(-1)) / tr.affinity_sd)

    assert started_affinity(taste) > started_affinity(flat) + 0.8
    p = t.choice_probabilities(np.array([0, 1]))
    assert p.shape == (2, 80) and np.allclose(p.sum(1), 1.0)
    assert not np.allclose(p[0], p[1])  # different tastes, different choice probabilities
    # the CLI saves what tests and the demo need to check personalisation
    from streamer import cli

    out = tmp_path / "s.tsv"
    assert (
        cli.main(
            [
                "simulate",
                str(out),
                "--days",
                "1",
                "--users-per-day",
                "50",
                "--videos",
                "30",
                "--choice-strength",
                "1.5",
            ]
        )
        == 0
    )
    saved = np.load(truth_path(out))
    assert float(saved["choice_strength"]) == 1.5 and float(saved["affinity_sd"]) > 0
    assert cli.main(["simulate", str(out), "--choice-strength", "-1"]) == 2
