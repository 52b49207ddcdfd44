"""Pure pieces of the streamer: skip rules, offsets to commit, internal codecs,
histogram quantiles, settings masking. No broker or Redis needed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from kafka import TopicPartition

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF
from model.posterior import UserState
from streamer.event import WatchEvent
from streamer.service.metrics import Histogram, histogram_quantile, parse_histogram
from streamer.service.model_update import SourcedEvent, select_new_events, update_users
from streamer.service.offsets import next_offsets
from streamer.service.settings import StreamSettings
from streamer.service.store.global_stats_record import (
    BlobError,
    decode_snapshot,
    decode_stats,
    encode_snapshot,
    encode_stats,
)
from streamer.service.store.user_store import StoredUser


def se(
    eid: str, uid: str, part: int, off: int, vid: str = "v", minutes: float = 1.0
) -> SourcedEvent:
    return SourcedEvent(WatchEvent(eid, uid, vid, minutes, 1000 + off), part, off, 5000 + off)


def test_skip_rules_stored_offset_and_event_ids() -> None:
    stored = {"u": StoredUser(UserState(), partition=1, offset=10, event_ids=["old"])}
    events = [
        se("a", "u", 1, 9),  # at or below the stored offset: replay
        se("b", "u", 1, 10),  # replay
        se("old", "u", 1, 11),  # id already applied: duplicate
        se("c", "u", 1, 12),  # new
        se("c", "u", 1, 13),  # same id again in this batch: duplicate
        se("d", "u", 2, 3),  # another partition: the stored offset does not apply
        se("e", "w", 1, 5),  # new user
    ]
    keep, replay, dup = select_new_events(events, stored)
    assert [k.event.event_id for k in keep] == ["c", "d", "e"]
    assert (replay, dup) == (2, 2)


def test_update_users_writes_counts_offsets_and_id_window() -> None:
    model = OnlineHPMF(HPMFConfig(n_factors=2))
    events = [se(f"e{i}", "u", 0, i, vid=f"v{i % 2}") for i in range(5)] + [se("x", "w", 3, 7)]
    upd = update_users(model, events, {}, dedupe_window=3, now_ms=99)
    ru, rw = upd.records["u"], upd.records["w"]
    assert (ru.n_events, ru.partition, ru.offset, ru.updated_ms, ru.event_ms) == (5, 0, 4, 99, 1004)
    assert (rw.n_events, rw.partition, rw.offset) == (1, 3, 7)
    assert upd.event_ids["u"] == ["e2", "e3", "e4"]  # only the window is kept
    assert [h[0] for h in ru.history] == ["v1", "v0"]  # minutes summed per video, newest last
    assert ru.history[1][1] == pytest.approx(3.0)
    assert upd.applied == 6 and upd.stats is not None and upd.stats.n_events == 6
    # Replaying the same batch against what was written changes nothing.
    from streamer.reader.redis_record import user_state_from_record

    stored = {
        u: StoredUser(
            user_state_from_record(r), r.partition, r.offset, r.event_ms, upd.event_ids[u]
        )
        for u, r in upd.records.items()
    }
    again = update_users(model, events, stored, dedupe_window=3, now_ms=100)
    assert again.records == {} and again.stats is None and again.skipped_replay == 6


def test_next_offsets_is_one_past_the_highest_per_partition() -> None:
    recs = [
        SimpleNamespace(topic="t", partition=p, offset=o)
        for p, o in [(0, 5), (0, 3), (1, 9), (0, 7)]
    ]
    assert next_offsets(recs) == {TopicPartition("t", 0): 8, TopicPartition("t", 1): 10}


def test_global_stats_round_trip_exactly() -> None:
    m = OnlineHPMF(HPMFConfig(n_factors=2))
    upd = m.local_update(Batch.of(["a", "b", "a"], ["x", "y", "y"], [3.0, 1.0, 2.0]), {})
    back = decode_stats(encode_stats(upd.stats))
    for name in (
        "video_prec",
        "video_shift",
        "user_mean",
        "user_cov",
        "event_user",
        "event_video",
        "target",
    ):
        a, b = getattr(upd.stats, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name  # bit-exact: N workers == 1 worker
    assert back.video_ids == upd.stats.video_ids and back.n_events == 3
    with pytest.raises(BlobError):
        decode_stats(b'{"format":"other"}\n')


def test_snapshot_round_trip_and_import() -> None:
    m = OnlineHPMF(HPMFConfig(n_factors=2))
    m.learn(Batch.of(["a", "b"], ["x", "y"], [3.0, 1.0]), {})
    snap = decode_snapshot(encode_snapshot(m.export_globals()))
    w = OnlineHPMF(HPMFConfig(n_factors=2))
    w.import_globals(snap)
    assert w.version == m.version and w.video_ids == ["x", "y"]
    assert np.allclose(w.pooled_prior().cov, m.pooled_prior().cov)


def test_histogram_quantiles_from_scrapes() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    h = Histogram("f_ms", "x", [10, 20, 50, 100], registry=reg)
    h.observe_many([5.0] * 50 + [15.0] * 40 + [70.0] * 10)
    bounds, cum = parse_histogram(generate_latest(reg).decode(), "f_ms")
    assert bounds == [10, 20, 50, 100] and cum == [50, 90, 90, 100, 100]
    assert histogram_quantile(0.5, bounds, cum) == pytest.approx(10.0)
    assert 50 < histogram_quantile(0.99, bounds, cum) <= 100


def test_settings_from_env_and_masking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPMF_TOPIC", "t1")
    monkeypatch.setenv("HPMF_REDIS_URL", "redis://:hunter2@h:6379/0")
    s = StreamSettings(batch_max_events=7)
    assert (s.topic, s.dead_letter_topic, s.batch_max_events) == ("t1", "t1.dlq", 7)
    assert "hunter2" not in str(s.describe())


def test_bad_model_settings_are_refused_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    from pydantic import ValidationError

    from streamer.cli.stream import main

    with pytest.raises(ValidationError, match="global_mean_prior must be finite"):
        StreamSettings(global_mean_prior=float("nan"))
    # The command says so and exits 2 before reaching Kafka or Redis.
    assert main(["--global-mean-prior", "nan", "--metrics-port", "0"]) == 2
    assert "hpmf stream: invalid settings" in capsys.readouterr().err


def test_read_framing_is_binary_safe_and_posterior_is_restored() -> None:
    from streamer.reader.redis_record import CorruptRecordError, decode_user_read
    from streamer.service.store.user_scripts import READ_FIELDS, split_fields

    mean = np.array([0.5, -1.0], dtype="<f4").tobytes()
    cov = np.eye(2, dtype="<f4").tobytes()
    # the read script's order: the codec's fields, then eids and sa
    assert READ_FIELDS == ("n", "p", "o", "et", "hist", "mean", "cov", "eids", "sa")
    fields = [b"3", b"1", b"42", b"", b'[["v",2.0,3]]', mean, cov, b"[]", b"12.5"]
    raw = b"".join(b"%d:%b" % (len(f), f) for f in fields)
    assert split_fields(raw) == fields  # NUL bytes, colons or empties inside fields do not matter
    back = decode_user_read(fields[:7])
    assert back.mean is not None and back.cov is not None
    assert back.mean.tolist() == [0.5, -1.0] and back.cov.shape == (2, 2)
    assert (back.n_events, back.partition, back.offset, back.event_ms) == (3, 1, 42, 0)
    assert back.history == {"v": (2.0, 3)}
    empty = decode_user_read([b"3", b"1", b"42", b"5", b"[]", b"", b""])
    assert empty.mean is None and empty.cov is None  # a record without a posterior stays without
    with pytest.raises(CorruptRecordError):  # the history is checked as the reader checks it
        decode_user_read([b"3", b"1", b"42", b"5", b'[["v", true, 3]]', mean, cov])
