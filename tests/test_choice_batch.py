"""The choice component's service path (model/choice.py): the batched user
step equals the per-user closed form, the per-batch learner step learns like
the per-event one, and checkpoints/snapshots restore what the worker needs."""

from __future__ import annotations

import numpy as np

from model.choice import ChoiceConfig, ChoiceModel
from model.choice_snapshot import (
    export_checkpoint,
    export_snapshot,
    import_checkpoint,
    import_snapshot,
)


def _trained(n_events: int = 400, seed: int = 0) -> tuple[ChoiceModel, dict[str, list[str]]]:
    rng = np.random.default_rng(seed)
    m = ChoiceModel(ChoiceConfig(n_factors=3, sweep_every=100))
    hist: dict[str, list[str]] = {}
    states: dict = {}
    for _ in range(n_events):
        u = f"u{rng.integers(40)}"
        # two taste groups: even users start videos a*, odd users b*
        v = f"{'a' if int(u[1:]) % 2 == 0 else 'b'}{rng.integers(10)}"
        states[u] = m.learn_event(u, v, states.get(u))
        hist[u] = states[u].history
    return m, hist


def test_batched_user_step_equals_the_per_user_closed_form() -> None:
    m, hist = _trained()
    users = sorted(hist)
    histories = [hist[u] for u in users] + [[], ["never-seen"], ["a1", "never-seen", "b2"]]
    means, covs = m.user_posteriors(histories)
    for k, h in enumerate(histories):
        mean, cov = m.user_posterior(h)
        np.testing.assert_allclose(means[k], mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(covs[k], cov, rtol=1e-9, atol=1e-12)


def test_batch_learner_step_learns_the_taste_groups() -> None:
    """The service's path (user_posteriors in the worker, global_batch in the
    learner) separates two taste groups as the per-event path does."""
    rng = np.random.default_rng(1)
    m = ChoiceModel(ChoiceConfig(n_factors=3, sweep_every=200))
    hist: dict[str, list[str]] = {}
    for _ in range(40):  # minibatches of 20 events
        users, videos, pairs = [], [], []
        for _ in range(20):
            u = f"u{rng.integers(60)}"
            v = f"{'a' if int(u[1:]) % 2 == 0 else 'b'}{rng.integers(10)}"
            h = hist.setdefault(u, [])
            if v in h:
                h.remove(v)
            h.append(v)
            if u not in users:
                users.append(u)
            if v not in videos:
                videos.append(v)
            pairs.append((users.index(u), videos.index(v)))
        m.register(videos)
        means, covs = m.user_posteriors([hist[u] for u in users])
        m.global_batch(users, videos, list(dict.fromkeys(pairs)), means, covs)
    even = m.user_posteriors([hist["u0"][-5:]])[0][0]
    ey = even.copy()
    ey[-1] = 1.0
    s = m.video_mean() @ ey
    a_rows = [m.video_index[f"a{j}"] for j in range(10)]
    b_rows = [m.video_index[f"b{j}"] for j in range(10)]
    assert s[a_rows].mean() > s[b_rows].mean() + 0.2


def test_snapshot_and_checkpoint_round_trips() -> None:
    m, hist = _trained()
    w = import_snapshot(export_snapshot(m), m.config)  # float32 video arrays, as workers get them
    got, _ = w.user_posteriors([hist["u0"]])
    want, _ = m.user_posteriors([hist["u0"]])
    np.testing.assert_allclose(got, want, atol=1e-4)
    r = import_checkpoint(export_checkpoint(m), m.config)
    assert (r.clock, r.n_videos, len(r._pairs)) == (m.clock, m.n_videos, len(m._pairs))
    np.testing.assert_allclose(r.video_mean(), m.video_mean())
    # it goes on learning: a sweep over the restored window changes little
    r.sweep()
    m.sweep()
    np.testing.assert_allclose(r.video_mean(), m.video_mean(), atol=1e-6)
