"""The ranking passes of ``recommend`` (streamer/reader/lookup_rank.py) against the
exact float64 maths, on a synthetic version 2 record (no Redis): the one-pass mean
value, the UCB and Thompson passes, the exclusion of watched rows, top_k's edge
cases and the softmax P(start); and the ranking evaluation scoring through the same
code (P(start) normalised over the same candidates as ``recommend``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from benchmarks.lookup_bench import synthetic_globals, with_synthetic_choice
from model.choice import ChoiceConfig, ChoiceModel
from model.transform import to_original_units
from streamer.evaluation.ranking_eval import make_rankers
from streamer.reader.lookup_math import (
    CHOICE_SHARPNESS,
    ServingModel,
    UserMoments,
    predictive,
    start_probability,
    top_k,
)
from streamer.reader.lookup_rank import (
    matvec,
    mean_value,
    predictive_all,
    served_scores,
    thompson_scores,
)


@pytest.fixture(scope="module")
def v2() -> ServingModel:
    rng = np.random.default_rng(5)
    return ServingModel.from_record(with_synthetic_choice(synthetic_globals(300, 4, rng), rng))


def _user(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(0, 0.2, (d, d))
    return rng.normal(0, 0.5, d), a @ a.T + 0.01 * np.eye(d)


def test_precomputed_arrays_are_contiguous_float32_copies(v2: ServingModel) -> None:
    for sm in (v2, v2.choice):
        assert sm is not None
        d = sm.record.dim
        for arr in (sm.means, sm.covs, sm.packed):
            assert arr.dtype == np.float32 and arr.flags.c_contiguous
        np.testing.assert_allclose(sm.means, sm.record.video_mean, rtol=1e-6)
        np.testing.assert_array_equal(sm.packed[:, :d], sm.means)
        np.testing.assert_array_equal(sm.packed[:, d : d + sm.covs.shape[1]], sm.covs)


def test_matvec_is_the_product() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 7)).astype(np.float32)
    x = rng.normal(size=7)
    np.testing.assert_allclose(matvec(a, x), a.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transform", ["log1p", "identity"])
def test_mean_value_is_the_predictive_mean_in_original_units(v2: ServingModel, transform) -> None:  # type: ignore[no-untyped-def]
    sm = ServingModel.from_record(dataclasses.replace(v2.record, transform=transform))
    mean, cov = _user(np.random.default_rng(1), sm.record.dim)
    user = UserMoments.of(mean, cov, True)
    m, epi = predictive(sm, user)
    want = to_original_units(transform, m, np.sqrt(epi + sm.noise_var))[0]
    np.testing.assert_allclose(mean_value(sm, user), want, rtol=1e-5)
    m32, epi32 = predictive_all(sm, user)
    np.testing.assert_allclose(m32, m, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(epi32, epi, rtol=1e-4, atol=1e-6)


def test_choice_thompson_draws_have_the_predictive_moments(v2: ServingModel) -> None:
    c = v2.choice
    assert c is not None
    rng = np.random.default_rng(2)
    mean, cov = _user(rng, c.record.dim)
    mean[-1], cov[-1, :], cov[:, -1] = 0.0, 0.0, 0.0  # the choice user's bias slot is fixed at 0
    user = UserMoments.of(mean, cov, True)
    draws = np.stack([thompson_scores(c, user, True, rng) for _ in range(4000)])
    mu, epi = predictive(c, user)
    assert (np.abs(draws.mean(0) - mu) < 5 * np.sqrt(epi / len(draws)) + 1e-6).all()
    np.testing.assert_allclose(draws.var(0), epi, rtol=0.15)


@pytest.mark.parametrize("strategy", ["mean", "ucb", "thompson"])
def test_served_scores_exclude_watched_rows_and_rank_expected_minutes(v2, strategy) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    d = v2.record.dim
    mean, cov = _user(rng, d)
    cm = np.r_[rng.normal(0, 0.3, d - 1), 0.0]
    cc = np.diag([0.01] * (d - 1) + [0.0])
    seen = [4, 17, 250]
    s, user = served_scores(v2, mean, cov, cm, cc, strategy, np.random.default_rng(9), 2.0, seen)
    assert np.isneginf(s[seen]).all() and np.isfinite(np.delete(s, seen)).all()
    assert (np.delete(s, seen) >= 0).all()
    if strategy == "mean":  # P(E[s]) over the candidates x E[minutes], by hand in float64
        c = v2.choice
        assert c is not None
        ey = cm.copy()
        ey[-1] = 1.0
        p = start_probability(c.record.video_mean @ ey, exclude=seen)
        assert p.sum() == pytest.approx(1.0) and (p[seen] == 0).all()
        m, epi = predictive(v2, user)
        minutes = to_original_units("log1p", m, np.sqrt(epi + v2.noise_var))[0]
        np.testing.assert_allclose(np.delete(s, seen), np.delete(p * minutes, seen), rtol=1e-4)
    # the same seed draws the same list
    again, _ = served_scores(v2, mean, cov, cm, cc, strategy, np.random.default_rng(9), 2.0, seen)
    np.testing.assert_array_equal(s, again)


def test_top_k_edge_cases() -> None:
    s = np.array([0.5, np.nan, np.inf, 0.5, -np.inf, 0.7, 0.5])
    assert top_k(s, 3).tolist() == [5, 0, 3]  # +inf and NaN are not finite; ties in row order
    assert top_k(s, 10).tolist() == [5, 0, 3, 6]  # fewer if fewer are finite
    assert top_k(s, 0).tolist() == [] and top_k(np.zeros(0), 3).tolist() == []
    assert top_k(np.full(4, -np.inf), 2).tolist() == []
    r = np.random.default_rng(0).normal(size=1000)
    assert top_k(r, 10).tolist() == np.argsort(-r, kind="stable")[:10].tolist()


def test_start_probability_is_a_softmax_over_the_candidates() -> None:
    s = np.array([0.2, np.nan, 0.1, np.inf, 0.3])
    p = start_probability(s, exclude=[4])
    e = np.exp(CHOICE_SHARPNESS * np.array([0.2, 0.1]))
    np.testing.assert_allclose(p[[0, 2]], e / e.sum())
    assert p[[1, 3, 4]].tolist() == [0.0, 0.0, 0.0]
    assert start_probability(np.array([0.1, 0.2]), exclude=[0, 1]).tolist() == [0.0, 0.0]
    raw = np.array([0.3, 0.1])
    start_probability(raw, exclude=[0])
    assert raw.tolist() == [0.3, 0.1]  # the caller's array is not changed


def test_ranking_eval_normalises_p_start_over_the_candidates_as_recommend_does() -> None:
    """The ``choice`` rung (P(start) alone, minutes = 1) scores through
    served_scores with the user's watched videos excluded: its finite scores are
    P(start) over the unwatched videos, so they sum to 1 (normalised over the
    whole catalogue, as before, they summed to less)."""
    cat: dict[str, int] = {}
    ranker = make_rankers(["choice"], cat, choice_config=ChoiceConfig(n_factors=2))["choice"]
    assert isinstance(ranker.choice, ChoiceModel)  # type: ignore[attr-defined]
    events = [("a", "v0"), ("b", "v1"), ("a", "v2"), ("c", "v0"), ("a", "v3"), ("b", "v2")]
    hist: dict[str, list[int]] = {}
    for u, v in events:
        cat.setdefault(v, len(cat))
        h = hist.setdefault(u, [])
        ranker.learn([u], [v], np.ones(1), [cat[v]], [tuple(h)])
        h.append(cat[v])
    s = ranker.scores("a", hist["a"], len(cat))
    assert np.isneginf(s[hist["a"]]).all()
    cand = np.delete(s, hist["a"])
    assert np.isfinite(cand).all() and cand.sum() == pytest.approx(1.0)


def test_choice_replay_expected_minutes_and_a_small_run(redis_client) -> None:  # type: ignore[no-untyped-def]
    """The replay's truth E[expm1(max(X, 0))] against Monte Carlo, and a small
    replay through the real Redis: every strategy recommends unwatched videos
    (asserted inside) and its regret is >= 0."""
    from benchmarks.choice_replay import _expected_minutes, replay_choice

    rng = np.random.default_rng(0)
    m = np.array([-0.5, 0.3, 2.0])
    x = np.maximum(m[:, None] + 0.5 * rng.normal(size=(3, 400_000)), 0.0)
    np.testing.assert_allclose(_expected_minutes(m, 0.5), np.expm1(x).mean(1), rtol=5e-3)
    out = replay_choice(n_users=12, n_videos=25, rounds=3, thompson_draws=2)
    for s in ("popularity", "mean", "ucb", "thompson"):
        assert out[f"lookup.v2_regret_{s}"] >= out[f"lookup.v2_regret_last10_{s}"] >= 0.0
        assert 0.0 <= out[f"lookup.v2_hit_rate_{s}"] <= 1.0
    assert out["lookup.v2_regret_thompson_se"] >= 0.0  # over the 2 draw seeds
    assert "lookup.v2_regret_mean_se" not in out  # deterministic: one run


def test_replay_average_runs_means_and_standard_error() -> None:
    """Thompson's figures are the averages over its draw seeds, with the
    standard error of the mean regret; a strategy run once gets no ``_se``."""
    from benchmarks.lookup_bench import average_runs

    out: dict[str, float] = {}
    average_runs(
        out, {"mean": [(5.0, 1.0, 0.5)], "thompson": [(4.0, 2.0, 0.2), (8.0, 0.0, 0.4)]}, "x."
    )
    assert out["x.regret_mean"] == 5.0 and "x.regret_mean_se" not in out
    assert out["x.regret_thompson"] == 6.0 and out["x.regret_last10_thompson"] == 1.0
    assert out["x.hit_rate_thompson"] == pytest.approx(0.3)
    assert out["x.regret_thompson_se"] == pytest.approx(2.0)  # sd 2 sqrt(2) / sqrt(2)
