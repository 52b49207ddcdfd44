"""The demo's truth report (streamer/evaluation/demo_truth.py) against the real Redis: a
small taste-driven simulation learned by both components, published as the
service publishes it, then scored against its own truth."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from model.batch import Batch
from model.choice import ChoiceConfig, ChoiceModel
from model.config import HPMFConfig
from model.online import OnlineHPMF
from model.simulate import SimConfig, simulate
from streamer.evaluation.demo_truth import load_truth, render, served_vs_truth, watched_by_user
from streamer.reader.redis_record import (
    global_record_from_snapshot,
    queue_user_record,
    user_record_from_state,
    with_choice,
    write_global_record,
)


def test_report_scores_served_lists_against_the_truth(
    tmp_path: Path, redis_client, redis_url, key_prefix
) -> None:  # type: ignore[no-untyped-def]
    sim = simulate(
        SimConfig(
            days=2,
            users_per_day=150,
            n_videos=60,
            n_factors=3,
            heavy_fraction=0.3,
            choice_strength=2.0,
            seed=5,
        )
    )
    events = tmp_path / "sim.tsv"
    with events.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["user_id", "video_id", "value", "timestamp"])
        w.writerows(zip(sim.user_ids, sim.video_ids, sim.values, sim.timestamps, strict=True))
    np.savez_compressed(tmp_path / "sim.truth.npz", **sim.truth.to_arrays())
    assert load_truth(tmp_path / "sim.truth.npz").choice_strength == 2.0

    watched = watched_by_user(events)
    m = OnlineHPMF(HPMFConfig(n_factors=3, transform="log1p"))
    choice = ChoiceModel(ChoiceConfig(n_factors=3, sweep_every=100))
    states: dict = {}
    kept = [
        (u, v, x)
        for u, v, x in zip(sim.user_ids, sim.video_ids, sim.values, strict=True)
        if x <= 1440
    ]
    for s in range(0, len(kept), 64):
        us, vs, xs = zip(*kept[s : s + 64], strict=True)
        states.update(m.learn(Batch.of(list(us), list(vs), list(xs)), states))
    for u, v, _ in kept:  # the learner's per-event path
        choice.global_step(u, v, choice.local_step(u, v, None))
    write_global_record(
        redis_client,
        key_prefix,
        with_choice(global_record_from_snapshot(m.export_globals(), 1), choice),
        600,
    )
    pipe = redis_client.pipeline(transaction=True)
    cm, cc = choice.user_posteriors([list(states[u].history) for u in states])
    for k, (u, st) in enumerate(states.items()):
        rec = user_record_from_state(st, updated_ms=1, event_ms=1, partition=0, offset=k)
        rec.choice_mean, rec.choice_cov = cm[k], cc[k]
        queue_user_record(pipe, key_prefix, u, rec, 600)
    pipe.execute()

    rep = served_vs_truth(
        events, tmp_path / "sim.truth.npz", redis_url, key_prefix, k=5, max_users=100
    )
    assert 0 < len(rep.users) <= 100 and all(len(watched[u]) >= 3 for u in rep.users)
    for u in rep.users:  # neither the served list nor the true best holds a watched video
        assert len(rep.served[u]) == 5 and not set(rep.served[u]) & set(watched[u])
        assert len(rep.true_best[u]) == 5 and not set(rep.true_best[u]) & set(watched[u])
    for name in ("hpmf (recommend)", "popularity"):
        assert 0.0 <= rep.overlap[name] <= 1.0 and 0.0 <= rep.value_share[name] <= 1.0 + 1e-9
    assert rep.distinct_lists["hpmf (recommend)"] > 1
    text = render(rep, {u: len(v) for u, v in watched.items()})
    assert "overlap@5" in text and rep.pair[0] in text and rep.pair[1] in text
