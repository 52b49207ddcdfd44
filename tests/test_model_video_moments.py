"""VideoCatalogue._video_moments: known rows are the cached posteriors, row -1
(a video not registered) the video prior, whatever mix a predict batch brings."""

from __future__ import annotations

import torch

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF


def _model(**kw: object) -> OnlineHPMF:
    m = OnlineHPMF(HPMFConfig(seed=3, **kw))  # type: ignore[arg-type]
    m.learn(Batch.of(["a", "b", "a", "c"], ["v0", "v1", "v2", "v1"], [4.0, 2.0, 5.0, 3.0]), {})
    return m


def test_unknown_rows_get_the_prior_known_rows_their_posterior() -> None:
    m = _model(n_factors=3)
    rows = torch.tensor([0, -1, 2, 1, -1, 0])
    mean, cov = m._video_moments(rows)
    pm, ps = m._video_prior()
    for k, r in enumerate(rows.tolist()):
        if r < 0:
            assert torch.equal(mean[k], pm) and torch.equal(cov[k], torch.diag(ps.pow(2)))
        else:
            assert torch.equal(mean[k], m._v_mean[r]) and torch.equal(cov[k], m._v_cov[r])
    # The copies are the caller's: the tables are untouched.
    kept = mean.clone()
    mean.add_(1.0)
    assert torch.equal(m._video_moments(torch.tensor([0]))[0][0], m._v_mean[0])
    # All known: the same as the masked path gives for them.
    known_mean, known_cov = m._video_moments(torch.tensor([0, 2, 1, 0]))
    assert torch.equal(known_mean, kept[[0, 2, 3, 5]])
    assert torch.equal(known_cov, cov[[0, 2, 3, 5]])


def test_predict_with_unknown_videos_without_factors() -> None:
    m = _model(n_factors=0, biases=False)
    mean, std = m.predict([None, None], ["v0", "v-new"])
    assert mean.shape == (2,) and bool((std > 0).all())
