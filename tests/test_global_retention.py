"""Which published global versions stay in Redis (streamer/service/store/global_retention.py),
and the reader's fall-back when the version it was told about is gone."""

from __future__ import annotations

import time

import numpy as np

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF
from streamer.reader.lookup import Lookup
from streamer.reader.redis_record import (
    global_current_key,
    global_key,
    global_record_from_snapshot,
    write_global_record,
)
from streamer.service.store.global_retention import queue_drop, superseded, versions_key


def _publish(client, prefix: str, model: OnlineHPMF, keep: int) -> None:  # type: ignore[no-untyped-def]
    snap = model.export_globals()
    drop = superseded(client, prefix, snap.version, keep)
    pipe = client.pipeline(transaction=True)
    write_global_record(
        pipe, prefix, global_record_from_snapshot(snap, int(time.time() * 1000)), 3600, None
    )
    queue_drop(pipe, prefix, snap.version, drop)
    pipe.execute()


def test_only_the_newest_versions_stay(redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    m = OnlineHPMF(HPMFConfig(n_factors=2))
    for k in range(6):
        m.learn(Batch.of(["a", "b"], [f"v{k}", "v0"], [1.0, 2.0]), {})
        _publish(redis_client, key_prefix, m, keep=2)
    live = sorted(int(v) for v in redis_client.zrange(versions_key(key_prefix), 0, -1))
    assert live == [5, 6]
    assert [redis_client.exists(global_key(key_prefix, v)) for v in range(1, 7)] == [
        0,
        0,
        0,
        0,
        1,
        1,
    ]
    assert int(redis_client.get(global_current_key(key_prefix))) == 6
    # Republishing the current version drops nothing it needs.
    _publish(redis_client, key_prefix, m, keep=1)
    assert redis_client.exists(global_key(key_prefix, 6)) and not redis_client.exists(
        global_key(key_prefix, 5)
    )


def test_reader_follows_current_when_its_version_was_deleted(redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    """``current`` said 1, but by the time the reader fetched g:{1} the
    writer had published 2 and deleted 1: the reader reads ``current`` again
    instead of failing with NoGlobalsError."""
    m = OnlineHPMF(HPMFConfig(n_factors=2))
    m.learn(Batch.of(["a"], ["v0"], [1.0]), {})
    _publish(redis_client, key_prefix, m, keep=1)
    m.learn(Batch.of(["b"], ["v1"], [3.0]), {})
    _publish(redis_client, key_prefix, m, keep=1)  # 1 deleted, current = 2
    assert not redis_client.exists(global_key(key_prefix, 1))
    reader = Lookup(redis_client, key_prefix)
    reader._on_pointer(b"1")  # the stale pointer a reader saw a moment ago
    assert reader.model().version == 2
    post = reader.user_posterior("nobody")
    assert post.model_version == 2 and np.isfinite(post.mean).all()


def test_redis_checkpoint_without_duplicate_posteriors_restores_the_same_model() -> None:
    """The learner's checkpoint in Redis leaves out the video posteriors (the
    snapshot beside it holds them): it restores the identical model, and is
    about a third smaller."""
    import torch

    from model.checkpoint import state_dict, to_bytes
    from streamer.service.store.global_publish import load_redis_checkpoint, redis_checkpoint
    from streamer.service.store.global_stats_record import encode_snapshot

    m = OnlineHPMF(HPMFConfig(n_factors=3, svi_min_events=8))
    rng = np.random.default_rng(0)
    for _ in range(5):
        m.learn(
            Batch.of(
                [f"u{x}" for x in rng.integers(0, 20, 30)],
                [f"v{x}" for x in rng.integers(0, 200, 30)],
                rng.uniform(1, 9, 30),
            ),
            {},
        )
    small = redis_checkpoint(m)
    back = load_redis_checkpoint(small, encode_snapshot(m.export_globals()))
    a, b = state_dict(m), state_dict(back)
    for k in ("v_prec", "v_shift", "v_time", "v_mean", "v_cov"):
        assert torch.equal(a[k], b[k]), k
    assert back.version == m.version and back.video_ids == m.video_ids and back.n_seen == m.n_seen
    assert len(small) < 0.75 * len(to_bytes(m))
    assert (
        load_redis_checkpoint(to_bytes(m), None).version == m.version
    )  # a complete one still loads
