"""The event contract (streamer.event): what is accepted, and the reason for
every kind of rejection (the ``error`` header of a dead-letter record)."""

from __future__ import annotations

import json

import pytest

from streamer import event as ev
from streamer.event import EventLimits, InvalidEvent, decode_event, encode_event

NOW = 1_800_000_000_000
LIMITS = EventLimits(max_minutes=600, max_payload_bytes=512, max_future_ms=60_000, max_id_chars=32)


def good(**over: object) -> dict[str, object]:
    d: dict[str, object] = {
        "event_id": "e1",
        "user_id": "u1",
        "video_id": "v1",
        "minutes": 12.5,
        "ts": NOW,
    }
    d.update(over)
    return d


def raw(d: dict[str, object]) -> bytes:
    return json.dumps(d).encode()


def reason(payload: bytes) -> str:
    with pytest.raises(InvalidEvent) as exc:
        decode_event(payload, LIMITS, NOW)
    return exc.value.reason


def test_valid_event_is_normalised() -> None:
    e = decode_event(raw(good(user_id=42, video_id=7, minutes=3)), LIMITS, NOW)
    assert (e.event_id, e.user_id, e.video_id, e.minutes, e.ts_ms) == ("e1", "42", "7", 3.0, NOW)


def test_iso_timestamps_with_and_without_zone() -> None:
    a = decode_event(raw(good(ts="2027-01-15T08:00:00+00:00")), LIMITS, NOW)
    b = decode_event(raw(good(ts="2027-01-15T08:00:00")), LIMITS, NOW)  # naive = UTC
    c = decode_event(raw(good(ts="2027-01-15T09:00:00+01:00")), LIMITS, NOW)
    assert a.ts_ms == b.ts_ms == c.ts_ms == 1_800_000_000_000


def test_extra_fields_are_ignored_and_zero_minutes_accepted() -> None:
    e = decode_event(raw(good(minutes=0, device="tv")), LIMITS, NOW)
    assert e.minutes == 0.0


def test_encode_event_round_trips() -> None:
    e = decode_event(encode_event("x", "u", "v", 1.5, NOW - 5), LIMITS, NOW)
    assert (e.event_id, e.user_id, e.video_id, e.minutes, e.ts_ms) == ("x", "u", "v", 1.5, NOW - 5)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"x" * 600, ev.PAYLOAD_TOO_LARGE),
        (b"\xff\xfe{}", ev.INVALID_UTF8),
        (b'{"event_id": "e1", "user_id": "\xc3\x28"}', ev.INVALID_UTF8),
        (b"{not json", ev.INVALID_JSON),
        (b"", ev.INVALID_JSON),
        (None, ev.INVALID_JSON),
        (b"[1, 2]", ev.NOT_AN_OBJECT),
        (raw({k: v for k, v in good().items() if k != "video_id"}), ev.MISSING_FIELD),
        (raw({k: v for k, v in good().items() if k != "ts"}), ev.MISSING_FIELD),
        (raw(good(minutes="12")), ev.WRONG_TYPE),
        (raw(good(minutes=True)), ev.WRONG_TYPE),
        (raw(good(user_id=True)), ev.WRONG_TYPE),
        (raw(good(user_id=1.5)), ev.WRONG_TYPE),
        (raw(good(video_id=None)), ev.WRONG_TYPE),
        (raw(good(event_id=5)), ev.WRONG_TYPE),
        (raw(good(ts=[1])), ev.WRONG_TYPE),
        (raw(good()).replace(b"12.5", b"NaN"), ev.NOT_FINITE),
        (raw(good()).replace(b"12.5", b"Infinity"), ev.NOT_FINITE),
        (raw(good()).replace(b"12.5", b"1e999"), ev.NOT_FINITE),
        (raw(good(minutes=-0.5)), ev.NEGATIVE_MINUTES),
        (raw(good(minutes=601)), ev.ABSURD_MINUTES),
        (raw(good(ts="yesterday")), ev.BAD_TIMESTAMP),
        (raw(good(ts=-1)), ev.BAD_TIMESTAMP),
        (raw(good(ts=NOW + 61_000)), ev.FUTURE_TIMESTAMP),
        (raw(good(ts="2099-01-01T00:00:00Z")), ev.FUTURE_TIMESTAMP),
        (raw(good(user_id="")), ev.BAD_ID),
        (raw(good(video_id="v" * 33)), ev.BAD_ID),
    ],
)
def test_every_kind_of_invalid_event_has_its_reason(payload: bytes, why: str) -> None:
    assert reason(payload) == why
    assert why in ev.REASONS


def test_slightly_future_timestamp_within_skew_is_accepted() -> None:
    assert decode_event(raw(good(ts=NOW + 59_000)), LIMITS, NOW).ts_ms == NOW + 59_000
