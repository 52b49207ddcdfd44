"""The evaluation harness: protocol semantics, metrics, the JSON report and plot."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from model.batch import Batch
from model.config import HPMFConfig
from model.evaluate import (
    LADDER,
    METRICS,
    StreamResult,
    by_history,
    ladder_config,
    metrics,
    rolling_rmse,
    run_stream,
)
from model.online import OnlineHPMF
from model.posterior import UserState
from model.simulate import SimConfig, simulate
from streamer.cli import evaluate as evaluate_cli
from streamer.files.events_file import write_events

EXACT_METRICS = [
    "rmse",
    "mae",
    "nll",
    "coverage90",
    "rmse_new",
    "rmse_lt5",
    "rmse_lt20",
    "events_per_s",
]


class Recorder:
    """A stand-in model: predict returns (events learned so far, 1 + the user's
    learned events according to the state it was handed)."""

    def __init__(self) -> None:
        self.config = HPMFConfig(n_factors=1)
        self.n_learned = 0

    def predict(
        self, states: Sequence[UserState | None], video_ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        mean = np.full(len(states), float(self.n_learned))
        std = np.array([1.0 + (0 if s is None else s.n_events) for s in states])
        return mean, std

    def learn(
        self, batch: Batch, states: Mapping[str, UserState | None], served: object = None
    ) -> dict[str, UserState]:
        self.n_learned += len(batch)
        out: dict[str, UserState] = {}
        for u in batch.user_ids:
            old = out.get(u) or states.get(u)
            out[u] = UserState(n_events=(old.n_events if old else 0) + 1)
        return out


USERS = ["a", "b", "a", "c", "a", "b", "d", "a", "c", "a"]


def test_prequential_predicts_each_minibatch_before_learning_it() -> None:
    model = Recorder()
    res = run_stream(model, USERS, ["v"] * 10, np.ones(10), batch_size=3)  # type: ignore[arg-type]
    assert model.n_learned == 10 and len(res) == 10
    np.testing.assert_array_equal(res.index, np.arange(10))
    # batch k is predicted when exactly 3k events were learned
    np.testing.assert_array_equal(res.mean, [0, 0, 0, 3, 3, 3, 6, 6, 6, 9])
    # the state handed to predict knows only earlier *minibatches* of that user
    np.testing.assert_array_equal(res.std - 1, [0, 0, 0, 0, 2, 1, 0, 3, 1, 4])
    # while "earlier events" counts the stream, same minibatch included
    np.testing.assert_array_equal(res.n_prior, [0, 0, 1, 0, 2, 1, 0, 3, 1, 4])


def test_holdout_learns_only_the_training_part() -> None:
    model = Recorder()
    res = run_stream(
        model,
        USERS,
        ["v"] * 10,
        np.ones(10),
        batch_size=3,  # type: ignore[arg-type]
        protocol="holdout",
    )
    assert model.n_learned == 8  # 80%: no batch straddles the split, test never learned
    np.testing.assert_array_equal(res.index, [8, 9])
    np.testing.assert_array_equal(res.mean, [8, 8])
    # users' states and "earlier events" come from the training part only
    np.testing.assert_array_equal(res.std - 1, [1, 4])  # "c" once, "a" 4 times in training
    np.testing.assert_array_equal(res.n_prior, [1, 4])
    assert res.n_events == 10


def test_metrics_formulas() -> None:
    y = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    m = np.array([0.5, 1.0, 1.0, 3.0, 6.0])
    s = np.array([1.0, 0.5, 0.5, 2.0, 1.0])
    r = StreamResult(np.arange(5), y, m, s, np.array([0, 3, 4, 10, 25]), 10, 4.0)
    got = metrics(r)
    err = y - m
    assert got["rmse"] == pytest.approx(math.sqrt(np.mean(err**2)))
    assert got["mae"] == pytest.approx(np.mean(np.abs(err)))
    want_nll = np.mean(
        [
            -math.log(math.exp(-(e**2) / (2 * v**2)) / math.sqrt(2 * math.pi * v**2))
            for e, v in zip(err, s, strict=True)
        ]
    )
    assert got["nll"] == pytest.approx(want_nll)
    assert got["coverage90"] == pytest.approx(3 / 5)  # |err| <= 1.6449 s: events 0, 1, 3
    assert got["rmse_new"] == pytest.approx(0.5)
    assert got["rmse_lt5"] == pytest.approx(math.sqrt((0.25 + 0 + 1) / 3))
    assert got["rmse_lt20"] == pytest.approx(math.sqrt((0.25 + 0 + 1 + 0) / 4))
    assert got["events_per_s"] == pytest.approx(2.5)
    assert list(got) == EXACT_METRICS == list(METRICS)
    empty = metrics(StreamResult(np.arange(1), y[:1], m[:1], s[:1], np.array([7]), 1, 1.0))
    assert math.isnan(empty["rmse_new"]) and math.isnan(empty["rmse_lt5"])


def test_rolling_and_binned() -> None:
    r = StreamResult(
        np.arange(6),
        np.zeros(6),
        np.array([1.0, 1, 1, 3, 3, 3]),
        np.full(6, 2.0),
        np.array([0, 1, 2, 5, 60, 0]),
        6,
        1.0,
    )
    pos, val = rolling_rmse(r, 3)
    np.testing.assert_array_equal(pos, [2, 3, 4, 5])
    np.testing.assert_allclose(val, [1.0, math.sqrt(11 / 3), math.sqrt(19 / 3), 3.0])
    bins = by_history(r)
    assert [b["n"] for b in bins] == [2, 1, 1, 1, 0, 0, 1]
    assert bins[0]["rmse"] == pytest.approx(math.sqrt((1 + 9) / 2)) and bins[0]["spread"] == 2.0
    assert math.isnan(bins[4]["rmse"])


@pytest.fixture(scope="module")
def small_sim():  # noqa: ANN201
    return simulate(SimConfig(days=1, users_per_day=600, n_videos=60, light_mean_views=4, seed=8))


def test_metrics_sane_on_a_small_simulated_stream(small_sim) -> None:  # noqa: ANN001
    sim = small_sim
    y = np.log1p(sim.values)
    res = {
        name: run_stream(
            OnlineHPMF(ladder_config(name, transform="log1p")),
            sim.user_ids,
            sim.video_ids,
            sim.values,
            batch_size=64,
        )
        for name in ("biases", "hpmf")
    }
    for name, r in res.items():
        m = metrics(r)
        np.testing.assert_allclose(r.target, y)
        assert all(math.isfinite(m[k]) for k in EXACT_METRICS), name
        assert 0 < m["mae"] <= m["rmse"] < y.std(), name  # better than the (oracle) constant
        assert 0.75 < m["coverage90"] < 0.98, name
        assert m["rmse_lt5"] <= m["rmse_new"] * 1.05 and m["events_per_s"] > 0, name
        # the second half of the stream is predicted better than the first (learning happens)
        half = len(r) // 2
        e = r.target - r.mean
        assert np.sqrt(np.mean(e[half:] ** 2)) < np.sqrt(np.mean(e[:half] ** 2)), name


@pytest.mark.parametrize("name", list(LADDER))
def test_every_ladder_rung_runs(name: str) -> None:
    cfg = ladder_config(name, transform="log1p")
    for key, value in LADDER[name].items():
        assert getattr(cfg, key) == value
    rng = np.random.default_rng(0)
    users = [f"u{k}" for k in rng.integers(0, 30, 600)]
    videos = [f"v{k}" for k in rng.integers(0, 20, 600)]
    r = run_stream(OnlineHPMF(cfg), users, videos, rng.exponential(20.0, 600), batch_size=100)
    assert np.isfinite(r.mean).all() and (r.std > 0).all()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_json_keys_exact_and_plot(small_sim, tmp_path: Path) -> None:  # noqa: ANN001
    sim = small_sim
    events = tmp_path / "sim.tsv"
    write_events(events, sim.user_ids, sim.video_ids, sim.values, sim.timestamps)
    out, png = tmp_path / "eval.json", tmp_path / "eval.png"
    args = _parse(
        [
            str(events),
            "--models",
            "biases",
            "hpmf",
            "--transform",
            "log1p",
            "--batch-size",
            "128",
            "--json",
            str(out),
            "--plot",
            str(png),
            "--limit",
            "1500",
            "--quiet",
        ]
    )
    assert evaluate_cli.run(args) == 0
    rep = json.loads(out.read_text())
    assert list(rep) == ["protocol", "batch_size", "n_events", "models"]
    assert rep["protocol"] == "prequential" and rep["batch_size"] == 128 and rep["n_events"] == 1500
    assert list(rep["models"]) == ["biases", "hpmf"]
    for m in rep["models"].values():
        assert list(m) == EXACT_METRICS
        assert all(isinstance(v, float) for v in m.values())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < png.stat().st_size < 300_000


def test_cli_holdout(small_sim, tmp_path: Path) -> None:  # noqa: ANN001
    sim = small_sim
    events = tmp_path / "sim.csv"
    write_events(events, sim.user_ids, sim.video_ids, sim.values, sim.timestamps)
    out = tmp_path / "h.json"
    args = _parse(
        [
            str(events),
            "--protocol",
            "holdout",
            "--models",
            "pmf",
            "--transform",
            "log1p",
            "--json",
            str(out),
            "--quiet",
        ]
    )
    assert evaluate_cli.run(args) == 0
    rep = json.loads(out.read_text())
    assert rep["protocol"] == "holdout" and rep["n_events"] == len(sim)
    assert 0 < rep["models"]["pmf"]["rmse"] < np.log1p(sim.values).std()


def test_cli_failed_model_reported_as_nulls(
    small_sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = small_sim
    events = tmp_path / "sim.tsv"
    write_events(
        events, sim.user_ids[:300], sim.video_ids[:300], sim.values[:300], sim.timestamps[:300]
    )
    real = evaluate_cli._new_model

    def flaky(name: str, args: argparse.Namespace) -> OnlineHPMF:
        model = real(name, args)
        if name == "pmf":

            def boom(*a: object, **k: object) -> None:
                raise RuntimeError("synthetic failure")

            model.learn = boom  # type: ignore[method-assign]
        return model

    monkeypatch.setattr(evaluate_cli, "_new_model", flaky)
    out = tmp_path / "e.json"
    args = _parse([str(events), "--models", "biases", "pmf", "--json", str(out), "--quiet"])
    assert evaluate_cli.run(args) == 1
    rep = json.loads(out.read_text())
    assert list(rep["models"]["pmf"]) == EXACT_METRICS
    assert all(v is None for v in rep["models"]["pmf"].values())
    assert rep["models"]["biases"]["rmse"] > 0
    assert "model 'pmf' failed: RuntimeError: synthetic failure" in capsys.readouterr().err


def test_cli_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,video_id,value,timestamp\nu,v,lots,1\n")
    assert evaluate_cli.run(_parse([str(bad), "--quiet"])) == 2
    assert f"{bad}:2: value 'lots' is not a number" in capsys.readouterr().err
