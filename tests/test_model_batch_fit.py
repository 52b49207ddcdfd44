"""Batch fit (epochs of minibatched learn) and ``hpmf fit``'s checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from model.batch_fit import batch_config, fit
from model.config import HPMFConfig
from model.online import OnlineHPMF
from model.simulate import SimConfig, simulate
from streamer.cli import fit as fit_cli
from streamer.files.events_file import write_events


@pytest.fixture(scope="module")
def sim():  # noqa: ANN201
    return simulate(
        SimConfig(days=1, users_per_day=500, n_videos=40, n_factors=3, light_mean_views=5, seed=21)
    )


def test_epochs_reduce_training_error(sim) -> None:  # noqa: ANN001
    model = OnlineHPMF(batch_config(HPMFConfig(n_factors=3, transform="log1p"), len(sim)))
    hist = fit(model, sim.user_ids, sim.video_ids, sim.values, epochs=3, batch_size=256)
    assert len(hist) == 3 and model.n_seen == 3 * len(sim)
    assert hist[2] < hist[0]
    assert model.config.effective_data_size == float(len(sim))


def test_fit_rejects_bad_arguments(sim) -> None:  # noqa: ANN001
    model = OnlineHPMF(HPMFConfig(n_factors=2))
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        fit(model, sim.user_ids, sim.video_ids, sim.values, epochs=0)
    with pytest.raises(ValueError, match="differ in length"):
        fit(model, sim.user_ids[:3], sim.video_ids[:2], sim.values[:3])
    with pytest.raises(ValueError, match="n_events must be >= 1"):
        batch_config(HPMFConfig(), 0)


def test_fit_cli_writes_a_loadable_checkpoint(sim, tmp_path: Path) -> None:  # noqa: ANN001
    from model.checkpoint import load_checkpoint

    events = tmp_path / "sim.tsv"
    write_events(events, sim.user_ids, sim.video_ids, sim.values, sim.timestamps)
    ckpt = tmp_path / "m.ckpt"
    parser = argparse.ArgumentParser()
    fit_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            str(events),
            "--out",
            str(ckpt),
            "--epochs",
            "2",
            "--factors",
            "3",
            "--transform",
            "log1p",
            "--quiet",
        ]
    )
    assert fit_cli.run(args) == 0
    model = load_checkpoint(ckpt)
    assert model.config.n_factors == 3 and model.config.transform == "log1p"
    assert model.config.effective_data_size == float(len(sim)) and model.n_seen == 2 * len(sim)
    assert set(model.video_ids) == set(sim.video_ids.tolist())
    mean, std = model.predict([None] * 5, sim.video_ids[:5].tolist())
    assert np.isfinite(mean).all() and (std > 0).all()
    assert abs(model.global_mean - np.log1p(sim.values).mean()) < 0.5
