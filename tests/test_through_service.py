"""Accuracy through the service equals the harness (issue 12), on a small
simulated stream against the real local Kafka and Redis.

Each event is scored against the posterior the public reader served just
before it (streamer/evaluation/through_service.py), then compared with the harness
behind ``hpmf evaluate --transform log1p --batch-size 1`` on the same events.

Two runs:

* **lockstep** (the learner publishes after every event and the scorer waits
  for it; replay sweeps folded when due, as in the harness): nothing differs
  but float32 storage in Redis, so the served predictions must equal the
  harness's per event (``LOCKSTEP_TOL``).
* **the service as deployed** (the learner's default publish cadence, every
  20 batches or 1 s; background replay sweeps, which start at 10,000 events,
  beyond this stream): the reader's globals lag the ones the harness predicts
  with by up to 20 events, which moves single predictions (by up to 0.49 on
  the log1p scale on this stream) but the RMSE far less: measured -0.0005
  (3 runs; -0.0004 once the noise came from served errors; paired standard
  error 0.0008), against a sampling noise (standard error) of that RMSE of
  0.018. ``RMSE_TOL`` = 0.005: ten times what was measured, under a third of
  the noise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.service_bench import TRANSFORM, through_service
from model.simulate import PRESETS, SimConfig, simulate
from streamer.evaluation.through_service import (
    ASYNC_FIELDS,
    LOCKSTEP_SETTINGS,
    SERVICE_SETTINGS,
    config_mismatch,
)
from streamer.files.events_file import write_events
from streamer.service.settings import StreamSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RMSE_TOL = 0.005
"""|RMSE through the service - the harness's| on the same events, publish lag included."""
LOCKSTEP_TOL = 1e-4
"""Per-event |served mean - harness mean| without the publish lag (float32 storage: ~1e-7)."""
SMALL = {**PRESETS["churn60"], "days": 3, "users_per_day": 400, "n_videos": 80}
"""churn60's users, taste and noise, scaled down: ~2,500 events, 1,200 users, 80 videos."""


@pytest.fixture(scope="module")
def small_stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sim = simulate(SimConfig(**SMALL))  # type: ignore[arg-type]
    path = tmp_path_factory.mktemp("through") / "small.tsv"
    write_events(path, sim.user_ids, sim.video_ids, sim.values, sim.timestamps)
    return path


def test_worker_model_is_the_harness_model() -> None:
    assert config_mismatch(StreamSettings(**SERVICE_SETTINGS, **LOCKSTEP_SETTINGS), TRANSFORM) == []
    # As deployed, only when the replay sweeps land differs.
    assert config_mismatch(StreamSettings(**SERVICE_SETTINGS), TRANSFORM) == list(ASYNC_FIELDS)
    # The service's defaults alone differ in two operating limits too (why SERVICE_SETTINGS sets them).
    assert config_mismatch(StreamSettings(), TRANSFORM) == [
        "max_value",
        "max_videos",
        *ASYNC_FIELDS,
    ]


@pytest.mark.timeout(120)
def test_lockstep_service_equals_harness_per_event(
    small_stream: Path, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    # 700 events: the learner's first SVI step (at 512 events) is inside;
    # its replay sweeps (from 10,000) only in the benchmark's lockstep run.
    r = through_service(
        small_stream,
        700,
        tmp_path,
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        progress=False,
        lockstep=True,
    )
    assert (
        r["n_events"] == 700 and r["n_no_globals"] == 1
    )  # only the first event comes before any globals
    # Not served: a video's first event (the global record holds no video prior); the rest are.
    assert r["n_unknown_video"] <= SMALL["n_videos"] and r["n_scored"] == 699 - r["n_unknown_video"]
    assert r["history_mismatches"] == 0  # each posterior held exactly the user's earlier events
    assert r["globals_lag_max"] == 0
    assert r["max_abs_diff"] < LOCKSTEP_TOL, r
    assert abs(r["rmse_diff"]) < LOCKSTEP_TOL, r


@pytest.mark.timeout(180)
def test_service_rmse_equals_harness_within_tolerance(
    small_stream: Path, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    r = through_service(
        small_stream, 2000, tmp_path, bootstrap=kafka_bootstrap, redis_url=redis_url, progress=False
    )
    assert r["n_events"] == 2000 and r["n_scored"] > 1800, r
    assert r["history_mismatches"] == 0
    # The publish lag is there (else this run tests nothing the lockstep one does not) and bounded.
    assert r["globals_lag_mean"] > 0 and r["globals_lag_max"] <= 20
    assert abs(r["rmse_diff"]) <= RMSE_TOL, r
    # The harness on every event (hpmf evaluate's figure) is close too: the
    # events the service cannot serve are few here.
    assert abs(r["sim_rmse"] - r["harness_sim_rmse"]) <= 0.02, r
