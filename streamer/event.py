"""The event contract: one watch event on the ``watch-events`` topic.

Keyed by user id, value JSON (UTF-8)::

    {"event_id": str, "user_id": str|int, "video_id": str|int,
     "minutes": float >= 0, "ts": ISO-8601 string or epoch milliseconds}

Unknown extra fields are ignored (producers may add some). Validation is
strict -- a string where a number belongs is a wrong type, not a number -- so
a producer bug surfaces in the dead-letter topic instead of in the model.
Every rejection carries a short machine-readable reason (the ``error`` header
of the dead-letter record and the ``reason`` label of the metric) and a
human-readable detail.

>>> s = EventLimits()
>>> e = decode_event(b'{"event_id":"e1","user_id":7,"video_id":"v9","minutes":3.5,"ts":1700000000000}', s, now_ms=1700000000000)
>>> e.user_id, e.video_id, e.minutes, e.ts_ms
('7', 'v9', 3.5, 1700000000000)
>>> decode_event(b'{"event_id":"e1","user_id":7,"video_id":"v9","minutes":-1,"ts":0}', s, now_ms=0)
Traceback (most recent call last):
...
streamer.event.InvalidEvent: negative_minutes: minutes must be >= 0, got -1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

# Reasons, the ``error`` header of a dead-letter record.
PAYLOAD_TOO_LARGE = "payload_too_large"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
NOT_FINITE = "not_finite"
NEGATIVE_MINUTES = "negative_minutes"
ABSURD_MINUTES = "absurd_minutes"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
BAD_ID = "bad_id"
KEY_MISMATCH = "key_mismatch"
DECODER_ERROR = "decoder_error"
REASONS = (
    PAYLOAD_TOO_LARGE,
    INVALID_UTF8,
    INVALID_JSON,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    NOT_FINITE,
    NEGATIVE_MINUTES,
    ABSURD_MINUTES,
    BAD_TIMESTAMP,
    FUTURE_TIMESTAMP,
    BAD_ID,
    KEY_MISMATCH,
    DECODER_ERROR,
)
"""``key_mismatch``: the Kafka key is not the ``user_id`` (see :func:`check_key`).
``decoder_error``: the decoder itself failed on the record (a bug, never a
contract rule); the worker dead-letters the record rather than stop on it."""

#: Earliest plausible event time by default: 2000-01-01T00:00:00Z.
MIN_TS_MS_DEFAULT = 946_684_800_000


class InvalidEvent(ValueError):
    """An event that breaks the contract; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


Id = StrictStr | StrictInt
Number = Annotated[float, Field(strict=True, allow_inf_nan=True)] | StrictInt


@with_config(ConfigDict(extra="ignore"))
class _WireEvent(TypedDict):
    """The JSON value as pydantic sees it; the checks pydantic cannot say
    precisely (finite, ranges, time) run afterwards with their own reasons.
    A TypedDict, not a BaseModel: validating into a dict costs 1.2 us per
    event here, a model instance 3.1 us."""

    event_id: StrictStr
    user_id: Id
    video_id: Id
    minutes: Number
    ts: StrictStr | Number


