"""OnlineHPMF.state_dict / load_state_dict: what the checkpoint carries, through the public API."""

from __future__ import annotations

import numpy as np
import pytest

from model.batch import Batch
from model.checkpoint import from_bytes, state_dict, to_bytes
from model.config import HPMFConfig
from model.online import OnlineHPMF


def _learned() -> tuple[OnlineHPMF, dict]:
    m = OnlineHPMF(HPMFConfig(n_factors=3, seed=2, svi_min_events=4))
    rng = np.random.default_rng(0)
    states: dict = {}
    for _ in range(6):
        users = [f"u{k}" for k in rng.integers(0, 8, 16)]
        videos = [f"v{k}" for k in rng.integers(0, 12, 16)]
        states.update(m.learn(Batch.of(users, videos, rng.uniform(1, 5, 16)), states))
    return m, states


def test_a_loaded_state_predicts_and_learns_as_the_original() -> None:
    m, states = _learned()
    twin = OnlineHPMF(m.config)
    twin.load_state_dict(m.state_dict())
    users, videos = ["u1", "u2", "new"], ["v1", "v3", "v-unknown"]
    got, want = (
        twin.predict([states.get(u) for u in users], videos),
        m.predict([states.get(u) for u in users], videos),
    )
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    batch = Batch.of(["u1", "u5"], ["v2", "v7"], [4.0, 2.0])
    a, b = m.learn(batch, states), twin.learn(batch, states)
    np.testing.assert_array_equal(a["u1"].mean, b["u1"].mean)
    assert (twin.version, twin.n_seen, twin.sigma) == (m.version, m.n_seen, m.sigma)


def test_the_checkpoint_is_the_state_dict_with_its_schema() -> None:
    m, _ = _learned()
    sd = state_dict(m)
    assert list(sd)[:3] == ["schema", "schema_version", "config"]
    assert set(sd) - {"schema", "schema_version"} == set(m.state_dict())
    assert from_bytes(to_bytes(m)).state_dict()["video_ids"] == m.video_ids


def test_load_state_dict_wants_a_fresh_model() -> None:
    m, _ = _learned()
    with pytest.raises(RuntimeError, match="fresh model"):
        m.load_state_dict(m.state_dict())
