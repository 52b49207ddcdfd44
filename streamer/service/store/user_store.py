"""Per-user state in Redis: read the batch's users (step 3), write their new
records together with the batch's global statistics (step 4).

The record layout is the published one (``streamer.reader.redis_record``, see
docs/redis_format.md). The service adds two internal fields, written in the
same HSET so they are exactly as durable as the count they go with (readers
ignore them): ``eids``, the user's most recent event ids (a JSON list, newest
last, at most ``dedupe_window``), and ``sa``, the model's event clock when the
posterior was computed (``UserState.seen_at``; empty when the model does not
track it).

**Why Lua scripts and hand-packed commands.** A batch touches hundreds of
users. Through redis-py's pure-Python protocol layer (before hiredis was installed) a
MULTI/EXEC of 3 commands per user spent ~70% of the worker's time packing
arguments and parsing one ``QUEUED`` reply per command. So both steps are one
``EVALSHA`` each, packed here in one ``bytes.join``:

* read: one script returns, per user, the fields the loop needs
  (the codec's ``n p o et hist mean cov``, then ``eids sa``) as one length-prefixed string
  (``<len>:<bytes>`` per field) -- one reply element per user instead of two
  dozen;
* write: one script checks that no user changed since it was read (a fence:
  after a rebalance the partition's new owner may already have written newer
  events of a user), then HSETs every user's full record, refreshes its
  expiry and XADDs the statistics; on a conflict it writes nothing and the
  worker re-reads and recomputes (``WriteConflict``). A Lua script runs atomically, exactly like the
  MULTI/EXEC it replaces: readers see the batch all or nothing, and user
  records and statistics become durable together.

**Redis Cluster** (``HPMF_REDIS_CLUSTER``). A script's keys must share one
hash slot there. A user's keys (record and forget marker) share the hash tag
``{<user_id>}``, so the batch is split by slot: one read and one write script
per slot (almost always one user each), packed as above and pipelined per
node (:mod:`streamer.service.store.cluster_send`, which follows MOVED/ASK redirections). Each
user's record stays atomic and fenced exactly as on one Redis; the batch as a
whole is not. The global statistics live in another slot (the global hash tag,
:func:`streamer.reader.redis_record.global_prefix`), so they are XADDed after every
slot of the batch is written, and only then. A crash or a fence conflict
between the two loses that batch's contribution to the globals (its users are
written, so the replay skips their events and adds no statistics); it never
adds them twice, and the users' counts stay exact either way.

Nothing per-user stays in the worker's memory after a batch: churned users
simply expire from Redis (``HPMF_USER_TTL_S``), and a missing user is a new
user (the model's pooled prior).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from itertools import chain

import redis

from model.posterior import UserState
from streamer.reader.redis_record import (
    USER_FIELDS,
    USER_READ_FIELDS,
    UserRecord,
    decode_user_read,
    encode_user_records,
    is_cluster_client,
    user_field_names,
    user_key,
)
from streamer.service.forget import forget_key, parse_marker
from streamer.service.store.user_scripts import (
    EIDS_JSON,
    USER_FIELDS_FRAME,
    USER_FIELDS_FRAME_V2,
    as_bytes,
    bulk,
    markers_of,
    read_script,
    split_fields,
    write_script,
)
from streamer.service.store.user_store_cluster import WriteConflict, read_cluster, write_cluster

__all__ = ["StoredUser", "WriteConflict", "load_users", "write_batch"]

n_read = len(USER_READ_FIELDS)

log = logging.getLogger(__name__)


@dataclass
class StoredUser:
    """What Redis holds for one user, as the loop needs it."""

    state: UserState
    partition: int
    offset: int
    event_ms: int = 0
    event_ids: list[str] = field(default_factory=list)


def load_users(
    client: redis.Redis,
    prefix: str,
    user_ids: list[str],
    pointer_key: str,
    versions: dict[str, bytes] | None = None,
    forgotten: dict[str, dict[int, int]] | None = None,
    cluster: bool | None = None,
) -> tuple[dict[str, StoredUser], bytes | None]:
    """Read every user in one round trip, plus the value of ``pointer_key``
    (the globals version pointer). Missing users are absent from the result;
    a corrupt record is logged and treated as missing (the user restarts from
    the prior rather than stopping the stream). ``versions``, if given, gets
    each user's stored event count and forget marker as read (``n|marker``,
    b"|" when absent, b"*" when unreadable): the write's fence.
    ``forgotten``, if given, gets the forget cutoffs of the users that were
    forgotten (:mod:`streamer.service.forget`). ``cluster``: the client is a
    Redis Cluster's (None: ask the client)."""
    nu = len(user_ids)
    ukeys = [user_key(prefix, u).encode() for u in user_ids]
    fkeys = [forget_key(prefix, u).encode() for u in user_ids]
    if cluster if cluster is not None else is_cluster_client(client):
        raws, markers, pointer = read_cluster(client, ukeys, fkeys, pointer_key.encode())
    else:
        replies = read_script(client, [*ukeys, *fkeys, pointer_key.encode()], [b"%d" % nu])
        raws, markers, pointer = replies[:nu], markers_of(replies[nu], nu), replies[-1] or None
    out: dict[str, StoredUser] = {}
    for uid, raw, marker in zip(user_ids, raws, markers, strict=True):
        if marker and forgotten is not None:
            try:
                forgotten[uid] = parse_marker(marker)
            except ValueError:
                log.error(
                    "unreadable forget marker; the user's events are skipped",
                    extra={"user": uid[:80]},
                )
                forgotten[uid] = {}
        if versions is not None:
            versions[uid] = b"|" + marker
        if not raw:
            continue
        try:
            fields = split_fields(raw)
            if versions is not None:
                versions[uid] = fields[0] + b"|" + marker  # the stored count 'n'
            back = decode_user_read(fields[:n_read], user_key(prefix, uid))
            eids, sa = fields[n_read:]
            # The model may withdraw the user's earlier evidence about videos
            # when it recomputes the posterior: the clock it was computed at.
            state = UserState(
                history=back.history,
                n_events=back.n_events,
                mean=back.mean,
                cov=back.cov,
                seen_at=float(sa) if sa else None,
            )
            ids = [str(e) for e in json.loads(eids)] if eids else []
            out[uid] = StoredUser(state, back.partition, back.offset, back.event_ms, ids)
        except (ValueError, TypeError) as exc:
            if versions is not None:
                versions[uid] = b"*"  # overwritten unconditionally, as before
            log.error(
                "unreadable user record; the user restarts from the prior",
                extra={"key": user_key(prefix, uid), "error": repr(exc)[:200]},
            )
    return out, pointer