_validate_wire_json = TypeAdapter(_WireEvent).validator.validate_json


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A valid event, normalised: ids as text, time as epoch milliseconds."""

    event_id: str
    user_id: str
    video_id: str
    minutes: float
    ts_ms: int


@dataclass(frozen=True)
class EventLimits:
    max_minutes: float = 24 * 60.0
    max_payload_bytes: int = 4096
    max_future_ms: int = 5 * 60_000
    max_id_chars: int = 256
    min_ts_ms: int = MIN_TS_MS_DEFAULT


def _pydantic_reason(exc: ValidationError) -> InvalidEvent:
    err = exc.errors(include_url=False)[0]
    kind = err["type"]
    loc = ".".join(str(p) for p in err["loc"][:1])
    if kind == "json_invalid":
        ctx = str(err.get("ctx", {}).get("error", ""))
        if "utf-8" in ctx.lower() or "unicode" in ctx.lower():
            return InvalidEvent(INVALID_UTF8, f"payload is not valid UTF-8 ({ctx})")
        return InvalidEvent(INVALID_JSON, f"payload is not valid JSON ({ctx})")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return InvalidEvent(NOT_AN_OBJECT, "payload must be a JSON object")
    if kind == "missing":
        return InvalidEvent(MISSING_FIELD, f"field {loc!r} is missing")
    return InvalidEvent(WRONG_TYPE, f"field {loc!r}: {err['msg']} (got {err.get('input')!r:.60})")


def valid_id(text: str, max_chars: int = 256) -> bool:
    """The identifier alphabet: 1..``max_chars`` characters, each *printable*
    in Python's sense (``str.isprintable``): no character of the Unicode
    categories Other (Cc control characters such as newline, tab, NUL; Cf
    format; Cs surrogates; Co private use; Cn unassigned) or Separator (Zl,
    Zp, Zs), except the ASCII space. Letters, digits, marks, punctuation and
    symbols of any script are fine.

    Why: ids become Redis keys and are newline-joined in the published global
    record; a control character in one froze the global model.

    >>> valid_id("user-42"), valid_id("vidéo 7"), valid_id("a\\nb"), valid_id(""), valid_id("x" * 257)
    (True, True, False, False, False)
    """
    return 0 < len(text) <= max_chars and text.isprintable()


def _check_id(name: str, value: str | int, limits: EventLimits) -> str:
    if isinstance(value, int):
        # An integer id is its decimal text; one too long for the limit is
        # refused before it is converted (Python refuses str() of an integer
        # over 4,300 digits with a ValueError of its own).
        if value.bit_length() > 4 * limits.max_id_chars:
            raise InvalidEvent(
                BAD_ID,
                f"{name} must have 1..{limits.max_id_chars} characters (an integer of over {limits.max_id_chars} digits)",
            )
        value = str(value)
    if not 0 < len(value) <= limits.max_id_chars:
        raise InvalidEvent(
            BAD_ID, f"{name} must have 1..{limits.max_id_chars} characters, got {len(value)}"
        )
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise InvalidEvent(
            BAD_ID,
            f"{name} holds a non-printable character U+{ord(bad):04X} (control, format or separator)",
        )
    return value


def _ts_ms(ts: str | float | int) -> int:
    if isinstance(ts, str):
        try:
            dt = datetime.fromisoformat(ts)
            if dt.tzinfo is None:  # a naive time is taken as UTC, the only sane default
                dt = dt.replace(tzinfo=UTC)
            return int(dt.timestamp() * 1000)
        except (ValueError, OverflowError) as exc:
            raise InvalidEvent(BAD_TIMESTAMP, f"ts {ts[:40]!r} is not ISO-8601") from exc
    if isinstance(ts, int):
        return ts  # any size: the plausible window below rejects what is absurd
    if not math.isfinite(ts):
        raise InvalidEvent(BAD_TIMESTAMP, f"ts must be finite epoch milliseconds, got {ts}")
    return int(ts)


def _as_float(name: str, value: float | int) -> float:
    """A JSON number as a float; an integer too large for a float (JSON allows
    any number of digits) is not finite, not a crash."""
    try:
        return float(value)
    except OverflowError:
        raise InvalidEvent(
            NOT_FINITE, f"{name} does not fit a float (an integer of {value.bit_length()} bits)"
        ) from None


def decode_event(raw: bytes | None, limits: EventLimits, now_ms: int) -> WatchEvent:
    """Parse and validate one Kafka record value, or raise :class:`InvalidEvent`."""
    if raw is None:
        raise InvalidEvent(INVALID_JSON, "record has no value (tombstone)")
    if len(raw) > limits.max_payload_bytes:
        raise InvalidEvent(PAYLOAD_TOO_LARGE, f"{len(raw)} bytes > {limits.max_payload_bytes}")
    try:
        raw.decode("utf-8")  # its own reason: a producer encoding bug, not a JSON bug
    except UnicodeDecodeError as exc:
        raise InvalidEvent(
            INVALID_UTF8, f"payload is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        wire = _validate_wire_json(raw)
    except ValidationError as exc:
        raise _pydantic_reason(exc) from None
    minutes = _as_float("minutes", wire["minutes"])
    if not math.isfinite(minutes):
        raise InvalidEvent(NOT_FINITE, f"minutes must be finite, got {minutes}")
    if minutes < 0:
        raise InvalidEvent(NEGATIVE_MINUTES, f"minutes must be >= 0, got {minutes}")
    if minutes > limits.max_minutes:
        raise InvalidEvent(ABSURD_MINUTES, f"minutes {minutes} > cap {limits.max_minutes}")
    ts_ms = _ts_ms(wire["ts"])
    if ts_ms < limits.min_ts_ms:
        raise InvalidEvent(
            BAD_TIMESTAMP,
            f"ts {_short(ts_ms)} ms is before the plausible window (min_ts_ms {limits.min_ts_ms})",
        )
    if ts_ms > now_ms + limits.max_future_ms:
        raise InvalidEvent(
            FUTURE_TIMESTAMP,
            f"ts {_short(ts_ms)} ms is more than {limits.max_future_ms / 1000:.0f} s in the future (now {now_ms})",
        )
    return WatchEvent(
        event_id=_check_id("event_id", wire["event_id"], limits),
        user_id=_check_id("user_id", wire["user_id"], limits),
        video_id=_check_id("video_id", wire["video_id"], limits),
        minutes=minutes,
        ts_ms=ts_ms,
    )


def _short(n: int) -> str:
    """An integer for a message: a few-hundred-digit one is cut, not printed."""
    text = str(n) if n.bit_length() < 200 else f"~2^{n.bit_length()}"
    return text


def check_key(event: WatchEvent, key: bytes | None) -> None:
    """The record's key must be the event's ``user_id`` (UTF-8): partitioning
    by user is what keeps a user's events in order on one partition, and the
    per-user stored offset skips replays only then. Raises ``key_mismatch``.

    >>> e = WatchEvent("e", "u1", "v", 1.0, 0)
    >>> check_key(e, b"u1")
    >>> check_key(e, None)
    Traceback (most recent call last):
    ...
    streamer.event.InvalidEvent: key_mismatch: record has no key; it must be the user_id 'u1'
    """
    if key is None:
        raise InvalidEvent(
            KEY_MISMATCH, f"record has no key; it must be the user_id {event.user_id!r}"
        )
    if key != event.user_id.encode():
        raise InvalidEvent(
            KEY_MISMATCH, f"record key {key[:64]!r} is not the user_id {event.user_id!r}"
        )


def encode_event(
    event_id: str, user_id: str | int, video_id: str | int, minutes: float, ts_ms: int
) -> bytes:
    """The producer side of the contract (used by ``hpmf replay`` and tests)."""
    import json

    return json.dumps(
        {
            "event_id": event_id,
            "user_id": user_id,
            "video_id": video_id,
            "minutes": minutes,
            "ts": ts_ms,
        },
        separators=(",", ":"),
    ).encode()
