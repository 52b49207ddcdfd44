"""recommend over a version 2 record (the choice component) in the real Redis:
expected minutes if shown, P(start) x E[minutes | start]; version 1 user records
under a version 2 global record get the choice prior; watched videos excluded."""

from __future__ import annotations

import numpy as np
import pytest

from model.choice import ChoiceConfig, ChoiceModel, ChoiceState
from streamer.evaluation.ranking_eval import with_choice
from streamer.reader.lookup import Lookup, Status
from streamer.reader.lookup_math import start_probability
from streamer.reader.redis_record import (
    decode_global_record,
    global_key,
    global_record_from_snapshot,
    queue_user_record,
    user_record_from_state,
    write_global_record,
)
from tests.test_lookup import trained


@pytest.fixture(scope="module")
def both():  # noqa: ANN201
    m, states = trained("log1p")
    choice = ChoiceModel(ChoiceConfig(n_factors=2, sweep_every=10))
    cstates: dict[str, ChoiceState] = {}
    for uid, st in states.items():
        for vid in st.history:
            cstates[uid] = choice.learn_event(uid, vid, cstates.get(uid))
    return m, states, choice, cstates


def test_recommend_ranks_by_expected_minutes_if_shown(redis_client, key_prefix, both) -> None:  # type: ignore[no-untyped-def]
    m, states, choice, cstates = both
    rec = with_choice(global_record_from_snapshot(m.export_globals(), 1_700_000_000_000), choice)
    write_global_record(redis_client, key_prefix, rec, ttl_s=600)
    assert decode_global_record(
        redis_client.hgetall(global_key(key_prefix, rec.version))
    ).has_choice
    uids = sorted(states)
    v1_user, v2_user = uids[0], uids[1]
    pipe = redis_client.pipeline(transaction=True)
    for k, uid in enumerate((v1_user, v2_user)):
        ur = user_record_from_state(states[uid], updated_ms=1, event_ms=1, partition=0, offset=k)
        if uid == v2_user:
            ur.choice_mean, ur.choice_cov = cstates[uid].mean, cstates[uid].cov
        queue_user_record(pipe, key_prefix, uid, ur, ttl_s=600)
    pipe.execute()
    assert redis_client.hget(f"{key_prefix}:u:{{{v2_user}}}", "v") == b"2"
    assert redis_client.hget(f"{key_prefix}:u:{{{v1_user}}}", "v") == b"1"

    lk = Lookup(redis_client, key_prefix)
    model = lk.model()
    assert model.choice is not None
    for uid in (v1_user, v2_user, "brand-new"):
        r = lk.recommend(uid, k=5)
        assert r.posterior.status is (Status.NEW_USER if uid == "brand-new" else Status.OK)
        watched = {v for v, _, _ in r.posterior.history}
        assert len(r.items) == min(5, model.n_videos - len(watched & set(model.index)))
        assert r.items and not watched & set(r.video_ids)
        # the score is P(start) x E[minutes], P(start) from the user's choice posterior,
        # a softmax over the videos the user has not watched
        # (the choice prior for a v1 record or a new user), computed here by hand
        cm = cstates[uid].mean if uid == v2_user else choice.prior_state()[0]
        rows = [model.index[v] for v in r.video_ids]
        ey = cm.copy()
        ey[-1] = 1.0
        seen = [model.index[v] for v in watched if v in model.index]
        p = start_probability(rec.choice_video_mean @ ey, exclude=seen)[rows]
        want = p * np.array([it.mean for it in r.items])
        np.testing.assert_allclose([it.score for it in r.items], want, rtol=2e-4)
        assert all(a.score >= b.score for a, b in zip(r.items, r.items[1:], strict=False))
    for strategy in ("ucb", "thompson"):
        r = lk.recommend(v2_user, k=5, strategy=strategy, seed=3)
        assert r.items and all(it.score >= 0 for it in r.items)
    # lists differ between users whose choice posteriors differ
    assert lk.recommend(v2_user, k=5).video_ids != lk.recommend(
        "brand-new", k=5
    ).video_ids or not np.allclose(cstates[v2_user].mean, choice.prior_state()[0])
