"""Does the user store's hand-framed EVALSHA still pay with hiredis installed?

The batch read and write (:mod:`streamer.service.store.user_store`) send their
Lua scripts framed by hand on a pooled connection. This times one batch's
read and write both ways against the real local Redis, interleaved, on the
same records: the hand-framed path the service uses, and redis-py's script
object (``register_script``: it packs the arguments and parses the reply,
with hiredis when installed).

    python -m benchmarks.lua_call_bench [USERS] [REPEATS]
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid

import numpy as np
import redis

from benchmarks.env import REDIS_URL
from streamer.reader.redis_record import UserRecord, encode_user_records, user_field_names, user_key
from streamer.service.forget import forget_key
from streamer.service.store import user_scripts
from streamer.service.store.user_store import UserBatchWrite, write_batch


def _records(n: int, d: int = 11, hist: int = 20) -> dict[str, UserRecord]:
    rng = np.random.default_rng(0)
    out = {}
    for k in range(n):
        a = rng.normal(size=(d, d))
        h = [(f"video-{j}", float(rng.exponential(20)), j + 1) for j in range(hist)]
        out[f"user-{k}"] = UserRecord(
            rng.normal(size=d), a @ a.T, hist, 1_700_000_000_000, 1_700_000_000_000, 7, 0, k, h
        )
    return out


def _write_redispy(script, client, prefix, records, event_ids, ttl_s, stream_key, stats):  # type: ignore[no-untyped-def]
    """write_batch's arguments, packed by redis-py instead (the same script)."""
    recs = list(records.values())
    names = (*user_field_names(recs[0]), user_scripts.EIDS_FIELD, user_scripts.SEEN_AT_FIELD)
    fields: list[bytes | str] = []
    for uid, vals in zip(records, encode_user_records(recs), strict=True):
        row = (*vals, user_scripts.EIDS_JSON.encode(event_ids.get(uid, [])).encode(), b"")
        for n, v in zip(names, row, strict=True):
            fields += [n, v]
    keys = [user_key(prefix, u) for u in records] + [forget_key(prefix, u) for u in records]
    keys.append(stream_key)
    args = [int(ttl_s), len(names), *[b"*"] * len(records), *fields, b"w1", stats]
    return script(keys=keys, args=args, client=client)


def _read_redispy(script, client, prefix, user_ids, pointer_key):  # type: ignore[no-untyped-def]
    keys = [user_key(prefix, u) for u in user_ids] + [forget_key(prefix, u) for u in user_ids]
    return script(keys=[*keys, pointer_key], args=[len(user_ids)], client=client)


def _read_hand(client, prefix, user_ids, pointer_key):  # type: ignore[no-untyped-def]
    """The script call of load_users alone (its keys, hand-framed)."""
    keys = [user_key(prefix, u).encode() for u in user_ids]
    keys += [forget_key(prefix, u).encode() for u in user_ids]
    return user_scripts.read_script(client, [*keys, pointer_key.encode()], [b"%d" % len(user_ids)])


def run(users: int = 256, repeats: int = 60) -> dict[str, float]:
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"luabench-{uuid.uuid4().hex[:8]}"
    records = _records(users)
    ids = list(records)
    eids = {u: [f"e-{u}-1", f"e-{u}-2"] for u in ids}
    stream, pointer = f"{prefix}:gstats", f"{prefix}:g:current"
    write_obj = client.register_script(user_scripts._WRITE)
    read_obj = client.register_script(user_scripts._READ)
    timing: dict[str, list[float]] = {
        k: [] for k in ("write_hand", "write_redispy", "read_hand", "read_redispy")
    }
    try:
        for _ in range(repeats):
            t = time.perf_counter()
            write_batch(client, prefix, UserBatchWrite(records, eids, 600, stream, "w1", b"stats"))
            timing["write_hand"].append(time.perf_counter() - t)
            t = time.perf_counter()
            _write_redispy(write_obj, client, prefix, records, eids, 600, stream, b"stats")
            timing["write_redispy"].append(time.perf_counter() - t)
            t = time.perf_counter()
            _read_hand(client, prefix, ids, pointer)
            timing["read_hand"].append(time.perf_counter() - t)
            t = time.perf_counter()
            _read_redispy(read_obj, client, prefix, ids, pointer)
            timing["read_redispy"].append(time.perf_counter() - t)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        if keys:
            client.delete(*keys)
        client.close()
    return {f"lua.{k}_median_ms": 1000 * statistics.median(v) for k, v in timing.items()}


if __name__ == "__main__":
    import redis.utils

    users = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    print(f"hiredis: {redis.utils.HIREDIS_AVAILABLE}; {users} users per batch, {repeats} repeats")
    for key, value in run(users, repeats).items():
        print(f"{key:<32} {value:.2f}")
