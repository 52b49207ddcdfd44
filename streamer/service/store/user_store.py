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
users. Through redis-py's pure-Python protocol layer (no hiredis here) a
MULTI/EXEC of 3 commands per user spent ~70% of the worker's time packing
arguments and parsing one ``QUEUED`` reply per command. So both steps are one
``EVALSHA`` each, packed here in one ``bytes.join``:

* read: one script returns, per user, the fields the loop needs
  (``n p o et hist eids mean cov sa``) as one length-prefixed string
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

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import redis
from redis.crc import key_slot

from model.posterior import UserState
from streamer.reader.redis_record import (
    USER_CHOICE_FIELDS,
    USER_FIELDS,
    UserRecord,
    encode_user_records,
    is_cluster_client,
    user_field_names,
    user_key,
)
from streamer.service.forget import forget_key, parse_marker
from streamer.service.store.cluster_send import send_per_node

log = logging.getLogger(__name__)

EIDS_FIELD = "eids"
SEEN_AT_FIELD = "sa"  # internal: the learner's event clock when the posterior was computed
_HAS_SEEN_AT = "seen_at" in UserState.__dataclass_fields__
_F32 = np.dtype("<f4")

_READ = """
local F = {'n', 'p', 'o', 'et', 'hist', 'eids', 'mean', 'cov', 'sa'}
local nu = tonumber(ARGV[1])
local out = {}
local forgotten = {}
for i = 1, nu do
  local v = redis.call('HMGET', KEYS[i], unpack(F))
  if v[1] then
    local parts = {}
    for j = 1, #F do
      local x = v[j] or ''
      parts[j] = #x .. ':' .. x
    end
    out[i] = table.concat(parts)
  else
    out[i] = ''
  end
  -- forget marker (streamer.service.forget): only the few users that have one are
  -- listed, '<index>=<marker>' one a line, so the reply grows by one element
  -- and not by one per user (each element costs redis-py's parser ~20 us)
  local m = redis.call('GET', KEYS[nu + i])
  if m then forgotten[#forgotten + 1] = i .. '=' .. m end
end
out[nu + 1] = table.concat(forgotten, '\\n')
-- the globals pointer, when given (on Redis Cluster it lives in another
-- slot and is read beside the script instead)
if #KEYS > 2 * nu then out[nu + 2] = redis.call('GET', KEYS[#KEYS]) or '' else out[nu + 2] = '' end
return out
"""

_WRITE = """
local ttl = ARGV[1]
local nf = tonumber(ARGV[2])
-- KEYS: the users' records, their forget markers and, on one Redis, the
-- statistics stream last (on Redis Cluster it lives in another slot)
local nu = math.floor(#KEYS / 2)
-- Fence: every user must still be as this worker read them (same event
-- count 'n', '' for absent, and the same forget marker). Another worker may
-- own the partition now -- a rebalance can complete while this batch is in
-- flight -- and may have written newer events; overwriting them would lose
-- them. And `hpmf forget` may have deleted the user meanwhile; writing would
-- bring them back. Checked for all users before anything is written, so a
-- conflict writes nothing.
for k = 1, nu do
  local want = ARGV[2 + k]
  if want ~= '*' then
    local cur = (redis.call('HGET', KEYS[k], 'n') or '') .. '|' .. (redis.call('GET', KEYS[nu + k]) or '')
    if cur ~= want then
      return redis.error_reply('HPMF_CONFLICT ' .. KEYS[k])
    end
  end
end
local i = 3 + nu
for k = 1, nu do
  redis.call('HSET', KEYS[k], unpack(ARGV, i, i + 2 * nf - 1))
  redis.call('EXPIRE', KEYS[k], ttl)
  i = i + 2 * nf
end
if ARGV[i] == '' or #KEYS == 2 * nu then return '' end
return redis.call('XADD', KEYS[#KEYS], '*', 'w', ARGV[i], 'b', ARGV[i + 1])
"""


@dataclass
class StoredUser:
    """What Redis holds for one user, as the loop needs it."""

    state: UserState
    partition: int
    offset: int
    event_ms: int = 0
    event_ids: list[str] = field(default_factory=list)


def _b(x: Any) -> bytes:
    if isinstance(x, bytes):
        return x
    return str(x).encode()


