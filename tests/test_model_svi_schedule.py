"""When the Pyro SVI step on the hyper-parameters runs: often early, then spaced out."""

from __future__ import annotations

import numpy as np

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF


def _batch(rng: np.random.Generator, n: int) -> Batch:
    return Batch.of(
        [f"u{x}" for x in rng.integers(0, 50, n)],
        [f"v{x}" for x in rng.integers(0, 20, n)],
        rng.uniform(1, 5, n),
    )


def test_interval_starts_at_the_minimum_grows_with_the_stream_and_is_capped() -> None:
    m = OnlineHPMF(
        HPMFConfig(n_factors=2, svi_min_events=100, svi_interval_growth=0.5, svi_interval_max=400)
    )
    assert m.svi_interval() == 100
    m.n_seen = 300
    assert m.svi_interval() == 150
    m.n_seen = 10_000
    assert m.svi_interval() == 400


def test_a_step_runs_each_time_the_buffer_reaches_the_interval() -> None:
    rng = np.random.default_rng(0)
    m = OnlineHPMF(
        HPMFConfig(n_factors=2, svi_min_events=100, svi_interval_growth=0.0, svi_interval_max=100)
    )
    states: dict = {}
    steps = []
    for _ in range(7):
        states.update(m.learn(_batch(rng, 40), states))
        steps.append(m._opt.t)
    # 40 events a batch, a step once 100 have gathered: after batches 3 and 6.
    assert steps == [0, 0, 1, 1, 1, 2, 2]
