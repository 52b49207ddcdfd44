"""Hostile input to the event decoder (issue 14, item 1): whatever the bytes
of a record, the decoder returns a valid event or raises ``InvalidEvent`` with
one of the documented reasons -- never another exception, which would stop the
worker (a few-hundred-digit integer in ``minutes`` raised OverflowError).

Property-based (hypothesis): arbitrary bytes, arbitrary JSON, and JSON events
whose fields are drawn from hostile values; plus one example per row of the
issue's table."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer import event as ev
from streamer.event import EventLimits, InvalidEvent, WatchEvent, check_key, decode_event, valid_id

NOW = 1_800_000_000_000
LIMITS = EventLimits()
BIG = EventLimits(max_payload_bytes=1 << 20)


def outcome(raw: bytes | None, limits: EventLimits = LIMITS) -> WatchEvent | str:
    """The event, or the reason; any other exception fails the test."""
    try:
        e = decode_event(raw, limits, NOW)
    except InvalidEvent as err:
        assert err.reason in ev.REASONS, err.reason
        assert err.detail and len(err.detail) < 2000
        return err.reason
    assert_valid(e, limits)
    return e


def assert_valid(e: WatchEvent, limits: EventLimits) -> None:
    for text in (e.event_id, e.user_id, e.video_id):
        assert valid_id(text, limits.max_id_chars) and "\n" not in text
    assert math.isfinite(e.minutes) and 0 <= e.minutes <= limits.max_minutes
    assert limits.min_ts_ms <= e.ts_ms <= NOW + limits.max_future_ms


def event(**over: object) -> bytes:
    d: dict[str, object] = {
        "event_id": "e1",
        "user_id": "u1",
        "video_id": "v1",
        "minutes": 12.5,
        "ts": NOW,
    }
    d.update(over)
    return json.dumps(d).encode()


# ------------------------------------------------------------ the rows
@pytest.mark.parametrize("field", ["minutes", "ts"])
def test_a_few_hundred_digit_integer_is_rejected_not_a_crash(field: str) -> None:
    # Before: OverflowError: int too large to convert to float (the worker exited 1).
    raw = event(**{field: 0}).replace(
        b'"%s": 0' % field.encode(), b'"%s": ' % field.encode() + b"9" * 400
    )
    assert b"9" * 400 in raw
    assert outcome(raw) == (ev.NOT_FINITE if field == "minutes" else ev.FUTURE_TIMESTAMP)
    neg = raw.replace(b"9" * 400, b"-" + b"9" * 400)
    assert outcome(neg) == (ev.NOT_FINITE if field == "minutes" else ev.BAD_TIMESTAMP)


def test_huge_integer_ids_are_bad_ids() -> None:
    assert outcome(event(user_id=10**300)) == ev.BAD_ID
    assert outcome(event(video_id=-(10**4000)), BIG) == ev.BAD_ID


@pytest.mark.parametrize(
    "vid", ["a\nb", "a\rb", "tab\there", "nul\x00", "\u2028", "zw\u200bsp", ""]
)
def test_ids_outside_the_alphabet_are_bad_ids(vid: str) -> None:
    # Before: "a\nb" was accepted; the learner's publish then raised ValueError forever.
    assert outcome(event(video_id=vid)) == ev.BAD_ID
    assert outcome(event(user_id=vid)) == ev.BAD_ID


def test_printable_ids_of_any_script_are_accepted() -> None:
    e = outcome(event(user_id="usér 42", video_id="映画-7 {x}"))
    assert isinstance(e, WatchEvent) and (e.user_id, e.video_id) == ("usér 42", "映画-7 {x}")


@pytest.mark.parametrize(
    "ts",
    [
        1,
        0,
        946_684_799_999,
        "0001-01-01T00:00:00",
        "0001-01-01T00:00:00+05:00",
        "1999-12-31T23:59:59Z",
    ],
)
def test_timestamps_before_the_plausible_window_are_rejected(ts: object) -> None:
    # Before: a ts of 1 ms or year 1 was applied as if valid.
    assert outcome(event(ts=ts)) == ev.BAD_TIMESTAMP


@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59", 1e300, 10**30])
def test_timestamps_far_in_the_future_are_rejected(ts: object) -> None:
    assert outcome(event(ts=ts)) == ev.FUTURE_TIMESTAMP


def test_the_window_is_a_setting() -> None:
    assert decode_event(event(ts=1), EventLimits(min_ts_ms=0), NOW).ts_ms == 1
    assert outcome(event(ts=946_684_800_000)) != ev.BAD_TIMESTAMP


def test_key_must_be_the_user_id() -> None:
    e = decode_event(event(user_id=42), LIMITS, NOW)
    check_key(e, b"42")
    for key in (None, b"", b"43", b"42 ", b"\xff\xfe", b"4" * 100_000):
        with pytest.raises(InvalidEvent) as exc:
            check_key(e, key)
        assert exc.value.reason == ev.KEY_MISMATCH and len(exc.value.detail) < 300


# ------------------------------------------------------------ properties
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(st.binary(max_size=6000))
def test_arbitrary_bytes_are_an_event_or_a_reason(raw: bytes) -> None:
    outcome(raw)
    outcome(raw, BIG)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@PROPS
@given(json_values)
def test_arbitrary_json_is_an_event_or_a_reason(value: object) -> None:
    outcome(json.dumps(value).encode())


hostile_ints = st.one_of(
    st.integers(),
    st.integers(min_value=10**17, max_value=10**400),
    st.integers(min_value=-(10**400), max_value=-(10**17)),
    st.sampled_from([0, 1, -1, 2**63, 2**64, 10**308, 10**309, 2**1024, 946_684_800_000, NOW]),
)
hostile_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(
        [
            "",
            "a\nb",
            "\x00",
            "\ud800",
            "0001-01-01",
            "9999-12-31T23:59:59+14:00",
            "2027-01-15T08:00:00",
        ]
    ),
)
hostile_field = st.one_of(
    hostile_ints,
    hostile_text,
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@PROPS
@given(
    st.fixed_dictionaries(
        {k: hostile_field for k in ("event_id", "user_id", "video_id", "minutes", "ts")}
    )
)
def test_hostile_field_values_are_an_event_or_a_reason(d: dict[str, object]) -> None:
    # json.dumps writes inf/nan as Infinity/NaN and escapes surrogates, as a
    # careless producer might; the big-int digits limit is lifted to write 10**400.
    raw = json.dumps(d).encode()
    outcome(raw)
    outcome(raw, BIG)


@PROPS
@given(st.binary(max_size=300) | st.none(), st.text(max_size=50))
def test_arbitrary_keys_match_or_mismatch(key: bytes | None, uid: str) -> None:
    e = WatchEvent("e", uid or "u", "v", 1.0, NOW)
    try:
        check_key(e, key)
    except InvalidEvent as err:
        assert err.reason == ev.KEY_MISMATCH and key != e.user_id.encode()
    else:
        assert key == e.user_id.encode()