def _pack(args: Sequence[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


def _bulk(a: bytes) -> bytes:
    """One argument in the protocol's framing, as ``_pack`` frames each."""
    return b"$%d\r\n%b\r\n" % (len(a), a)


def _fields_frame(names: Sequence[str]) -> bytes:
    """One user's HSET arguments: every field name framed once, each value's
    length and bytes filled in (``%d`` then ``%b`` per value)."""
    return b"".join(
        _bulk(n.encode()) + b"$%d\r\n%b\r\n" for n in (*names, EIDS_FIELD, SEEN_AT_FIELD)
    )


_USER_FIELDS_FRAME = _fields_frame(USER_FIELDS)  # version 1
_USER_FIELDS_FRAME_V2 = _fields_frame(
    (*USER_FIELDS, *USER_CHOICE_FIELDS)
)  # version 2 (choice posterior)

# json.dumps(ids, separators=(",", ":")) with one encoder instead of one per call.
_EIDS_JSON = json.JSONEncoder(separators=(",", ":"))


class _Script:
    """EVALSHA with hand-packed arguments on a pooled connection (loads the
    script on NOSCRIPT, e.g. after a Redis restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest().encode()

    def __call__(self, client: redis.Redis, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        head = [b"EVALSHA", self.sha, b"%d" % len(keys)]
        return self._send(client, _pack([*head, *keys, *args]))

    def call_framed(
        self, client: redis.Redis, n_keys: int, framed: list[bytes], n_args: int
    ) -> Any:
        """Like calling it with keys + args already framed by ``_bulk`` (the same
        bytes); ``framed`` holds ``n_args`` arguments (an element may hold several)."""
        head = (
            b"*%d\r\n" % (3 + n_args) + _bulk(b"EVALSHA") + _bulk(self.sha) + _bulk(b"%d" % n_keys)
        )
        return self._send(client, head + b"".join(framed))

    def _send(self, client: redis.Redis, packed: bytes) -> Any:
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([packed])
            try:
                return conn.read_response()
            except redis.exceptions.NoScriptError:
                client.script_load(self.source)
                conn.send_packed_command([packed])
                return conn.read_response()
        except BaseException:
            conn.disconnect()  # the connection's state is unknown now
            raise
        finally:
            pool.release(conn)


_read_script = _Script(_READ)
_write_script = _Script(_WRITE)


def _split(raw: bytes) -> list[bytes]:
    """``<len>:<bytes>`` fields, as the read script frames them (binary-safe)."""
    out = []
    pos = 0
    while pos < len(raw):
        colon = raw.index(b":", pos)
        end = colon + 1 + int(raw[pos:colon])
        out.append(raw[colon + 1 : end])
        pos = end
    return out


def _posterior_into(state: UserState, mean: bytes, cov: bytes, seen_at: bytes) -> None:
    """The stored posterior (float32 on the wire) and, if the model tracks it,
    the clock it was computed at: the model may withdraw the user's earlier
    evidence about videos when it recomputes the posterior."""
    d = len(mean) // 4
    if d and len(mean) == 4 * d and len(cov) == 4 * d * d:
        state.mean = np.frombuffer(mean, _F32).astype(np.float64)
        state.cov = np.frombuffer(cov, _F32).astype(np.float64).reshape(d, d)
    if _HAS_SEEN_AT and seen_at:
        state.seen_at = float(seen_at)  # type: ignore[attr-defined]


class WriteConflict(Exception):
    """A user of the batch changed in Redis since it was read: another worker
    wrote it (its partition was handed over while this batch was in flight).
    Nothing was written; read again and recompute."""


def load_users(
    client: redis.Redis,
    prefix: str,
    user_ids: list[str],
    pointer_key: str,
    versions: dict[str, bytes] | None = None,
    forgotten: dict[str, dict[int, int]] | None = None,
) -> tuple[dict[str, StoredUser], bytes | None]:
    """Read every user in one round trip, plus the value of ``pointer_key``
    (the globals version pointer). Missing users are absent from the result;
    a corrupt record is logged and treated as missing (the user restarts from
    the prior rather than stopping the stream). ``versions``, if given, gets
    each user's stored event count and forget marker as read (``n|marker``,
    b"|" when absent, b"*" when unreadable): the write's fence.
    ``forgotten``, if given, gets the forget cutoffs of the users that were
    forgotten (:mod:`streamer.service.forget`)."""
    nu = len(user_ids)
    ukeys = [user_key(prefix, u).encode() for u in user_ids]
    fkeys = [forget_key(prefix, u).encode() for u in user_ids]
    if is_cluster_client(client):
        raws, markers, pointer = _read_cluster(client, ukeys, fkeys, pointer_key.encode())
    else:
        replies = _read_script(client, [*ukeys, *fkeys, pointer_key.encode()], [b"%d" % nu])
        raws, markers, pointer = replies[:nu], _markers(replies[nu], nu), replies[-1] or None
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
            n, p, o, et, hist, eids, mean, cov, sa = _split(raw)
            if versions is not None:
                versions[uid] = n + b"|" + marker
            history = {str(v): (float(x), int(s)) for v, x, s in json.loads(hist)}
            state = UserState(history=history, n_events=int(n))
            _posterior_into(state, mean, cov, sa)
            ids = [str(e) for e in json.loads(eids)] if eids else []
            out[uid] = StoredUser(state, int(p), int(o), int(et or 0), ids)
        except (ValueError, TypeError) as exc:
            if versions is not None:
                versions[uid] = b"*"  # overwritten unconditionally, as before
            log.error(
                "unreadable user record; the user restarts from the prior",
                extra={"key": user_key(prefix, uid), "error": repr(exc)[:200]},
            )
    return out, pointer


def _markers(listed: bytes, nu: int) -> list[bytes]:
    """The read script's forget markers (``<index>=<marker>`` lines) per user."""
    markers = [b""] * nu
    if listed:
        for line in listed.split(b"\n"):
            i, _, m = line.partition(b"=")
            markers[int(i) - 1] = m
    return markers


def _slot_groups(ukeys: list[bytes]) -> dict[int, list[int]]:
    """Indexes of the users per cluster hash slot (a user's keys share its slot)."""
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(ukeys):
        groups.setdefault(key_slot(k), []).append(i)
    return groups


def _cluster_scripts(
    client: Any,
    script: _Script,
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


def _read_cluster(
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
                _pack([b"EVALSHA", _read_script.sha, b"%d" % len(keys), *keys, b"%d" % len(g)]),
            )
        )
    replies = _cluster_scripts(
        client, _read_script, calls, extra=[(pointer_key, _pack([b"GET", pointer_key]))]
    )
    _raise_first(replies)
    raws: list[bytes] = [b""] * nu
    markers: list[bytes] = [b""] * nu
    for g, rep in zip(groups, replies, strict=False):
        for i, raw, marker in zip(g, rep[: len(g)], _markers(rep[len(g)], len(g)), strict=True):
            raws[i], markers[i] = raw, marker
    return raws, markers, replies[-1] or None


def write_batch(
    client: redis.Redis,
    prefix: str,
    records: dict[str, UserRecord],
    event_ids: dict[str, list[str]],
    ttl_s: int,
    stream_key: str,
    worker_id: str,
    stats_blob: bytes | None,
    seen_at: dict[str, float] | None = None,
    expected: dict[str, bytes] | None = None,
) -> bytes | None:
    """Write every record (full hash + ``eids``) with its expiry and XADD the
    statistics, atomically (one Lua script). Returns the stream entry id.
    ``expected`` maps users to their event count as read (see ``load_users``);
    if any changed meanwhile nothing is written and ``WriteConflict`` is
    raised. Users missing from ``expected`` are not checked."""
    # The arguments are framed as they are built (the same bytes as packing
    # keys + [ttl, nf, *fields, *tail] at the end): hundreds of users times a
    # dozen fields, so each user's fields go through one framing template.
    recs = list(records.values())
    # Every user of a batch gets the same field set (the script takes one
    # count): the worker writes one record format per batch.
    names = user_field_names(recs[0]) if recs else USER_FIELDS
    if any(user_field_names(r) != names for r in recs):
        raise ValueError("a batch mixes version 1 and version 2 user records")
    frame = _USER_FIELDS_FRAME if names == USER_FIELDS else _USER_FIELDS_FRAME_V2
    values = encode_user_records(recs)
    rows: list[tuple[bytes, ...]] = []
    for uid, vals in zip(records, values, strict=True):
        eids = _EIDS_JSON.encode(event_ids.get(uid, [])).encode()
        sa = repr(float(seen_at[uid])).encode() if seen_at and uid in seen_at else b""
        rows.append((*vals, eids, sa))
    nf = len(names) + 2
    if is_cluster_client(client):
        return _write_cluster(
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
    keys = [_bulk(user_key(prefix, uid).encode()) for uid in records]
    keys += [_bulk(forget_key(prefix, uid).encode()) for uid in records]
    fields = [frame % tuple(chain.from_iterable((len(v), v) for v in row)) for row in rows]
    keys.append(_bulk(stream_key.encode()))
    tail = [worker_id.encode(), stats_blob] if stats_blob is not None else [b"", b""]
    fence = [
        _bulk(expected.get(uid, b"*")) if expected is not None else _bulk(b"*") for uid in records
    ]
    framed = [
        *keys,
        _bulk(_b(int(ttl_s))),
        _bulk(_b(nf)),
        *fence,
        *fields,
        *[_bulk(t) for t in tail],
    ]
    try:
        n_args = len(keys) + 2 + len(fence) + 2 * nf * len(records) + len(tail)
        sid = _write_script.call_framed(client, len(keys), framed, n_args)
    except redis.exceptions.ResponseError as exc:
        if "HPMF_CONFLICT" in str(exc):
            raise WriteConflict(str(exc)) from None
        raise
    return sid or None


def _write_cluster(
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
    head = _bulk(b"EVALSHA") + _bulk(_write_script.sha)
    tail = [_bulk(_b(int(ttl_s))), _bulk(_b(nf))]
    calls = []
    for g in _slot_groups(ukeys).values():
        keys = [ukeys[i] for i in g] + [forget_key(prefix, uids[i]).encode() for i in g]
        fence = [_bulk(expected.get(uids[i], b"*") if expected is not None else b"*") for i in g]
        fields = [frame % tuple(chain.from_iterable((len(v), v) for v in rows[i])) for i in g]
        n_args = 3 + len(keys) + 2 + len(g) + 2 * nf * len(g) + 2
        packed = b"".join(
            [
                b"*%d\r\n" % n_args,
                head,
                _bulk(b"%d" % len(keys)),
                *map(_bulk, keys),
                *tail,
                *fence,
                *fields,
                _bulk(b""),
                _bulk(b""),
            ]
        )
        calls.append((keys[0], packed))
    replies = _cluster_scripts(client, _write_script, calls)
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
