"""The global step's bookkeeping of video evidence: replaced, never double-counted."""

from __future__ import annotations

import numpy as np
import torch

from model.batch import Batch
from model.config import HPMFConfig
from model.moments import feature_moments
from model.online import OnlineHPMF


def _frozen(**kw: object) -> OnlineHPMF:
    # No SVI steps and no forgetting: sigma stays put, evidence never decays.
    # The refresh path (off by default) is what most of these tests are about.
    kw.setdefault("refresh_video_evidence", True)
    return OnlineHPMF(HPMFConfig(n_factors=2, svi_steps=0, effective_data_size=1e12, **kw))


def _expected_prec(model: OnlineHPMF, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    _, eyy, _, _ = feature_moments(
        torch.from_numpy(mean)[None], torch.from_numpy(cov)[None], model.config.biases
    )
    return (eyy[0] / model._noise_var()).numpy()


def test_a_users_evidence_is_replaced_when_their_posterior_changes() -> None:
    m = _frozen()
    s = m.learn(Batch.of(["ann", "ann"], ["v1", "v2"], [5.0, 3.0]), {})
    s = m.learn(Batch.of(["ann", "ann"], ["v1", "v3"], [4.0, 1.0]), s)
    row = m.video_index["v1"]
    got = m._v_prec[row].numpy()
    want = _expected_prec(m, s["ann"].mean, s["ann"].cov)
    # v1 holds ann's evidence once, computed with her latest posterior.
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_without_refresh_each_event_adds_evidence_once() -> None:
    m = _frozen(refresh_video_evidence=False)
    s1 = m.learn(Batch.of(["ann"], ["v1"], [5.0]), {})
    first = _expected_prec(m, s1["ann"].mean, s1["ann"].cov)
    s2 = m.learn(Batch.of(["bob"], ["v1"], [2.0]), s1)
    second = _expected_prec(m, s2["bob"].mean, s2["bob"].cov)
    np.testing.assert_allclose(m._v_prec[m.video_index["v1"]].numpy(), first + second, rtol=1e-9)


def test_state_without_posterior_gives_evidence_on_its_new_videos_only() -> None:
    m = _frozen()
    s = m.learn(Batch.of(["ann", "ann"], ["v1", "v2"], [5.0, 3.0]), {})
    before_v1 = m._v_prec[m.video_index["v1"]].clone()
    legacy = s["ann"].copy()
    legacy.mean = legacy.cov = None
    legacy.seen_at = None  # e.g. a record stored by a writer that did not keep it
    m.learn(Batch.of(["ann"], ["v3"], [2.0]), {"ann": legacy})
    # v1 is in ann's history but not in this batch: its evidence is untouched.
    torch.testing.assert_close(m._v_prec[m.video_index["v1"]], before_v1)
    assert float(m._v_prec[m.video_index["v3"]].abs().sum()) > 0.0
