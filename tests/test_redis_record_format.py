"""The published Redis record format (docs/redis_format.md, v1), pinned byte for byte.

If one of the fixed-bytes tests fails, the wire format changed: every reader
service breaks. Bump SCHEMA_VERSION and the doc instead of editing the literals.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from streamer.reader.redis_record import (
    SCHEMA_VERSION,
    CorruptRecordError,
    GlobalRecord,
    RecordError,
    SchemaVersionError,
    UserRecord,
    decode_global_record,
    decode_user_record,
    encode_global_record,
    encode_user_record,
    global_current_key,
    global_key,
    global_record_from_snapshot,
    queue_user_record,
    read_applied_offset,
    read_user_record,
    user_key,
    user_record_from_state,
    user_state_from_record,
    write_global_record,
)


def sample_user() -> UserRecord:
    return UserRecord(
        mean=np.array([1.0, -2.0, 0.5]),
        cov=np.diag([0.25, 1.0, 4.0]),
        n_events=3,
        updated_ms=1700000000123,
        event_ms=1700000000000,
        global_version=7,
        partition=2,
        offset=41,
        history=[("v1", 12.5, 1), ("vé", 3.0, 3)],
    )


def sample_global() -> GlobalRecord:
    return GlobalRecord(
        version=7,
        dim=3,
        n_factors=2,
        biases=True,
        transform="log1p",
        b0=1.5,
        sigma=0.75,
        prior_mean=np.zeros(3),
        prior_cov=np.diag([0.09, 0.09, 0.36]),
        video_ids=["v1", "v2"],
        video_mean=np.array([[0.5, -0.25, 1.0], [0.0, 2.0, -1.0]]),
        video_cov=np.stack([np.eye(3) * 0.25, np.eye(3)]),
        video_scale=np.array([[0.5] * 3, [1.0] * 3]),
        updated_ms=1700000000999,
    )


# float32 little-endian, checked by hand: 1.0 = 0x3f800000 -> 00 00 80 3f,
# -2.0 = 0xc0000000, 0.5 = 0x3f000000, 0.25 = 0x3e800000, 4.0 = 0x40800000,
# 0.09 -> 0x3db851ec, 0.36 -> 0x3eb851ec, -0.25 = 0xbe800000, 2.0 = 0x40000000.
USER_BYTES = {
    "v": b"1",
    "d": b"3",
    "mean": bytes.fromhex("0000803f 000000c0 0000003f"),
    "cov": bytes.fromhex(
        "0000803e 00000000 0000000000000000 0000803f 0000000000000000 00000000 00008040"
    ),
    "n": b"3",
    "ts": b"1700000000123",
    "et": b"1700000000000",
    "gv": b"7",
    "p": b"2",
    "o": b"41",
    "hist": b'[["v1",12.5,1],["v\xc3\xa9",3.0,3]]',  # compact JSON, UTF-8
}

GLOBAL_BYTES = {
    "v": b"1",
    "gv": b"7",
    "d": b"3",
    "k": b"2",
    "biases": b"1",
    "transform": b"log1p",
    "b0": b"1.5",
    "sigma": b"0.75",
    "prior_mean": bytes.fromhex("00000000 00000000 00000000"),
    "prior_cov": bytes.fromhex(
        "ec51b83d 00000000 0000000000000000 ec51b83d 0000000000000000 00000000 ec51b83e"
    ),
    "n_videos": b"2",
    "video_ids": b"v1\nv2",
    "video_mean": bytes.fromhex("0000003f 000080be 0000803f00000000 00000040 000080bf"),
    "video_cov": bytes.fromhex(
        "0000803e 00000000 00000000 00000000 0000803e 00000000 00000000 00000000 0000803e"
        "0000803f 00000000 00000000 00000000 0000803f 00000000 00000000 00000000 0000803f"
    ),
    "video_scale": bytes.fromhex("0000003f 0000003f 0000003f0000803f 0000803f 0000803f"),
    "ts": b"1700000000999",
}


def as_redis(fields: dict[str, bytes]) -> dict[bytes, bytes]:
    """What HGETALL hands back: bytes names and values."""
    return {k.encode(): v for k, v in fields.items()}


# ---------------------------------------------------------------- fixed bytes
def test_user_record_bytes_are_pinned() -> None:
    enc = encode_user_record(sample_user())
    assert list(enc) == list(USER_BYTES)  # documented field order
    assert enc == USER_BYTES


def test_global_record_bytes_are_pinned() -> None:
    enc = encode_global_record(sample_global())
    assert list(enc) == list(GLOBAL_BYTES)
    assert enc == GLOBAL_BYTES


def test_float32_little_endian_of_one() -> None:
    rec = sample_user()
    rec.mean = np.array([1.0, 0.0, 0.0])
    assert encode_user_record(rec)["mean"][:4] == b"\x00\x00\x80?"


def test_keys() -> None:
    assert user_key("hpmf", 42) == "hpmf:u:{42}"
    assert user_key("p", "ann") == "p:u:{ann}"
    assert global_key("hpmf", 7) == "hpmf:g:{7}"
    assert global_current_key("hpmf") == "hpmf:g:current"
    assert SCHEMA_VERSION == 2  # v1 bytes are still what a record without a choice component gets


# ---------------------------------------------------------------- round trips
def test_user_round_trip_from_literal_bytes() -> None:
    rec = decode_user_record(as_redis(USER_BYTES))
    assert rec == sample_user()
    assert rec.mean.dtype == np.float64 and rec.cov.shape == (3, 3)
    assert rec.history == [("v1", 12.5, 1), ("vé", 3.0, 3)]


def test_global_round_trip_from_literal_bytes() -> None:
    rec = decode_global_record(as_redis(GLOBAL_BYTES))
    want = sample_global()
    # 0.09 and 0.36 are not float32-exact: equal within float32 precision
    np.testing.assert_allclose(rec.prior_cov, want.prior_cov, rtol=1e-7)
    rec.prior_cov = want.prior_cov
    assert rec == want
    assert rec.n_videos == 2 and rec.transform == "log1p" and rec.biases is True


def test_float32_precision_round_trip() -> None:
    rng = np.random.default_rng(0)
    rec = sample_user()
    rec.mean = rng.normal(size=3)
    a = rng.normal(size=(3, 3))
    rec.cov = a @ a.T
    back = decode_user_record(encode_user_record(rec))
    np.testing.assert_allclose(back.mean, rec.mean, rtol=1e-6)
    np.testing.assert_allclose(back.cov, rec.cov, rtol=1e-6)
    assert back.mean.tolist() == rec.mean.astype(np.float32).astype(np.float64).tolist()


def test_global_with_no_videos_and_no_biases() -> None:
    rec = GlobalRecord(
        version=0,
        dim=2,
        n_factors=2,
        biases=False,
        transform="identity",
        b0=0.0,
        sigma=1.0,
        prior_mean=np.zeros(2),
        prior_cov=np.eye(2),
        video_ids=[],
        video_mean=np.zeros((0, 2)),
        video_cov=np.zeros((0, 2, 2)),
        video_scale=np.zeros((0, 2)),
        updated_ms=1,
    )
    enc = encode_global_record(rec)
    assert enc["video_ids"] == b"" and enc["n_videos"] == b"0" and enc["biases"] == b"0"
    back = decode_global_record(as_redis(enc))
    assert back == rec and back.video_ids == []


def test_single_empty_video_id_is_not_lost() -> None:
    rec = sample_global()
    rec.video_ids = [""]
    rec.video_mean, rec.video_cov, rec.video_scale = (
        rec.video_mean[:1],
        rec.video_cov[:1],
        rec.video_scale[:1],
    )
    assert decode_global_record(as_redis(encode_global_record(rec))).video_ids == [""]


def test_user_state_round_trip() -> None:
    from model.posterior import UserState

    s = UserState(
        history={"a": (5.0, 1), "b": (2.0, 3)},
        n_events=3,
        mean=np.array([0.1, 0.2]),
        cov=np.eye(2),
        model_version=4,
    )
    rec = user_record_from_state(s, updated_ms=10, event_ms=9, partition=1, offset=8)
    assert rec.history == [("a", 5.0, 1), ("b", 2.0, 3)] and rec.global_version == 4
    back = user_state_from_record(decode_user_record(encode_user_record(rec)))
    assert back.history == s.history and list(back.history) == ["a", "b"]
    assert back.n_events == 3 and back.model_version == 4
    np.testing.assert_allclose(back.mean, s.mean, rtol=1e-6)


def test_global_record_from_snapshot() -> None:
    from model.globals_snapshot import GlobalsSnapshot

    cov = np.stack([np.diag([0.04, 0.09, 0.16]), np.diag([1.0, 4.0, 9.0])])
    snap = GlobalsSnapshot(
        version=5,
        config={"n_factors": 2, "biases": True, "transform": "log1p"},
        b0=1.25,
        sigma=0.5,
        user_prior_mean=np.array([0.1, 0.0, 0.0]),
        user_prior_scale=np.array([0.3, 0.3, 0.6]),
        user_prior_cov=np.diag([0.1, 0.1, 0.4]),
        video_prior_mean=np.zeros(3),
        video_prior_scale=np.ones(3),
        video_ids=["a", "b"],
        video_mean=np.ones((2, 3)),
        video_cov=cov,
    )
    rec = global_record_from_snapshot(snap, updated_ms=99)
    assert (rec.version, rec.dim, rec.n_factors, rec.biases, rec.transform) == (
        5,
        3,
        2,
        True,
        "log1p",
    )
    np.testing.assert_allclose(rec.video_scale, [[0.2, 0.3, 0.4], [1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(rec.prior_cov, snap.user_prior_cov)  # the pooled prior
    assert decode_global_record(as_redis(encode_global_record(rec))).video_ids == ["a", "b"]


# ---------------------------------------------------------------- errors
def test_other_schema_version_is_refused() -> None:
    fields = as_redis(USER_BYTES) | {b"v": b"3"}
    with pytest.raises(SchemaVersionError) as err:
        decode_user_record(fields, key="hpmf:u:{1}")
    assert err.value.found == "3" and err.value.key == "hpmf:u:{1}"
    assert isinstance(err.value, RecordError)
    with pytest.raises(SchemaVersionError):
        decode_global_record(as_redis(GLOBAL_BYTES) | {b"v": b"0"})


@pytest.mark.parametrize("name", ["mean", "cov"])
def test_truncated_user_array(name: str) -> None:
    fields = as_redis(USER_BYTES)
    fields[name.encode()] = fields[name.encode()][:-1]
    with pytest.raises(CorruptRecordError, match=name):
        decode_user_record(fields)


@pytest.mark.parametrize("name", ["video_mean", "video_cov", "video_scale", "prior_cov"])
def test_truncated_global_array(name: str) -> None:
    fields = as_redis(GLOBAL_BYTES)
    fields[name.encode()] = fields[name.encode()][:-4]
    with pytest.raises(CorruptRecordError, match=name):
        decode_global_record(fields)


def test_array_length_must_match_d() -> None:
    with pytest.raises(CorruptRecordError, match=r"12 bytes, expected 16"):
        decode_user_record(as_redis(USER_BYTES) | {b"d": b"4"})


@pytest.mark.parametrize("name", ["v", "mean", "gv", "hist", "n"])
def test_missing_user_field(name: str) -> None:
    fields = as_redis(USER_BYTES)
    del fields[name.encode()]
    with pytest.raises(CorruptRecordError, match=name):
        decode_user_record(fields)


def test_missing_global_field() -> None:
    fields = as_redis(GLOBAL_BYTES)
    del fields[b"video_ids"]
    with pytest.raises(CorruptRecordError, match="video_ids"):
        decode_global_record(fields)


@pytest.mark.parametrize(
    "hist",
    [b"not json", b'{"v1": 1}', b'[["v1", 1.0]]', b"[[1, 1.0, 1]]", b'[["v1", "x", 1]]', b"\xff"],
)
def test_bad_history_json(hist: bytes) -> None:
    with pytest.raises(CorruptRecordError, match="hist"):
        decode_user_record(as_redis(USER_BYTES) | {b"hist": hist})


@pytest.mark.parametrize(
    ("name", "value"),
    [(b"n", b"three"), (b"gv", b"-1"), (b"d", b""), (b"ts", b"\xff")],
)
def test_bad_user_integers(name: bytes, value: bytes) -> None:
    with pytest.raises(CorruptRecordError, match=name.decode()):
        decode_user_record(as_redis(USER_BYTES) | {name: value})


def test_nan_array_is_corrupt() -> None:
    nan = np.array([np.nan], dtype="<f4").tobytes()
    fields = as_redis(USER_BYTES) | {b"mean": nan + USER_BYTES["mean"][4:]}
    with pytest.raises(CorruptRecordError, match="NaN"):
        decode_user_record(fields)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        (b"transform", b"sqrt", "transform"),
        (b"k", b"3", "d=3"),
        (b"biases", b"yes", "biases"),
        (b"n_videos", b"3", "n_videos"),
        (b"sigma", b"0", "sigma"),
        (b"b0", b"nan", "b0"),
    ],
)
def test_bad_global_fields(name: bytes, value: bytes, match: str) -> None:
    with pytest.raises(CorruptRecordError, match=match):
        decode_global_record(as_redis(GLOBAL_BYTES) | {name: value})


def test_encode_refuses_what_cannot_be_decoded() -> None:
    g = sample_global()
    g.video_ids = ["a\nb", "c"]
    with pytest.raises(ValueError, match="newline"):
        encode_global_record(g)
    g = sample_global()
    g.video_cov = g.video_cov[:1]
    with pytest.raises(ValueError, match="video_cov"):
        encode_global_record(g)
    u = sample_user()
    u.cov = np.eye(2)
    with pytest.raises(ValueError, match="do not match"):
        encode_user_record(u)


def test_codec_imports_no_torch() -> None:
    code = (
        "import sys, streamer.reader.redis_record\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'pyro', 'kafka')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- real Redis
def test_user_record_through_redis(redis_client, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    pipe = redis_client.pipeline(transaction=True)
    queue_user_record(pipe, key_prefix, 42, sample_user(), ttl_s=600)
    pipe.execute()
    key = user_key(key_prefix, 42)
    assert redis_client.hgetall(key) == as_redis(USER_BYTES)  # the exact bytes land in Redis
    assert 590 <= redis_client.ttl(key) <= 600
    assert read_user_record(redis_client, key_prefix, 42) == sample_user()
    assert read_user_record(redis_client, key_prefix, 43) is None
    rec = sample_user()
    assert read_applied_offset(redis_client, key) == (rec.partition, rec.offset)
    assert read_applied_offset(redis_client, user_key(key_prefix, 43)) is None
    redis_client.hset(key, "o", b"x1")
    with pytest.raises(CorruptRecordError, match="partition or offset"):
        read_applied_offset(redis_client, key)


def test_write_global_record_moves_current_and_expires_old(redis_client, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    g = sample_global()
    assert write_global_record(redis_client, key_prefix, g, ttl_s=300) is None
    assert redis_client.get(global_current_key(key_prefix)) == b"7"
    assert redis_client.hgetall(global_key(key_prefix, 7)) == as_redis(GLOBAL_BYTES)
    assert redis_client.ttl(global_key(key_prefix, 7)) == -1  # current never expires

    g.version = 8
    assert write_global_record(redis_client, key_prefix, g, ttl_s=300) == 7
    assert redis_client.get(global_current_key(key_prefix)) == b"8"
    assert 290 <= redis_client.ttl(global_key(key_prefix, 7)) <= 300  # superseded: expires
    assert redis_client.ttl(global_key(key_prefix, 8)) == -1

    # republishing the same version replaces the hash and does not expire it
    g.video_ids = ["only"]
    g.video_mean, g.video_cov, g.video_scale = g.video_mean[:1], g.video_cov[:1], g.video_scale[:1]
    assert write_global_record(redis_client, key_prefix, g, ttl_s=300) == 8
    assert redis_client.hget(global_key(key_prefix, 8), "video_ids") == b"only"
    assert redis_client.ttl(global_key(key_prefix, 8)) == -1


def test_write_global_record_on_a_pipeline(redis_client, key_prefix: str) -> None:  # type: ignore[no-untyped-def]
    g = sample_global()
    write_global_record(redis_client, key_prefix, g, ttl_s=300)
    g.version = 9
    pipe = redis_client.pipeline(transaction=True)
    write_global_record(pipe, key_prefix, g, ttl_s=120, previous_version=7)
    assert redis_client.get(global_current_key(key_prefix)) == b"7"  # only queued so far
    pipe.execute()
    assert redis_client.get(global_current_key(key_prefix)) == b"9"
    assert 110 <= redis_client.ttl(global_key(key_prefix, 7)) <= 120
