"""The batch write is fenced: a worker whose users changed in Redis since it
read them (the partition was handed to another worker while its batch was in
flight) writes nothing, instead of overwriting the newer events."""

from __future__ import annotations

import pytest

from model.config import HPMFConfig
from model.online import OnlineHPMF
from streamer.event import WatchEvent
from streamer.service.model_update import SourcedEvent, update_users
from streamer.service.store.user_store import (
    UserBatchWrite,
    WriteConflict,
    load_users,
    write_batch,
)

pytestmark = pytest.mark.integration


def _events(uid: str, offsets: range) -> list[SourcedEvent]:
    return [
        SourcedEvent(WatchEvent(f"{uid}-{o}", uid, f"v{o % 3}", 2.0, 1000 + o), 0, o, 1000 + o)
        for o in offsets
    ]


def _write(redis_client, prefix: str, model: OnlineHPMF, events, expected=None):  # type: ignore[no-untyped-def]
    versions: dict[str, bytes] = {}
    stored, _ = load_users(
        redis_client,
        prefix,
        sorted({e.event.user_id for e in events}),
        f"{prefix}:g:current",
        versions,
    )
    upd = update_users(model, events, stored, dedupe_window=64, now_ms=5000)
    write_batch(
        redis_client,
        prefix,
        UserBatchWrite(
            upd.records,
            upd.event_ids,
            60,
            f"{prefix}:gstats",
            "w",
            None,
            upd.seen_at,
            expected=versions if expected is None else expected,
        ),
    )
    return versions


def test_stale_writer_is_fenced_and_writes_nothing(redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    model = OnlineHPMF(HPMFConfig(n_factors=2))
    # Worker A reads user u (absent) ...
    versions_a: dict[str, bytes] = {}
    stored_a, _ = load_users(redis_client, key_prefix, ["u"], f"{key_prefix}:g:current", versions_a)
    assert versions_a == {"u": b"|"}  # event count | forget marker
    upd_a = update_users(model, _events("u", range(0, 5)), stored_a, dedupe_window=64, now_ms=5000)
    # ... meanwhile worker B, the partition's new owner, applies 8 events of u.
    _write(redis_client, key_prefix, model, _events("u", range(0, 8)))
    assert redis_client.hget(f"{key_prefix}:u:{{u}}", "n") == b"8"
    # A's write, computed from the stale read, must not land.
    with pytest.raises(WriteConflict):
        write_batch(
            redis_client,
            key_prefix,
            UserBatchWrite(
                upd_a.records,
                upd_a.event_ids,
                60,
                f"{key_prefix}:gstats",
                "A",
                b"stats",
                upd_a.seen_at,
                expected=versions_a,
            ),
        )
    assert redis_client.hget(f"{key_prefix}:u:{{u}}", "n") == b"8"
    assert redis_client.xlen(f"{key_prefix}:gstats") == 0  # nor its statistics
    # Re-read and recompute: A's events are at or below u's stored offset, so
    # nothing is applied twice.
    stored, _ = load_users(redis_client, key_prefix, ["u"], f"{key_prefix}:g:current")
    again = update_users(model, _events("u", range(0, 5)), stored, dedupe_window=64, now_ms=6000)
    assert again.records == {} and again.skipped_replay == 5


def test_fresh_writer_passes_the_fence(redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    model = OnlineHPMF(HPMFConfig(n_factors=2))
    assert _write(redis_client, key_prefix, model, _events("u", range(0, 3))) == {"u": b"|"}
    assert _write(redis_client, key_prefix, model, _events("u", range(3, 6))) == {"u": b"3|"}
    assert redis_client.hget(f"{key_prefix}:u:{{u}}", "n") == b"6"


def test_a_forget_between_read_and_write_fences_the_write(redis_client, key_prefix) -> None:  # type: ignore[no-untyped-def]
    """A worker read a user (absent, or present), then `hpmf forget` set the
    marker and deleted the record: the stale write must not bring them back."""
    from streamer.service.forget import forget_key, format_marker

    model = OnlineHPMF(HPMFConfig(n_factors=2))
    for present in (False, True):
        if present:
            _write(redis_client, key_prefix, model, _events("u", range(0, 2)))
        versions: dict[str, bytes] = {}
        stored, _ = load_users(redis_client, key_prefix, ["u"], f"{key_prefix}:g:current", versions)
        upd = update_users(
            model, _events("u", range(10, 13)), stored, dedupe_window=64, now_ms=5000
        )
        redis_client.set(forget_key(key_prefix, "u"), format_marker({0: 100}))
        redis_client.delete(f"{key_prefix}:u:{{u}}")
        with pytest.raises(WriteConflict):
            write_batch(
                redis_client,
                key_prefix,
                UserBatchWrite(
                    upd.records,
                    upd.event_ids,
                    60,
                    f"{key_prefix}:gstats",
                    "A",
                    b"stats",
                    upd.seen_at,
                    expected=versions,
                ),
            )
        assert not redis_client.exists(f"{key_prefix}:u:{{u}}")
        redis_client.delete(forget_key(key_prefix, "u"))
    # Re-read: the marker is seen, the events (offsets below the cutoff) are skipped.
    redis_client.set(forget_key(key_prefix, "u"), format_marker({0: 100}))
    forgotten: dict[str, dict[int, int]] = {}
    stored, _ = load_users(
        redis_client, key_prefix, ["u"], f"{key_prefix}:g:current", None, forgotten
    )
    assert forgotten == {"u": {0: 100}}
    again = update_users(model, _events("u", range(10, 13)), stored, 64, 6000, forgotten)
    assert again.records == {} and again.skipped_forgotten == 3
    later = update_users(model, _events("u", range(100, 102)), stored, 64, 6000, forgotten)
    assert (
        set(later.records) == {"u"}
        and later.skipped_forgotten == 0
        and later.records["u"].n_events == 2
    )
