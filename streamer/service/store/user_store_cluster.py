"""The user store on a Redis Cluster: the read and write scripts once per hash
slot, pipelined per node (see :mod:`streamer.service.store.user_store`)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import redis
from redis.crc import key_slot

from streamer.reader.redis_record import user_key
from streamer.service.forget import forget_key
from streamer.service.store.cluster_send import send_per_node
from streamer.service.store.user_scripts import (
    Script,
    as_bytes,
    bulk,
    markers_of,
    pack,
    read_script,
    write_script,
)


class WriteConflict(Exception):
    """A user of the batch changed in Redis since it was read: another worker
    wrote it (its partition was handed over while this batch was in flight).
    Nothing was written; read again and recompute."""


def _slot_groups(ukeys: list[bytes]) -> dict[int, list[int]]:
    """Indexes of the users per cluster hash slot (a user's keys share its slot)."""
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(ukeys):
        groups.setdefault(key_slot(k), []).append(i)
    return groups


def _cluster_scripts(
    client: Any,
    script: Script,
    calls: list[tuple[bytes, bytes]],
    extra: list[tuple[bytes, bytes]] | None = None,
) -> list[Any]:
    """Run the packed script calls ``(routing_key, packed)`` (plus ``extra``
    commands) on the cluster, pipelined per node; the replies in order, errors
    as exception objects. On NOSCRIPT (a node restarted, or a new one) the
    script is loaded on every primary and the calls that failed so are sent
    again: none of them ran."""
    replies = send_per_node(client, [*calls, *(extra or [])])
    again = [i for i in range(len(calls)) if isinstance(replies[i], redis.exceptions.NoScriptError)]
    if again:
        client.script_load(script.source)
        for i, r in zip(again, send_per_node(client, [calls[i] for i in again]), strict=True):
            replies[i] = r
    return replies


def _raise_first(replies: Sequence[Any]) -> None:
    for r in replies:
        if isinstance(r, Exception):
            raise r


def read_cluster(
    client: Any,
    ukeys: list[bytes],
    fkeys: list[bytes],
    pointer_key: bytes,
) -> tuple[list[bytes], list[bytes], bytes | None]:
    """The read script per hash slot, and the globals pointer, pipelined per node."""
    nu = len(ukeys)
    groups = list(_slot_groups(ukeys).values())
    calls = []
    for g in groups:
        keys = [ukeys[i] for i in g] + [fkeys[i] for i in g]
        calls.append(
            (
                keys[0],
                pack([b"EVALSHA", read_script.sha, b"%d" % len(keys), *keys, b"%d" % len(g)]),
            )
        )
    replies = _cluster_scripts(
        client, read_script, calls, extra=[(pointer_key, pack([b"GET", pointer_key]))]
    )
    _raise_first(replies)
    raws: list[bytes] = [b""] * nu
    markers: list[bytes] = [b""] * nu
    for g, rep in zip(groups, replies, strict=False):
        for i, raw, marker in zip(g, rep[: len(g)], markers_of(rep[len(g)], len(g)), strict=True):
            raws[i], markers[i] = raw, marker
    return raws, markers, replies[-1] or None


def write_cluster(
    client: Any,
    prefix: str,
    uids: list[str],
    rows: list[tuple[bytes, ...]],
    ttl_s: int,
    stream_key: str,
    worker_id: str,
    stats_blob: bytes | None,
    expected: dict[str, bytes] | None,
    frame: bytes,
    nf: int,
) -> bytes | None:
    """``write_batch`` on Redis Cluster: the write script once per hash slot
    (each user atomic and fenced), then, only if every slot was written, the
    statistics (see the module docstring for what a failure in between costs)."""
    ukeys = [user_key(prefix, u).encode() for u in uids]
    head = bulk(b"EVALSHA") + bulk(write_script.sha)
    tail = [bulk(as_bytes(int(ttl_s))), bulk(as_bytes(nf))]
    calls = []
    for g in _slot_groups(ukeys).values():
        keys = [ukeys[i] for i in g] + [forget_key(prefix, uids[i]).encode() for i in g]
        fence = [bulk(expected.get(uids[i], b"*") if expected is not None else b"*") for i in g]
        fields = [frame % tuple(chain.from_iterable((len(v), v) for v in rows[i])) for i in g]
        n_args = 3 + len(keys) + 2 + len(g) + 2 * nf * len(g) + 2
        packed = b"".join(
            [
                b"*%d\r\n" % n_args,
                head,
                bulk(b"%d" % len(keys)),
                *map(bulk, keys),
                *tail,
                *fence,
                *fields,
                bulk(b""),
                bulk(b""),
            ]
        )
        calls.append((keys[0], packed))
    replies = _cluster_scripts(client, write_script, calls)
    conflicts = [
        r
        for r in replies
        if isinstance(r, redis.exceptions.ResponseError) and "HPMF_CONFLICT" in str(r)
    ]
    if conflicts:
        # The other slots are written: a retry re-reads them and skips the
        # events applied there (stored offsets); this batch adds no statistics.
        raise WriteConflict(f"{len(conflicts)} of {len(calls)} slots: {conflicts[0]}")
    _raise_first(replies)
    if stats_blob is None:
        return None
    sid = client.xadd(stream_key, {"w": worker_id.encode(), "b": stats_blob})
    return sid or None
