"""The batch write's hand-framed command is byte for byte the plain packing
of its arguments: EVALSHA sha n_keys, the users' keys and the stream key, ttl,
the field count, the fences, each user's (field, value) pairs as
``encode_user_record`` gives them plus ``eids`` and ``sa``, then the stats
tail. The Redis round trip itself is covered by the integration tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamer.reader.redis_record import (
    UserRecord,
    encode_user_record,
    encode_user_records,
    user_key,
)
from streamer.service.store import user_scripts, user_store


def _records() -> dict[str, UserRecord]:
    rng = np.random.default_rng(3)
    out = {}
    for k, uid in enumerate(["a", "b%c", "user-3"]):
        a = rng.normal(size=(4, 4))
        hist = [(f"v{j}", float(rng.exponential(20)), j + 1) for j in range(k + 1)]
        out[uid] = UserRecord(
            rng.normal(size=4),
            a @ a.T,
            k + 1,
            1_700_000_000_000 + k,
            1_699_999_999_000,
            7,
            k,
            100 + k,
            hist,
        )
    return out


@pytest.mark.parametrize("version", [1, 2])
def test_write_batch_sends_the_plain_packing_of_its_arguments(
    monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    sent: list[bytes] = []

    def capture(self: Any, client: Any, packed: bytes) -> bytes:
        sent.append(packed)
        return b"1-0"

    monkeypatch.setattr(user_scripts.Script, "_send", capture)
    records = _records()
    if version == 2:  # the choice posterior, as the worker writes it at HPMF_RECORD_FORMAT=2
        for k, rec in enumerate(records.values()):
            rec.choice_mean, rec.choice_cov = (
                np.r_[np.full(3, 0.1 * k), 0.0],
                np.diag([0.2, 0.3, 0.4, 0.0]),
            )
    event_ids = {"a": ["e1"], "b%c": ["e2", "e3"]}  # "user-3" has none
    seen_at = {"a": 12.0, "user-3": 40.5}  # "b%c" has none
    expected = {"a": b"3", "user-3": b""}
    sid = user_store.write_batch(
        None,  # type: ignore[arg-type]
        "pre",
        user_store.UserBatchWrite(
            records, event_ids, 600, "pre:g:stream", "w1", b"stats", seen_at, expected
        ),
    )
    assert sid == b"1-0"

    fields: list[bytes] = []
    for uid, rec in records.items():
        enc = encode_user_record(rec)
        enc["eids"] = user_scripts.EIDS_JSON.encode(event_ids.get(uid, [])).encode()
        enc["sa"] = repr(seen_at[uid]).encode() if uid in seen_at else b""
        for name, value in enc.items():
            fields += [name.encode(), value]
    keys = (
        [user_key("pre", u).encode() for u in records]
        + [f"pre:f:{{{u}}}".encode() for u in records]
        + [b"pre:g:stream"]
    )
    fence = [expected.get(u, b"*") for u in records]
    nf = b"13" if version == 1 else b"16"  # 11 (+3 choice fields) + eids + sa
    args = [
        b"EVALSHA",
        user_scripts.write_script.sha,
        b"%d" % len(keys),
        *keys,
        b"600",
        nf,
        *fence,
        *fields,
        b"w1",
        b"stats",
    ]
    assert sent == [user_scripts.pack(args)]


def test_encode_user_records_matches_one_by_one_also_for_mixed_sizes() -> None:
    recs = list(_records().values())
    recs.append(
        UserRecord(np.zeros(2), np.eye(2), 1, 5, 4, 3, 0, 9, [("v1", np.float64(2.5), np.int64(1))])
    )
    assert encode_user_records(recs) == [tuple(encode_user_record(r).values()) for r in recs]
    same = recs[:3]
    assert encode_user_records(same) == [tuple(encode_user_record(r).values()) for r in same]
    assert encode_user_records([]) == []


def test_a_batch_does_not_mix_record_versions() -> None:
    records = _records()
    first = next(iter(records.values()))
    first.choice_mean, first.choice_cov = np.zeros(3), np.zeros((3, 3))
    with pytest.raises(ValueError, match="mixes"):
        user_store.write_batch(
            None, "pre", user_store.UserBatchWrite(records, {}, 600, "pre:g:stream", "w1", None)
        )  # type: ignore[arg-type]
