"""The learner against statistics it cannot publish (issue 14, item 1, the
newline video id row), on the real Redis: before, ``publish`` raised
ValueError on every attempt (the entry stayed in the stream, every restart
crashed again, the global model stayed frozen)."""

from __future__ import annotations

import pytest

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF
from streamer.reader.redis_record import decode_global_record, global_key
from streamer.service.metrics import StreamMetrics
from streamer.service.store.global_stats_record import encode_stats
from streamer.service.store.global_store import GlobalStore

pytestmark = [pytest.mark.integration]
CFG = HPMFConfig(n_factors=2)


def _stats(videos: list[str]):  # type: ignore[no-untyped-def]
    return (
        OnlineHPMF(CFG)
        .local_update(Batch.of(["u"] * len(videos), videos, [3.0] * len(videos)), {})
        .stats
    )


def _store(redis_client, prefix: str, dead: list) -> GlobalStore:  # type: ignore[no-untyped-def]
    g = GlobalStore(
        redis_client,
        prefix,
        "w1",
        CFG,
        StreamMetrics(),
        publish_every_batches=1,
        quarantine=lambda sid, payload, reason, detail: dead.append((sid, reason, payload)),
    )
    g.maintain()
    assert g.is_learner
    return g


def test_entry_with_a_newline_video_is_quarantined_and_the_learner_goes_on(
    redis_client, key_prefix
) -> None:  # type: ignore[no-untyped-def]
    dead: list = []
    stream = f"{key_prefix}:gstats"
    bad = redis_client.xadd(
        stream, {"w": b"old", "b": encode_stats(_stats(["ok-1", "bad\nvideo"]))}
    ).decode()
    redis_client.xadd(stream, {"w": b"old", "b": b"not a stats payload"})
    redis_client.xadd(stream, {"w": b"old", "b": encode_stats(_stats(["ok-2"]))})
    g = _store(redis_client, key_prefix, dead)
    assert g.learn() == 3
    assert [(sid, reason) for sid, reason, _ in dead][0] == (bad, "unpublishable_video_id")
    assert [reason for _, reason, _ in dead] == ["unpublishable_video_id", "unreadable_stats"]
    v = int(redis_client.get(f"{key_prefix}:g:current"))
    rec = decode_global_record(redis_client.hgetall(global_key(key_prefix, v)))
    assert rec.video_ids == ["ok-2"]
    assert g.metrics.quarantined.get("unpublishable_video_id") == 1
    assert redis_client.xlen(stream) == 0  # trimmed past them: no restart meets them again


def test_a_model_that_already_holds_a_bad_video_publishes_without_it(
    redis_client, key_prefix
) -> None:  # type: ignore[no-untyped-def]
    dead: list = []
    g = _store(redis_client, key_prefix, dead)
    g.model.apply_global(_stats(["fine", "tab\there"]))  # as restored from an old checkpoint
    g.unpublished = 1
    assert g.publish()
    v = int(redis_client.get(f"{key_prefix}:g:current"))
    rec = decode_global_record(redis_client.hgetall(global_key(key_prefix, v)))
    assert rec.video_ids == ["fine"] and rec.video_mean.shape[0] == 1
    assert g.publish()  # and again: logged once, publishes every time
    assert g.metrics.quarantined.get("unpublishable_video_id") == 1
