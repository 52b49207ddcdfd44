"""The noise estimate takes each user's first event of a minibatch only
(model.noise_calibration.served_noise_pairs): a user's later events in the
same minibatch are served from a state that lacks the batch's earlier ones."""

from __future__ import annotations

import numpy as np

from model.batch import Batch
from model.evaluate import ladder_config
from model.noise_calibration import served_noise_pairs
from model.online import OnlineHPMF


def test_served_noise_pairs_keeps_each_users_first_pair_in_order() -> None:
    pairs = [("a", "v1"), ("b", "v1"), ("a", "v2"), ("c", "v3"), ("b", "v2"), ("a", "v3")]
    assert served_noise_pairs(pairs).tolist() == [0, 1, 3]
    assert served_noise_pairs([]).tolist() == []


def _warm_model(first_only: bool) -> tuple[OnlineHPMF, dict]:
    model = OnlineHPMF(ladder_config("hpmf", n_factors=2, noise_first_event_only=first_only))
    rng = np.random.default_rng(0)
    users = [f"u{k % 7}" for k in range(40)]
    videos = [f"v{int(k)}" for k in rng.integers(0, 9, size=40)]
    states = model.learn(Batch.of(users, videos, rng.uniform(1, 5, size=40)), {})
    return model, states


def test_only_the_first_event_of_each_user_feeds_the_noise() -> None:
    users = ["a", "a", "b", "a", "b", "u1"]
    videos = ["v1", "v2", "v1", "v3", "v1", "v4"]  # b's two v1 events are one pair
    batch = Batch.of(users, videos, [4.0, 2.0, 5.0, 1.0, 3.0, 4.0])
    for first_only, n_errors in ((True, 3), (False, 5)):
        model, states = _warm_model(first_only)
        update = model.local_update(batch, states)
        assert len(update.stats.served_sq_err) == n_errors
        assert len(update.stats.served_model_var) == n_errors
    # The caller's predictions give the same errors as predicting them here.
    model, states = _warm_model(True)
    served = model.predict([states.get(u) for u in users], videos)
    own = model.local_update(batch, states).stats
    given = model.local_update(batch, states, served).stats
    np.testing.assert_allclose(given.served_sq_err, own.served_sq_err, rtol=1e-12)
    np.testing.assert_allclose(given.served_model_var, own.served_model_var, rtol=1e-12)
    # Those kept are the first events of a, b and u1, predicted from the old states.
    mean, std = served
    at = np.array([0, 2, 5])
    # b's target is its pair's sum in the batch (5 + 3), as for every served error.
    target = np.array([4.0, 8.0, 4.0])
    np.testing.assert_allclose(own.served_sq_err, (target - mean[at]) ** 2, rtol=1e-12)


def test_minibatch_one_is_unchanged() -> None:
    """At minibatch 1 every event is its user's first: the flag changes nothing."""
    rng = np.random.default_rng(1)
    users = [f"u{int(k)}" for k in rng.integers(0, 30, size=300)]
    videos = [f"v{int(k)}" for k in rng.integers(0, 20, size=300)]
    values = rng.uniform(1, 5, size=300)
    sigmas = []
    for first_only in (True, False):
        model = OnlineHPMF(
            ladder_config(
                "hpmf",
                n_factors=2,
                noise_first_event_only=first_only,
                noise_calibration_horizon=100.0,
            )
        )
        object.__setattr__(model.noise_calibration, "min_events", 50)
        states: dict = {}
        for u, v, x in zip(users, videos, values, strict=True):
            states.update(model.learn(Batch.of([u], [v], [x]), states))
        sigmas.append(model.sigma)
    assert model.noise_calibration.noise_var() is not None
    assert sigmas[0] == sigmas[1]
