"""b0's prior mean is what a model predicts before it has learned anything."""

from __future__ import annotations

import pytest

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF


@pytest.mark.parametrize("prior", [0.0, 3.0])
def test_before_learning_the_prediction_is_the_prior_global_mean(prior: float) -> None:
    m = OnlineHPMF(HPMFConfig(n_factors=2, global_mean_prior=prior))
    mean, std = m.predict([None, None], ["v1", "v2"])
    assert mean.tolist() == pytest.approx([prior, prior], abs=1e-9)
    assert (std > 0).all()


def test_once_data_arrives_the_global_mean_follows_it() -> None:
    m = OnlineHPMF(HPMFConfig(n_factors=2, global_mean_prior=3.0))
    m.learn(Batch.of(["a", "b"], ["v1", "v2"], [5.0, 5.0]), {})
    assert m.global_mean == pytest.approx(5.0)
