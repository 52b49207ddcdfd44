"""Record format version 2 (docs/redis_format.md): the choice component's fields,
pinned byte for byte; version 1 records still decode (their bytes are pinned in
tests/test_redis_record_format.py and unchanged)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from streamer.reader.redis_record import (
    CorruptRecordError,
    decode_global_record,
    decode_user_record,
    encode_global_record,
    encode_user_record,
    encode_user_records,
)
from tests.test_redis_record_format import (
    GLOBAL_BYTES,
    USER_BYTES,
    as_redis,
    sample_global,
    sample_user,
)

# float32 little-endian: 1.0 = 00 00 80 3f, 0.5 = 00 00 00 3f, -1.0 = 00 00 80 bf,
# 0.25 = 00 00 80 3e, 2.0 = 00 00 00 40, 0 = 00 00 00 00.
USER_V2_BYTES = {
    **USER_BYTES,
    "v": b"2",
    "cd": b"2",
    "cmean": bytes.fromhex("0000003f 00000000"),
    "ccov": bytes.fromhex("0000803e 00000000 00000000 00000000"),
}

GLOBAL_V2_BYTES = {
    **GLOBAL_BYTES,
    "v": b"2",
    "cd": b"2",
    "choice_prior_mean": bytes.fromhex("00000000 00000000"),
    "choice_prior_cov": bytes.fromhex("0000803e 00000000 00000000 00000000"),
    "choice_video_mean": bytes.fromhex("0000803f 0000003f000080bf 00000040"),
    "choice_video_cov": bytes.fromhex(
        "0000803e 00000000 00000000 0000803e0000803f 00000000 00000000 0000803f"
    ),
}


def sample_user_v2():  # noqa: ANN201
    rec = sample_user()
    rec.choice_mean = np.array([0.5, 0.0])
    rec.choice_cov = np.diag([0.25, 0.0])
    return rec


def sample_global_v2():  # noqa: ANN201
    rec = sample_global()
    rec.choice_prior_mean = np.zeros(2)
    rec.choice_prior_cov = np.diag([0.25, 0.0])
    rec.choice_video_mean = np.array([[1.0, 0.5], [-1.0, 2.0]])
    rec.choice_video_cov = np.stack([np.eye(2) * 0.25, np.eye(2)])
    return rec


def test_user_v2_bytes_are_pinned() -> None:
    enc = encode_user_record(sample_user_v2())
    assert list(enc) == list(USER_V2_BYTES)  # the v1 fields in their order, then cd cmean ccov
    assert enc == USER_V2_BYTES
    assert encode_user_records([sample_user_v2(), sample_user()]) == [
        tuple(USER_V2_BYTES.values()),
        tuple(USER_BYTES.values()),
    ]
    # the batched path the worker takes when every record of a batch is version 2
    assert (
        encode_user_records([sample_user_v2(), sample_user_v2()])
        == [tuple(USER_V2_BYTES.values())] * 2
    )


def test_global_v2_bytes_are_pinned() -> None:
    enc = encode_global_record(sample_global_v2())
    assert list(enc) == list(GLOBAL_V2_BYTES)
    assert enc == GLOBAL_V2_BYTES


def test_v2_round_trips_and_v1_still_decodes() -> None:
    u2 = decode_user_record(as_redis(USER_V2_BYTES))
    assert u2 == sample_user_v2() and u2.choice_mean is not None
    u1 = decode_user_record(as_redis(USER_BYTES))
    assert u1 == sample_user() and u1.choice_mean is None and u1.choice_cov is None
    g2 = decode_global_record(as_redis(GLOBAL_V2_BYTES))
    assert g2.has_choice and np.array_equal(g2.choice_video_mean, [[1.0, 0.5], [-1.0, 2.0]])
    g1 = decode_global_record(as_redis(GLOBAL_BYTES))
    assert not g1.has_choice and g1.choice_video_cov is None


def test_v2_without_its_fields_is_corrupt() -> None:
    fields = as_redis(USER_V2_BYTES)
    del fields[b"ccov"]
    with pytest.raises(CorruptRecordError, match="ccov"):
        decode_user_record(fields)
    g = as_redis(GLOBAL_V2_BYTES)
    g[b"choice_video_mean"] = g[b"choice_video_mean"][:-4]
    with pytest.raises(CorruptRecordError, match="choice_video_mean"):
        decode_global_record(g)
    # a v1 record that names itself 2 lacks the choice fields
    with pytest.raises(CorruptRecordError, match="missing"):
        decode_global_record(as_redis(GLOBAL_BYTES) | {b"v": b"2"})


def test_encoder_refuses_mismatched_choice_shapes() -> None:
    rec = sample_global_v2()
    rec.choice_video_mean = np.zeros((3, 2))  # three rows for two videos
    with pytest.raises(ValueError, match="choice_video_mean"):
        encode_global_record(rec)
    u = sample_user_v2()
    u.choice_cov = None
    with pytest.raises(ValueError, match="both"):
        encode_user_record(u)


def test_a_learned_p_start_sharpness_is_an_optional_v2_field() -> None:
    rec = sample_global_v2()
    rec.choice_sharpness = 4.5
    enc = encode_global_record(rec)
    assert enc == GLOBAL_V2_BYTES | {"choice_sharpness": b"4.5"}  # appended; the rest unchanged
    assert list(enc)[-1] == "choice_sharpness"
    back = decode_global_record(as_redis(enc))
    assert back.choice_sharpness == 4.5 and encode_global_record(back) == enc
    plain = decode_global_record(as_redis(GLOBAL_V2_BYTES))
    assert back != plain and dataclasses.replace(back, choice_sharpness=None) == plain
    # a record without it (every one written before it existed) reads as None: the fixed lambda
    assert decode_global_record(as_redis(GLOBAL_V2_BYTES)).choice_sharpness is None
    for bad in (b"0", b"-2", b"nan", b"x"):
        with pytest.raises(CorruptRecordError, match="choice_sharpness"):
            decode_global_record(as_redis(GLOBAL_V2_BYTES | {"choice_sharpness": bad}))
    rec.choice_sharpness = 0.0
    with pytest.raises(ValueError, match="choice_sharpness"):
        encode_global_record(rec)
