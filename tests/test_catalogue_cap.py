"""Item 2 of issue 14, the catalogue cap: a flood of new video ids must not grow
the model, the published global record or the checkpoint without bound.

Before the cap (``max_videos=0``, the old behaviour) every new id stayed for
good: 20,000 new ids took the catalogue 435 -> 20,435 and each published
global record 275 KB -> 13 MB. These tests pin both sides on the model (no
I/O); tests/test_stream_bounded_memory.py shows it through the real service."""

from __future__ import annotations

import numpy as np
import torch

from model.batch import Batch
from model.checkpoint import from_bytes, to_bytes
from model.config import HPMFConfig
from model.online import OnlineHPMF
from streamer.reader.redis_record import encode_global_record, global_record_from_snapshot


def _flood(model: OnlineHPMF, n_new: int, batch: int = 500, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for start in range(0, n_new, batch):
        vids = [f"flood-{k}" for k in range(start, min(start + batch, n_new))]
        users = [f"u{int(x)}" for x in rng.integers(0, 300, len(vids))]
        model.learn(Batch.of(users, vids, rng.uniform(1, 30, len(vids))), {})


def _record_bytes(model: OnlineHPMF) -> int:
    fields = encode_global_record(global_record_from_snapshot(model.export_globals(), 0))
    return sum(len(v) for v in fields.values())


def test_without_a_cap_a_flood_grows_the_catalogue_and_record_without_bound() -> None:
    """The defect, reproduced: no cap means every id ever seen is kept."""
    m = OnlineHPMF(HPMFConfig(n_factors=4, max_videos=0, svi_min_events=100000))
    _flood(m, 4000)
    assert m.n_videos == 4000
    small = OnlineHPMF(HPMFConfig(n_factors=4, max_videos=0, svi_min_events=100000))
    _flood(small, 400)
    assert _record_bytes(m) > 9 * _record_bytes(small)  # linear in the ids seen


def test_the_cap_bounds_catalogue_record_and_checkpoint_under_a_flood() -> None:
    cap = 1000
    m = OnlineHPMF(HPMFConfig(n_factors=4, max_videos=cap, svi_min_events=256))
    sizes = []
    for k in range(8):  # 8 x 1000 new ids
        if k == 0:
            _flood(m, 1000)
        else:
            _flood_named(m, k)
        assert m.n_videos <= cap
        sizes.append(_record_bytes(m))
    assert m.evicted_videos >= 7000
    assert max(sizes) <= sizes[0] * 1.01  # flat once the cap is reached
    ckpt = from_bytes(to_bytes(m))  # the checkpoint round-trips after compaction
    assert ckpt.video_ids == m.video_ids and ckpt.n_videos <= cap
    # The newest videos are the ones kept; forgotten ones come back at the prior.
    assert "later-7-999" in m.video_index and "flood-0" not in m.video_index
    mean, std = m.predict([None, None], ["flood-0", "later-7-999"])
    assert np.isfinite(mean).all() and np.isfinite(std).all()


def _flood_named(m: OnlineHPMF, k: int) -> None:
    rng = np.random.default_rng(k)
    for start in range(0, 1000, 500):
        vids = [f"later-{k}-{j}" for j in range(start, start + 500)]
        users = [f"u{int(x)}" for x in rng.integers(0, 300, 500)]
        m.learn(Batch.of(users, vids, rng.uniform(1, 30, 500)), {})


def test_least_recently_touched_videos_go_first() -> None:
    m = OnlineHPMF(HPMFConfig(n_factors=2, max_videos=100, svi_min_events=100000))
    m.learn(Batch.of(["a"] * 50, [f"old-{j}" for j in range(50)], [1.0] * 50), {})
    m.learn(Batch.of(["b"] * 50, [f"hot-{j}" for j in range(50)], [1.0] * 50), {})
    for _j in range(3):  # the hot videos are touched again, the old ones are not
        m.learn(Batch.of(["c"] * 50, [f"hot-{k}" for k in range(50)], [2.0] * 50), {})
    m.learn(Batch.of(["d"] * 20, [f"new-{j}" for j in range(20)], [1.0] * 20), {})  # 120 > 100
    assert m.n_videos == 90  # down to nine tenths of the cap at once
    assert all(f"hot-{k}" in m.video_index for k in range(50))
    assert all(f"new-{k}" in m.video_index for k in range(20))
    assert sum(f"old-{k}" in m.video_index for k in range(50)) == 20


def test_svi_buffer_survives_eviction() -> None:
    """Buffered SVI statistics refer to rows; eviction remaps them and drops
    the forgotten videos' events instead of indexing the wrong rows."""
    m = OnlineHPMF(HPMFConfig(n_factors=3, max_videos=200, svi_min_events=2000))
    rng = np.random.default_rng(3)
    for k in range(12):
        vids = [f"v{k}-{j}" for j in range(100)]
        m.learn(
            Batch.of(
                [f"u{int(x)}" for x in rng.integers(0, 50, 100)], vids, rng.uniform(1, 9, 100)
            ),
            {},
        )
    assert m.n_videos <= 200 and np.isfinite(m.sigma) and np.isfinite(m.global_mean)
    # The replay window (model/replay_window.py) refers to rows too: remapped.
    _, video, _, _, _ = m.replay.arrays()
    assert len(video) > 0 and int(video.max()) < m.n_videos


def test_replay_window_is_remapped_by_eviction() -> None:
    m = OnlineHPMF(
        HPMFConfig(n_factors=2, max_videos=100, svi_min_events=100000, replay_warmup_events=10**9)
    )
    m.learn(Batch.of(["a"] * 60, [f"old-{j}" for j in range(60)], [1.0] * 60), {})
    m.learn(
        Batch.of(["b"] * 60, [f"new-{j}" for j in range(60)], [2.0] * 60), {}
    )  # 120 > 100: evict
    user, video, target, _, _ = m.replay.arrays()
    assert int(video.max()) < m.n_videos and len(video) == len(target)
    names = {m.video_ids[r] for r in video.tolist()}
    assert {f"new-{j}" for j in range(60)} <= names  # the kept ones still point at their own rows
    assert all(n in m.video_index for n in names)
    # Each row still points at the video its value came from.
    assert all(
        m.video_ids[r].startswith("new-") == (t == 2.0)
        for r, t in zip(video.tolist(), target.tolist(), strict=True)
    )


def test_eviction_keeps_each_videos_tables_and_window_share() -> None:
    """Every per-video table follows its video through the renumbering, the
    replay window's share of the natural parameters (_w_prec/_w_shift, which a
    replay sweep subtracts from _v_prec/_v_shift row by row) included: a share
    left at the old row would be subtracted from another video's evidence."""
    import dataclasses

    m = OnlineHPMF(HPMFConfig(n_factors=2, max_videos=1000, svi_min_events=100000))
    rng = np.random.default_rng(5)
    for _ in range(6):
        vids = [f"v{int(x)}" for x in rng.integers(0, 90, 200)]
        m.learn(
            Batch.of(
                [f"u{int(x)}" for x in rng.integers(0, 40, 200)], vids, rng.uniform(1, 9, 200)
            ),
            {},
        )
    n = m.n_videos
    tables = ("_v_prec", "_v_shift", "_w_prec", "_w_shift", "_v_time", "_v_mean", "_v_cov")
    before = {t: {v: getattr(m, t)[r].clone() for v, r in m.video_index.items()} for t in tables}
    assert any(
        float(x.abs().sum()) > 0 for x in before["_w_prec"].values()
    )  # the window holds a share
    m.config = dataclasses.replace(m.config, max_videos=n // 2)
    assert m.enforce_catalogue_cap() > 0
    assert 0 < m.n_videos < n
    for t in tables:
        for v, r in m.video_index.items():
            assert torch.equal(getattr(m, t)[r], before[t][v]), (t, v)
    _, video, _, _, _ = m.replay.arrays()
    assert len(video) > 0 and int(video.max()) < m.n_videos
