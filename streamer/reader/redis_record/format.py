"""The record format's building blocks: schema versions, field lists, errors,
and the typed field access every decoder uses (docs/redis_format.md)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SCHEMA_VERSION = 2
"""The newest record format. Version 2 adds the choice component (issue #13);
a record without one is still written in the version 1 layout, byte for byte,
and readers accept both (:data:`SCHEMA_VERSIONS`)."""
SCHEMA_VERSIONS = (1, 2)
F32 = np.dtype("<f4")  # the wire dtype of every array

USER_FIELDS = ("v", "d", "mean", "cov", "n", "ts", "et", "gv", "p", "o", "hist")
GLOBAL_FIELDS = (
    "v",
    "gv",
    "d",
    "k",
    "biases",
    "transform",
    "b0",
    "sigma",
    "prior_mean",
    "prior_cov",
    "n_videos",
    "video_ids",
    "video_mean",
    "video_cov",
    "video_scale",
    "ts",
)
USER_CHOICE_FIELDS = ("cd", "cmean", "ccov")
"""Version 2's extra user fields: the choice posterior q(a_i) padded to cd = K_c + 1 dims."""
GLOBAL_CHOICE_FIELDS = (
    "cd",
    "choice_prior_mean",
    "choice_prior_cov",
    "choice_video_mean",
    "choice_video_cov",
)
"""Version 2's extra global fields: the choice component's pooled user prior and
its video posteriors, in ``video_ids`` order."""


# ---------------------------------------------------------------- errors
class RecordError(ValueError):
    """A Redis record that cannot be used. Catch this to handle every case below."""

    def __init__(self, key: str | None, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


class SchemaVersionError(RecordError):
    """The record's ``v`` is not a schema version this code knows (1 or 2)."""

    def __init__(self, key: str | None, found: str) -> None:
        self.found = found
        known = " and ".join(str(x) for x in SCHEMA_VERSIONS)
        super().__init__(key, f"record schema version {found!r}, this reader knows {known}")


class CorruptRecordError(RecordError):
    """Missing fields, wrong array byte lengths, unparsable text or JSON, non-finite arrays."""


def same_optional(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


# ---------------------------------------------------------------- primitives
def f32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=F32).tobytes()


def int_text(x: int) -> bytes:
    return str(int(x)).encode("ascii")


def float_text(x: float) -> bytes:
    # repr of a Python float is the shortest text that round-trips exactly
    return repr(float(x)).encode("ascii")


# One encoder for every history (json.dumps builds a new one per call); the
# same settings as json.dumps(hist, separators=(",", ":"), ensure_ascii=False,
# allow_nan=False), so the same text.
HIST_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
SCHEMA_TEXT = b"1"  # the version 1 layout; _user_choice_fields makes it 2


def _normalise(fields: Mapping[Any, Any]) -> dict[str, bytes]:
    """Field names as str, values as bytes (redis-py gives bytes for both)."""
    out: dict[str, bytes] = {}
    for k, v in fields.items():
        name = k.decode("utf-8", "replace") if isinstance(k, bytes | bytearray) else str(k)
        out[name] = v.encode("utf-8") if isinstance(v, str) else bytes(v)
    return out


class FieldReader:
    """Field access with typed errors; ``key`` only labels the messages."""

    def __init__(self, fields: Mapping[Any, Any], key: str | None, names: Sequence[str]) -> None:
        self.key = key
        self.f = _normalise(fields)
        if "v" not in self.f:
            raise CorruptRecordError(key, "missing field 'v' (schema version)")
        v = self.f["v"].decode("ascii", "replace").strip()
        if v not in [str(x) for x in SCHEMA_VERSIONS]:
            raise SchemaVersionError(key, v)
        self.version = int(v)
        missing = [n for n in names if n not in self.f]
        if missing:
            raise CorruptRecordError(key, f"missing field(s) {', '.join(missing)}")

    def require(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self.f]
        if missing:
            raise CorruptRecordError(self.key, f"missing field(s) {', '.join(missing)}")

    def int(self, name: str, lo: int | None = None) -> int:
        raw = self.f[name]
        try:
            value = int(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CorruptRecordError(
                self.key, f"field {name!r} is not an integer: {raw[:40]!r}"
            ) from None
        if lo is not None and value < lo:
            raise CorruptRecordError(self.key, f"field {name!r} is {value}, must be >= {lo}")
        return value

    def float(self, name: str) -> float:
        raw = self.f[name]
        try:
            value = float(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CorruptRecordError(
                self.key, f"field {name!r} is not a number: {raw[:40]!r}"
            ) from None
        if not math.isfinite(value):
            raise CorruptRecordError(self.key, f"field {name!r} is not finite: {value}")
        return value

    def text(self, name: str) -> str:
        try:
            return self.f[name].decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptRecordError(self.key, f"field {name!r} is not UTF-8 text") from None

    def array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        raw = self.f[name]
        want = 4 * math.prod(shape)
        if len(raw) != want:
            raise CorruptRecordError(
                self.key, f"field {name!r} has {len(raw)} bytes, expected {want} (float32 {shape})"
            )
        a = np.frombuffer(raw, dtype=F32).astype(np.float64).reshape(shape)
        if not np.isfinite(a).all():
            raise CorruptRecordError(self.key, f"field {name!r} holds NaN or infinity")
        return a
