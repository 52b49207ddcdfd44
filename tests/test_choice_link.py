"""The learned P(start) link (model/choice_link.py): the online maximum-likelihood
lambda recovers the one the starts were drawn with, it scores each start with the
state from before the start, and it reaches ``recommend`` through the global record
(a record without it serves the fixed lambda)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.lookup_bench import synthetic_globals, with_synthetic_choice
from model.choice import ChoiceConfig, ChoiceModel
from model.choice_link import GRID, ChoiceLink, observe_start
from streamer.reader.lookup_math import CHOICE_SHARPNESS, ServingModel, start_probability
from streamer.reader.lookup_rank import served_scores
from streamer.reader.redis_record import global_record_from_snapshot, with_choice


def _softmax_starts(lam: float, n: int, seed: int) -> ChoiceLink:
    rng = np.random.default_rng(seed)
    link = ChoiceLink(min_events=10)
    for _ in range(n):
        s = rng.normal(0.0, 0.4, 300)
        p = np.exp(lam * (s - s.max()))
        link.observe(s, int(rng.choice(300, p=p / p.sum())))
    return link


@pytest.mark.parametrize("lam", [1.5, 4.0, 12.0])
def test_the_learned_lambda_recovers_the_generating_one(lam: float) -> None:
    got = _softmax_starts(lam, 1500, seed=int(lam * 10)).sharpness()
    assert got is not None and abs(np.log(got / lam)) < 0.15


def test_the_estimate_is_the_likelihood_maximum_and_forgets() -> None:
    link = _softmax_starts(3.0, 300, seed=1)
    got = link.sharpness()
    k = int(np.argmax(link.loglik))
    assert got is not None and GRID[k - 1] < got < GRID[k + 1]  # refined between the neighbours
    link.observe(np.array([0.1, 0.2]), 1)
    assert link.seen == 301 and link.weight < 301  # older starts weigh less
    link.observe(np.array([0.3]), 0)  # a single candidate says nothing about lambda
    link.observe(np.array([0.3, np.nan]), 0)
    assert link.seen == 301
    assert ChoiceLink(min_events=5).sharpness() is None
    assert np.isnan(ChoiceLink().mean_loglik())
    # the decayed average log-likelihood per start at the estimate: above the
    # uniform guess's -log(300) would be, below 0
    assert -np.log(300) < link.mean_loglik() < 0


def test_observe_start_uses_the_state_from_before_the_start() -> None:
    m = ChoiceModel(ChoiceConfig(n_factors=2, sweep_every=50, learn_sharpness=True))
    assert m.link is not None and ChoiceModel(ChoiceConfig(n_factors=2)).link is None
    rng = np.random.default_rng(0)
    st: dict = {}
    for e in range(200):
        u, v = f"u{e % 15}", f"v{rng.integers(30)}"
        st[u] = m.learn_event(u, v, st.get(u))
    seen = m.link.seen
    assert 0 < seen < 200  # new videos and rewatches are skipped
    # the score observe_start uses is the served one from before: the learner's latest
    # posterior of the user plus the session term over their earlier starts, against
    # the current videos, the candidates their unwatched videos
    user, video = "u3", next(v for v in m.video_ids if v not in st["u3"].history)
    got: list[tuple[np.ndarray, int]] = []
    probe = dataclasses.replace(m.link)
    probe.observe = lambda s, j: got.append((s, j))  # type: ignore[method-assign]
    m.link, link = probe, m.link
    observe_start(m, user, st[user].history, video)
    m.link = link
    ((s, j),) = got
    before_mean = m._users[user][0]  # the learner's latest posterior of the user (pre-start)
    ey = m.served_means([st[user].history], before_mean[None])[0]
    ey[-1] = 1.0
    full = m.video_mean() @ ey
    watched = [m.video_index[v] for v in st[user].history]
    np.testing.assert_allclose(s, np.delete(full, watched))
    assert s[j] == full[m.video_index[video]]
    before = m.link.seen
    observe_start(m, user, st[user].history, st[user].history[-1])  # a rewatch: skipped
    assert m.link.seen == before


def test_recommend_serves_the_records_learned_lambda_or_the_fixed_one() -> None:
    rng = np.random.default_rng(4)
    rec = with_synthetic_choice(synthetic_globals(50, 3, rng), rng)
    d = rec.dim
    mean, cov = np.zeros(d), 0.01 * np.eye(d)
    cm = np.r_[rng.normal(0, 0.3, rec.choice_prior_mean.shape[0] - 1), 0.0]
    cc = np.zeros((cm.shape[0], cm.shape[0]))
    seen = [2, 7]
    fixed, _ = served_scores(
        ServingModel.from_record(rec), mean, cov, cm, cc, "mean", rng, 2.0, seen
    )
    learned = dataclasses.replace(rec, choice_sharpness=3.0)
    got, _ = served_scores(
        ServingModel.from_record(learned), mean, cov, cm, cc, "mean", rng, 2.0, seen
    )
    ey = cm.copy()
    ey[-1] = 1.0
    s = rec.choice_video_mean @ ey
    keep = np.delete(np.arange(50), seen)
    p3, p20 = start_probability(s, seen, 3.0)[keep], start_probability(s, seen)[keep]
    assert np.isneginf(got[seen]).all() and not np.allclose(p3, p20)
    # the same E[minutes | start] under both, so the ratio is the ratio of the P(start)s
    np.testing.assert_allclose(got[keep] / fixed[keep], p3 / p20, rtol=1e-4)
    np.testing.assert_allclose(start_probability(s, seen, CHOICE_SHARPNESS)[keep], p20)


def test_with_choice_publishes_the_learned_lambda_once_estimated() -> None:
    from model.config import HPMFConfig
    from model.online import OnlineHPMF

    base = global_record_from_snapshot(OnlineHPMF(HPMFConfig(n_factors=2)).export_globals(), 0)
    m = ChoiceModel(ChoiceConfig(n_factors=2, learn_sharpness=True))
    assert with_choice(base, m).choice_sharpness is None  # nothing learned yet: the fixed one
    assert m.link is not None
    m.link = _softmax_starts(5.0, 400, seed=3)
    assert with_choice(base, m).choice_sharpness == pytest.approx(m.link.sharpness())
    assert with_choice(base, ChoiceModel(ChoiceConfig(n_factors=2))).choice_sharpness is None
