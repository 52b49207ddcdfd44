"""The globals across workers (streamer.service.store.global_store) against the real Redis:
one learner by lease, statistics applied in stream order exactly once across
a learner hand-over, publishes fenced by the lease, non-learners importing the
snapshot (with the learner's event clock)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF
from streamer.reader.redis_record import decode_global_record, global_key, global_prefix
from streamer.service.metrics import StreamMetrics
from streamer.service.store.global_stats_record import encode_stats
from streamer.service.store.global_store import GlobalStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
CFG = HPMFConfig(n_factors=2, transform="log1p")


def store(client, prefix: str, wid: str) -> GlobalStore:  # type: ignore[no-untyped-def]
    return GlobalStore(
        client,
        prefix,
        wid,
        CFG,
        StreamMetrics(),
        lease_ms=600,
        publish_every_batches=2,
        publish_every_ms=60_000,
    )


def batches(n: int) -> list[Batch]:
    rng = np.random.default_rng(0)
    return [
        Batch.of(
            [f"u{x}" for x in rng.integers(0, 30, 40)],
            [f"v{x}" for x in rng.integers(0, 12, 40)],
            rng.exponential(10, 40),
        )
        for _ in range(n)
    ]


def write_stats(client, s: GlobalStore, model: OnlineHPMF, b: Batch) -> None:  # type: ignore[no-untyped-def]
    stats = model.local_update(b, {}).stats
    sid = client.xadd(s.stream_key, {"w": s.worker_id, "b": encode_stats(stats)})
    s.written(sid, stats)


def test_one_learner_hand_over_and_exactly_once(redis_store) -> None:  # type: ignore[no-untyped-def]
    # On the cluster the global keys carry one hash tag: the lease-fenced
    # publish (WATCH + MULTI) runs on the one node that owns that slot.
    redis_client = redis_store.client
    key_prefix = global_prefix(redis_store.prefix, redis_store.cluster)
    a, b = store(redis_client, key_prefix, "A"), store(redis_client, key_prefix, "B")
    a.maintain()
    b.maintain()
    assert a.is_learner and not b.is_learner  # the lease admits one
    bs = batches(6)
    for x in bs[:4]:
        write_stats(redis_client, a, a.model, x)
        a.learn()
    assert a.model.version == 4 and a.published_version == 4
    assert redis_client.xlen(a.stream_key) == 0  # trimmed by the publish
    # Two more entries, written by the non-learner; then A dies (no release).
    for x in bs[4:]:
        write_stats(redis_client, b, b.model, x)
    time.sleep(0.7)  # A's lease lapses
    b.maintain()
    assert b.is_learner
    b.learn()
    assert b.model.version == 6  # resumed at A's checkpoint: 4 + the 2 unapplied, none twice
    # A wakes up and tries to publish: fenced, it steps down.
    a.unpublished = 1
    assert a.publish() is False and not a.is_learner
    cur = int(redis_client.get(redis_store.global_key("g:current")))
    assert cur == 6
    assert decode_global_record(redis_client.hgetall(global_key(key_prefix, cur))).version == 6
    # A, now a worker, imports B's snapshot with B's event clock.
    a.refresh(None, force=True)
    assert a.model.version == 6 and a.model.n_seen == b.model.n_seen > 0
    assert not a.model.learner


def test_n_workers_feed_the_learner_what_one_worker_would(redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    """Same statistics in the same order give bit-identical globals, whoever wrote them."""
    bs = batches(4)
    single = OnlineHPMF(CFG)  # applies the statistics in-process, no Redis
    lead = store(redis_client, key_prefix, "L")
    lead.maintain()
    other = store(redis_client, key_prefix, "W")
    # The local steps happen on a replica that matches `single` step for step
    # (as a non-learner with a fresh snapshot would); the stats travel via Redis.
    replica = OnlineHPMF(CFG)
    for k, x in enumerate(bs):
        stats = replica.local_update(x, {}).stats
        replica.apply_global(stats)
        single.apply_global(stats)
        writer = lead if k % 2 == 0 else other
        sid = redis_client.xadd(lead.stream_key, {"w": writer.worker_id, "b": encode_stats(stats)})
        writer.written(sid, stats)
        lead.learn()
    a, b = lead.model.export_globals(), single.export_globals()
    assert a.version == b.version == 4
    assert np.array_equal(a.video_mean, b.video_mean) and np.array_equal(a.video_cov, b.video_cov)
    assert a.b0 == b.b0 and a.sigma == b.sigma


def test_an_ineligible_worker_never_takes_the_lease(redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    """HPMF_LEARNER_ELIGIBLE=false (the workers of deploy/k8s/worker.yaml):
    with the lease free it still does not become the learner; an eligible
    process then does."""
    w = GlobalStore(
        redis_client, key_prefix, "W", CFG, StreamMetrics(), lease_ms=600, eligible=False
    )
    for _ in range(3):
        w.maintain()
        time.sleep(0.35)
    assert not w.is_learner and redis_client.get(f"{key_prefix}:learner:lease") is None
    assert w.metrics.learner.get() == 0
    lr = store(redis_client, key_prefix, "L")
    lr.maintain()
    assert lr.is_learner and redis_client.get(f"{key_prefix}:learner:lease") == b"L"
