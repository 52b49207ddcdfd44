"""The reader library against the real local Redis, with records written by the
codec the streamer uses (streamer.reader.redis_record) and globals from a real OnlineHPMF."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import redis

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF
from model.posterior import UserState
from model.transform import to_original_units
from streamer.reader.lookup import (
    GlobalsUnreadableError,
    Lookup,
    NoGlobalsError,
    Status,
    StoreUnavailableError,
)
from streamer.reader.lookup_math import ServingModel, UserMoments, predictive
from streamer.reader.lookup_rank import thompson_scores
from streamer.reader.redis_record import (
    GlobalRecord,
    UserRecord,
    encode_user_record,
    global_current_key,
    global_key,
    global_record_from_snapshot,
    queue_user_record,
    user_key,
    user_record_from_state,
    write_global_record,
)

VIDEOS = [f"v{j}" for j in range(12)]


def trained(transform: str) -> tuple[OnlineHPMF, dict[str, UserState]]:
    """A tiny model learned on three minibatches (several global versions)."""
    cfg = HPMFConfig(n_factors=3, transform=transform, seed=1, svi_min_events=8)
    m = OnlineHPMF(cfg)
    rng = np.random.default_rng(0)
    n = 90
    users = [f"u{i}" for i in rng.integers(0, 8, n)]
    vids = [VIDEOS[j] for j in rng.integers(0, len(VIDEOS), n)]
    vals = rng.uniform(0.5, 30.0, n) if transform == "log1p" else rng.uniform(1.0, 5.0, n)
    states: dict[str, UserState] = {}
    for s in range(0, n, 30):
        states.update(
            m.learn(Batch.of(users[s : s + 30], vids[s : s + 30], vals[s : s + 30]), states)
        )
    return m, states


@pytest.fixture(scope="module")
def identity_model() -> tuple[OnlineHPMF, dict[str, UserState]]:
    return trained("identity")


@pytest.fixture(scope="module")
def log1p_model() -> tuple[OnlineHPMF, dict[str, UserState]]:
    return trained("log1p")


def publish(
    client: redis.Redis, prefix: str, m: OnlineHPMF, states: dict[str, UserState]
) -> GlobalRecord:
    """What the streaming service does: global record, then user records."""
    rec = global_record_from_snapshot(m.export_globals(), updated_ms=1_700_000_000_000)
    write_global_record(client, prefix, rec, ttl_s=600)
    pipe = client.pipeline(transaction=True)
    for offset, (uid, st) in enumerate(states.items()):
        ur = user_record_from_state(
            st, updated_ms=1_700_000_000_500, event_ms=1_700_000_000_400, partition=0, offset=offset
        )
        queue_user_record(pipe, prefix, uid, ur, ttl_s=600)
    pipe.execute()
    return rec


def f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float64)


# ---------------------------------------------------------------- posteriors
def test_round_trip_of_streamer_records(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    publish(redis_client, key_prefix, m, states)
    lk = Lookup(redis_client, key_prefix, refresh_interval_ms=0)
    uid = sorted(states)[0]
    p = lk.user_posterior(uid)
    st = states[uid]
    assert p.status is Status.OK and not p.is_prior and p.error is None
    np.testing.assert_array_equal(p.mean, f32(st.mean))
    np.testing.assert_array_equal(p.cov, f32(st.cov))
    assert p.n_events == st.n_events > 0
    assert p.model_version == m.version and p.user_version == st.model_version
    assert p.version_lag == m.version - st.model_version and not p.stale
    assert [h[0] for h in p.history] == list(st.history)
    assert (p.updated_ms, p.event_ms) == (1_700_000_000_500, 1_700_000_000_400)


def test_missing_user_gets_the_pooled_prior(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    rec = publish(redis_client, key_prefix, m, states)
    p = Lookup(redis_client, key_prefix).user_posterior("never-seen")
    assert p.status is Status.NEW_USER and p.is_prior and p.n_events == 0
    assert p.user_version is None and p.version_lag == 0 and p.model_version == m.version
    np.testing.assert_array_equal(p.mean, f32(rec.prior_mean))  # float32 on the wire
    np.testing.assert_array_equal(p.cov, f32(m.pooled_prior().cov))


def test_corrupt_and_foreign_records_serve_the_prior(
    redis_client, key_prefix, identity_model
) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    rec = publish(redis_client, key_prefix, m, states)
    a, b, c, d = sorted(states)[:4]
    redis_client.hset(user_key(key_prefix, a), "mean", b"\x00\x00\x80?")  # truncated array
    redis_client.hset(user_key(key_prefix, b), "v", b"3")  # a future schema version
    redis_client.delete(user_key(key_prefix, c))
    redis_client.set(user_key(key_prefix, c), b"not a hash")  # WRONGTYPE
    redis_client.hset(user_key(key_prefix, d), "hist", b"[[")  # broken JSON
    lk = Lookup(redis_client, key_prefix)
    got = lk.user_posteriors([a, b, c, d, "nobody", sorted(states)[4]])
    assert [p.status for p in got] == [
        Status.CORRUPT_RECORD,
        Status.UNSUPPORTED_VERSION,
        Status.CORRUPT_RECORD,
        Status.CORRUPT_RECORD,
        Status.NEW_USER,
        Status.OK,
    ]
    assert "mean" in got[0].error and "version '3'" in got[1].error and "WRONGTYPE" in got[2].error
    assert "hist" in got[3].error
    for p in got[:5]:
        assert p.is_prior
        np.testing.assert_array_equal(p.mean, f32(rec.prior_mean))
    # predictions and recommendations still come back (from the prior)
    r = lk.recommend(a, k=3)
    assert r.posterior.status is Status.CORRUPT_RECORD and len(r.items) == 3


def test_record_of_another_dimension_is_corrupt(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    publish(redis_client, key_prefix, m, states)
    bad = UserRecord(np.zeros(2), np.eye(2), 1, 1, 1, m.version, 0, 0, [])
    redis_client.hset(user_key(key_prefix, "x"), mapping=encode_user_record(bad))
    p = Lookup(redis_client, key_prefix).user_posterior("x")
    assert p.status is Status.CORRUPT_RECORD and "dimension 2" in p.error


def test_stale_flag_and_version_lag(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    publish(redis_client, key_prefix, m, states)
    uid = sorted(states)[0]
    st = states[uid].copy()
    for gv, lag, stale in [
        (m.version, 0, False),
        (m.version - 3, 3, True),
        (m.version + 5, -5, True),
    ]:
        st.model_version = gv
        rec = user_record_from_state(st, updated_ms=1, event_ms=1, partition=0, offset=1)
        redis_client.hset(user_key(key_prefix, uid), mapping=encode_user_record(rec))
        p = Lookup(redis_client, key_prefix, max_version_lag=2).user_posterior(uid)
        assert (p.user_version, p.model_version, p.version_lag, p.stale) == (
            gv,
            m.version,
            lag,
            stale,
        )
        assert p.status is Status.OK  # a stale posterior is still the user's own, flagged


# ---------------------------------------------------------------- globals and failures
def test_no_global_record_is_a_typed_error(redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    lk = Lookup(redis_client, key_prefix)
    with pytest.raises(NoGlobalsError, match="missing"):
        lk.user_posterior("u1")
    redis_client.set(global_current_key(key_prefix), b"4")  # pointer without its hash
    with pytest.raises(NoGlobalsError, match=r"g:\{4\}"):
        lk.recommend("u1")


def test_unreadable_globals(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    publish(redis_client, key_prefix, m, states)
    redis_client.hset(global_key(key_prefix, m.version), "v", b"9")
    with pytest.raises(GlobalsUnreadableError) as err:
        Lookup(redis_client, key_prefix).user_posterior("u1")
    assert "version '9'" in str(err.value) and err.value.cause is not None


def test_a_bad_newer_version_keeps_the_cached_one(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    publish(redis_client, key_prefix, m, states)
    lk = Lookup(redis_client, key_prefix, refresh_interval_ms=0)
    assert lk.user_posterior("u1").model_version == m.version
    newer = m.version + 1
    redis_client.hset(
        global_key(key_prefix, newer), mapping={"v": b"1", "d": b"4"}
    )  # half a record
    redis_client.set(global_current_key(key_prefix), str(newer))
    p = lk.user_posterior("u1")
    assert p.model_version == m.version  # still served, from the cache
    assert "missing field" in (lk.last_refresh_error or "")


def test_store_unavailable(identity_model) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with pytest.raises(StoreUnavailableError):
        Lookup(client, "nowhere").user_posterior("u1")


def test_decode_responses_client_is_refused(redis_url) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="decode_responses"):
        Lookup(redis.Redis.from_url(redis_url, decode_responses=True))


def test_cache_follows_current(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    rec = publish(redis_client, key_prefix, m, states)
    eager = Lookup(redis_client, key_prefix, refresh_interval_ms=0)
    lazy = Lookup(redis_client, key_prefix, refresh_interval_ms=60_000)
    first = eager.model()
    assert lazy.model().version == rec.version
    eager.user_posterior("u1")
    assert eager.model() is first  # unchanged pointer: no reload
    rec.version += 1
    rec.b0 += 1.0
    assert write_global_record(redis_client, key_prefix, rec, ttl_s=60) == rec.version - 1
    assert eager.user_posterior("u1").model_version == rec.version
    assert eager.model().b0 == rec.b0
    assert lazy.user_posterior("u1").model_version == rec.version - 1  # not yet checked
    assert lazy.model(refresh=True).version == rec.version


# ---------------------------------------------------------------- predictions
@pytest.mark.parametrize("fixture", ["identity_model", "log1p_model"])
def test_predict_matches_online_hpmf(fixture, request, redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    m, states = request.getfixturevalue(fixture)
    publish(redis_client, key_prefix, m, states)
    lk = Lookup(redis_client, key_prefix)
    for uid in [*sorted(states)[:4], "brand-new"]:
        p = lk.predict(uid, VIDEOS)
        want_m, want_s = m.predict([states.get(uid)] * len(VIDEOS), VIDEOS)
        assert p.known.all()
        # model scale: the same formula, float32 storage on the way
        np.testing.assert_allclose(p.model_mean, want_m, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(p.model_std, want_s, rtol=1e-4)
        # original units
        want_mean, want_std = to_original_units(m.config.transform, want_m, want_s)
        np.testing.assert_allclose(p.mean, want_mean, rtol=1e-4)
        np.testing.assert_allclose(p.std, want_std, rtol=1e-4)


def test_log1p_units_are_log_normal_moments(redis_client, key_prefix, log1p_model) -> None:  # type: ignore[no-untyped-def]
    m, states = log1p_model
    publish(redis_client, key_prefix, m, states)
    p = Lookup(redis_client, key_prefix).predict(sorted(states)[0], VIDEOS[:3])
    mu, s = p.model_mean, p.model_std
    np.testing.assert_allclose(p.mean, np.exp(mu + s**2 / 2) - 1, rtol=1e-12)
    np.testing.assert_allclose(
        p.std, np.sqrt((np.exp(s**2) - 1) * np.exp(2 * mu + s**2)), rtol=1e-12
    )
    assert (p.mean > np.expm1(mu)).all()  # the mean of minutes exceeds the median


def test_unknown_video_is_flagged(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    publish(redis_client, key_prefix, m, states)
    p = Lookup(redis_client, key_prefix).predict("u1", ["v1", "no-such-video", "v2"])
    assert p.known.tolist() == [True, False, True]
    assert np.isnan(p.mean[1]) and np.isnan(p.std[1]) and np.isfinite(p.mean[[0, 2]]).all()


# ---------------------------------------------------------------- recommendations
def test_mean_and_ucb_rankings(redis_client, key_prefix, log1p_model) -> None:  # type: ignore[no-untyped-def]
    m, states = log1p_model
    publish(redis_client, key_prefix, m, states)
    lk = Lookup(redis_client, key_prefix, ucb_beta=1.5)
    uid = sorted(states)[0]
    pred = lk.predict(uid, VIDEOS)
    r = lk.recommend(uid, k=len(VIDEOS), strategy="mean", exclude_watched=False)
    assert r.video_ids == [VIDEOS[i] for i in np.argsort(-pred.mean, kind="stable")]
    np.testing.assert_allclose([x.score for x in r.items], np.sort(pred.mean)[::-1])
    np.testing.assert_allclose([x.mean for x in r.items], np.sort(pred.mean)[::-1])

    model = lk.model()
    post = lk.user_posterior(uid)
    mu, epi = predictive(model, UserMoments.of(post.mean, post.cov, True))
    u = lk.recommend(uid, k=4, strategy="ucb", exclude_watched=False)
    want = np.argsort(-(mu + 1.5 * np.sqrt(epi)))[:4]
    assert u.video_ids == [model.record.video_ids[i] for i in want]  # rows are record order
    np.testing.assert_allclose(
        [x.score for x in u.items], np.expm1(mu + 1.5 * np.sqrt(epi))[want], rtol=1e-5
    )


def test_exclude_watched(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    publish(redis_client, key_prefix, m, states)
    lk = Lookup(redis_client, key_prefix)
    uid = max(states, key=lambda u: len(states[u].history))
    watched = set(states[uid].history)
    assert 0 < len(watched) < len(VIDEOS)
    for strategy in ("mean", "ucb", "thompson"):
        r = lk.recommend(uid, k=len(VIDEOS), strategy=strategy, seed=3)
        assert set(r.video_ids) == set(VIDEOS) - watched  # all the others, none watched
        full = lk.recommend(uid, k=len(VIDEOS), strategy=strategy, seed=3, exclude_watched=False)
        assert set(full.video_ids) == set(VIDEOS)


def test_k_bounds(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    publish(redis_client, key_prefix, m, states)
    lk = Lookup(redis_client, key_prefix)
    assert lk.recommend("new", k=0).items == []
    assert len(lk.recommend("new", k=100).items) == len(VIDEOS)
    with pytest.raises(ValueError, match="strategy"):
        lk.recommend("new", strategy="greedy")  # type: ignore[arg-type]


def test_thompson_is_seeded_and_explores(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    publish(redis_client, key_prefix, m, states)
    lk = Lookup(redis_client, key_prefix)
    uid = sorted(states)[0]
    a = lk.recommend(uid, k=5, strategy="thompson", seed=11)
    b = lk.recommend(uid, k=5, strategy="thompson", seed=11)
    assert a.items == b.items
    # the same user and seed give the same draw inside a batch
    batch = lk.recommend_many(["brand-new", uid], k=5, strategy="thompson", seed=11)
    assert batch[1].items == a.items
    # different seeds explore: the top video is not always the same
    tops = {
        lk.recommend("brand-new", k=1, strategy="thompson", seed=s).video_ids[0] for s in range(60)
    }
    assert len(tops) > 1


def test_thompson_draws_have_the_predictive_moments(identity_model) -> None:  # type: ignore[no-untyped-def]
    """Thompson scores are draws of b0 + b + y(x).w under q: their mean and
    variance must be the predictive mean and the epistemic variance."""
    m, states = identity_model
    rec = global_record_from_snapshot(m.export_globals(), updated_ms=0)
    model = ServingModel.from_record(rec)
    st = states[sorted(states)[0]]
    user = UserMoments.of(st.mean, st.cov, True)
    rng = np.random.default_rng(0)
    draws = np.stack([thompson_scores(model, user, True, rng) for _ in range(20_000)])
    mu, epi = predictive(model, user)
    se = np.sqrt(epi / len(draws))
    assert (np.abs(draws.mean(0) - mu) < 5 * se).all()
    np.testing.assert_allclose(draws.var(0), epi, rtol=0.06)


def test_recommend_many_matches_single_calls(redis_client, key_prefix, identity_model) -> None:  # type: ignore[no-untyped-def]
    m, states = identity_model
    publish(redis_client, key_prefix, m, states)
    lk = Lookup(redis_client, key_prefix)
    ids = [*sorted(states)[:3], "nobody"]
    many = lk.recommend_many(ids, k=4, strategy="ucb")
    assert [r.posterior.user_id for r in many] == ids
    for uid, r in zip(ids, many, strict=True):
        assert r.items == lk.recommend(uid, k=4, strategy="ucb").items
    assert [p.status for p in lk.user_posteriors(ids)] == [Status.OK] * 3 + [Status.NEW_USER]


def test_reader_imports_no_torch() -> None:
    code = (
        "import sys, streamer.reader.lookup, streamer.cli.lookup\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'pyro', 'kafka')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
