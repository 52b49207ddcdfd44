"""The served user prior can have narrower taste scales than the one the
replay sweeps fit users with (HPMFConfig.serving_taste_scale,
model.serving_prior): the local step, new users and the published snapshot use
the serving scales; the sweeps, which teach the videos taste, keep prior_scale."""

from __future__ import annotations

import numpy as np
import pytest

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF
from model.posterior import UserState


def _stream(n: int, seed: int = 0) -> tuple[list[str], list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    users = [f"u{int(k)}" for k in rng.integers(0, 40, n)]
    videos = [f"v{int(k)}" for k in rng.integers(0, 25, n)]
    return users, videos, rng.uniform(1, 5, n)


def test_serving_scale_reaches_new_users_and_the_local_step_not_the_sweeps() -> None:
    cfg = HPMFConfig(
        n_factors=3, serving_taste_scale=0.2, replay_warmup_events=200, replay_interval_min=100
    )
    model = OnlineHPMF(cfg)
    users, videos, values = _stream(400)
    states: dict[str, UserState] = {}
    for k in range(0, 400, 20):
        states.update(
            model.learn(Batch.of(users[k : k + 20], videos[k : k + 20], values[k : k + 20]), states)
        )
    assert model.sweeps_folded > 0
    _, served = model._user_prior()
    _, swept = model._user_prior(serving=False)
    np.testing.assert_allclose(served.numpy()[:3], 0.2)
    np.testing.assert_allclose(swept.numpy()[:3], 0.5)
    assert served[3] == swept[3]  # the learned bias scale is the same in both
    taste_var = np.diag(model.pooled_prior().cov)[:3]
    assert np.all(taste_var >= 0.04) and np.all(taste_var < 0.25 * 0.5)
    # The sweep's inputs carry the sweeps' prior.
    job = model._start_sweep()
    assert job is not None
    np.testing.assert_allclose(job.inputs.user_prior[1][:3], 0.5)


def test_a_worker_on_the_snapshot_serves_what_the_learner_serves() -> None:
    cfg = HPMFConfig(n_factors=3, serving_taste_scale=0.2)
    learner = OnlineHPMF(cfg)
    users, videos, values = _stream(300, seed=1)
    states = learner.learn(Batch.of(users, videos, values), {})
    worker = OnlineHPMF(cfg)
    worker.import_globals(learner.export_globals())
    batch = Batch.of(["u1", "new"], ["v3", "v4"], [4.0, 2.0])
    a = learner.local_update(batch, states).states
    b = worker.local_update(batch, states).states
    # (Within 1e-6: the snapshot's round trip moves a worker by ~3e-8 with or
    # without the serving scale.)
    for uid in ("u1", "new"):
        np.testing.assert_allclose(a[uid].mean, b[uid].mean, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a[uid].cov, b[uid].cov, rtol=0, atol=1e-6)
    np.testing.assert_allclose(learner.pooled_prior().cov, worker.pooled_prior().cov, atol=1e-9)
    # A narrower taste prior leaves the new user's taste closer to the prior mean.
    wide = OnlineHPMF(HPMFConfig(n_factors=3))
    wide.learn(Batch.of(users, videos, values), {})
    c = wide.local_update(batch, states).states
    prior_mean = learner.pooled_prior().mean[:3]
    assert np.linalg.norm(a["new"].mean[:3] - prior_mean) < np.linalg.norm(
        c["new"].mean[:3] - wide.pooled_prior().mean[:3]
    )


def test_serving_taste_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="serving_taste_scale"):
        HPMFConfig(serving_taste_scale=0.0)