@dataclass(frozen=True)
class UserBatchWrite:
    """What one batch writes: the touched users' records with their event ids
    and expiry, and the batch's global statistics for the learner's stream."""

    records: dict[str, UserRecord]
    event_ids: dict[str, list[str]]
    """Per user, the ids of the events this batch applied (the duplicate check)."""
    ttl_s: int
    stream_key: str
    """The learner's statistics stream (XADD target)."""
    worker_id: str
    stats_blob: bytes | None
    """The encoded statistics; None writes the users only (a replay after a Redis loss)."""
    seen_at: dict[str, float] | None = None
    expected: dict[str, bytes] | None = None
    """Per user, the event count read before the batch: the write fence."""


def write_batch(
    client: redis.Redis,
    prefix: str,
    batch: UserBatchWrite,
    cluster: bool | None = None,
) -> bytes | None:
    """Write every record (full hash + ``eids``) with its expiry and XADD the
    statistics, atomically (one Lua script). Returns the stream entry id.
    ``batch.expected`` maps users to their event count as read (see
    ``load_users``); if any changed meanwhile nothing is written and
    ``WriteConflict`` is raised. Users missing from it are not checked."""
    records, event_ids, seen_at = batch.records, batch.event_ids, batch.seen_at
    ttl_s, stream_key, worker_id = batch.ttl_s, batch.stream_key, batch.worker_id
    stats_blob, expected = batch.stats_blob, batch.expected
    # The arguments are framed as they are built (the same bytes as packing
    # keys + [ttl, nf, *fields, *tail] at the end): hundreds of users times a
    # dozen fields, so each user's fields go through one framing template.
    recs = list(records.values())
    # Every user of a batch gets the same field set (the script takes one
    # count): the worker writes one record format per batch.
    names = user_field_names(recs[0]) if recs else USER_FIELDS
    if any(user_field_names(r) != names for r in recs):
        raise ValueError("a batch mixes version 1 and version 2 user records")
    frame = USER_FIELDS_FRAME if names == USER_FIELDS else USER_FIELDS_FRAME_V2
    values = encode_user_records(recs)
    rows: list[tuple[bytes, ...]] = []
    for uid, vals in zip(records, values, strict=True):
        eids = EIDS_JSON.encode(event_ids.get(uid, [])).encode()
        sa = repr(float(seen_at[uid])).encode() if seen_at and uid in seen_at else b""
        rows.append((*vals, eids, sa))
    nf = len(names) + 2
    if cluster if cluster is not None else is_cluster_client(client):
        return write_cluster(
            client,
            prefix,
            list(records),
            rows,
            ttl_s,
            stream_key,
            worker_id,
            stats_blob,
            expected,
            frame=frame,
            nf=nf,
        )
    keys = [bulk(user_key(prefix, uid).encode()) for uid in records]
    keys += [bulk(forget_key(prefix, uid).encode()) for uid in records]
    fields = [frame % tuple(chain.from_iterable((len(v), v) for v in row)) for row in rows]
    keys.append(bulk(stream_key.encode()))
    tail = [worker_id.encode(), stats_blob] if stats_blob is not None else [b"", b""]
    fence = [
        bulk(expected.get(uid, b"*")) if expected is not None else bulk(b"*") for uid in records
    ]
    framed = [
        *keys,
        bulk(as_bytes(int(ttl_s))),
        bulk(as_bytes(nf)),
        *fence,
        *fields,
        *[bulk(t) for t in tail],
    ]
    try:
        n_args = len(keys) + 2 + len(fence) + 2 * nf * len(records) + len(tail)
        sid = write_script.call_framed(client, len(keys), framed, n_args)
    except redis.exceptions.ResponseError as exc:
        if "HPMF_CONFLICT" in str(exc):
            raise WriteConflict(str(exc)) from None
        raise
    return sid or None
