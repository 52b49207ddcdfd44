"""Bad inputs to the model raise clear errors (the message says what and where)."""

from __future__ import annotations

import numpy as np
import pytest

from model.batch import Batch
from model.config import HPMFConfig
from model.evaluate import ladder_config, run_stream
from model.online import OnlineHPMF
from model.transform import forward, to_original_units


def test_unknown_transform() -> None:
    with pytest.raises(
        ValueError, match=r"unknown transform 'sqrt'; choose one of: identity, log1p"
    ):
        HPMFConfig(transform="sqrt")
    with pytest.raises(ValueError, match="unknown transform 'log'"):
        forward("log", np.ones(2))
    with pytest.raises(ValueError, match="unknown transform"):
        to_original_units("exp", np.ones(1), np.ones(1))


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"global_mean_prior": float("nan")}, "global_mean_prior must be finite, got nan"),
        ({"svi_interval_growth": -1.0}, "svi_interval_growth >= 0"),
        ({"svi_interval_max": 0}, "svi_interval_max >= 1"),
    ],
)
def test_bad_schedule_and_prior_settings(setting: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HPMFConfig(**setting)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values(bad: float) -> None:
    with pytest.raises(ValueError, match=r"finite; event 1 has"):
        Batch.of(["a", "b"], ["x", "y"], [1.0, bad])


def test_negative_and_absurd_values() -> None:
    with pytest.raises(ValueError, match=r"must lie in \[0, inf\]; event 0 has -2.0"):
        Batch.of(["a"], ["x"], [-2.0])
    model = OnlineHPMF(HPMFConfig(n_factors=2, max_value=100.0))
    with pytest.raises(ValueError, match="exceeds max_value"):
        model.learn(Batch.of(["a"], ["x"], [1000.0]), {})


def test_wrong_lengths_and_shapes() -> None:
    with pytest.raises(ValueError, match="differ in length: 2 users, 1 videos, 2 values"):
        Batch.of(["a", "b"], ["x"], [1.0, 2.0])
    with pytest.raises(ValueError, match="one-dimensional"):
        Batch.of(["a"], ["x"], np.ones((1, 1)))
    model = OnlineHPMF(HPMFConfig(n_factors=2))
    with pytest.raises(ValueError, match="2 users but 1 videos"):
        model.predict([None, None], ["x"])
    with pytest.raises(TypeError, match="takes a model.batch.Batch"):
        model.learn((["a"], ["x"], [1.0]), {})  # type: ignore[arg-type]


def test_bad_config_values() -> None:
    for kw in (
        {"n_factors": -1},
        {"user_forgetting": 0.0},
        {"effective_data_size": 0.0},
        {"history_size": 0},
        {"prior_scale": 0.0},
        {"svi_lr": 0.0},
    ):
        with pytest.raises(ValueError):
            HPMFConfig(**kw)


def test_harness_rejects_bad_streams() -> None:
    model = OnlineHPMF(ladder_config("hpmf", n_factors=2))
    with pytest.raises(ValueError, match="unknown protocol 'kfold'"):
        run_stream(model, ["a"], ["x"], np.ones(1), protocol="kfold")
    with pytest.raises(ValueError, match="differ in length"):
        run_stream(model, ["a", "b"], ["x"], np.ones(2))
    with pytest.raises(ValueError, match="finite; event 1 has nan"):
        run_stream(model, ["a", "b"], ["x", "y"], np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        run_stream(model, ["a"], ["x"], np.ones(1), batch_size=0)
    with pytest.raises(ValueError, match="train_fraction"):
        run_stream(model, ["a"], ["x"], np.ones(1), protocol="holdout", train_fraction=1.0)
    with pytest.raises(ValueError, match="must lie in"):
        run_stream(model, ["a"], ["x"], np.array([-1.0]))
    with pytest.raises(ValueError, match="unknown model 'svd'"):
        ladder_config("svd")
