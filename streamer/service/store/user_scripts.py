"""The user store's Lua scripts and their wire framing.

The read script's field list comes from the codec
(:data:`streamer.reader.redis_record.USER_READ_FIELDS`) plus the service's two
internal fields; the write script takes the codec's encoded fields. Both are
sent as ``EVALSHA`` packed by hand in one ``bytes.join`` (see
:mod:`streamer.service.store.user_store` for why), loaded on NOSCRIPT.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import redis

from streamer.reader.redis_record import USER_CHOICE_FIELDS, USER_FIELDS, USER_READ_FIELDS

EIDS_FIELD = "eids"
SEEN_AT_FIELD = "sa"  # internal: the learner's event clock when the posterior was computed

_READ_TEMPLATE = """
local F = {%(fields)s}
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

READ_FIELDS = (*USER_READ_FIELDS, EIDS_FIELD, SEEN_AT_FIELD)
"""What the read script returns per user, in order: the codec's fields, then
the service's own."""
_READ = _READ_TEMPLATE % {"fields": ", ".join(f"'{f}'" for f in READ_FIELDS)}

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


def as_bytes(x: Any) -> bytes:
    if isinstance(x, bytes):
        return x
    return str(x).encode()


def pack(args: Sequence[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


def bulk(a: bytes) -> bytes:
    """One argument in the protocol's framing, as ``_pack`` frames each."""
    return b"$%d\r\n%b\r\n" % (len(a), a)


def _fields_frame(names: Sequence[str]) -> bytes:
    """One user's HSET arguments: every field name framed once, each value's
    length and bytes filled in (``%d`` then ``%b`` per value)."""
    return b"".join(
        bulk(n.encode()) + b"$%d\r\n%b\r\n" for n in (*names, EIDS_FIELD, SEEN_AT_FIELD)
    )


USER_FIELDS_FRAME = _fields_frame(USER_FIELDS)  # version 1
USER_FIELDS_FRAME_V2 = _fields_frame(
    (*USER_FIELDS, *USER_CHOICE_FIELDS)
)  # version 2 (choice posterior)

# json.dumps(ids, separators=(",", ":")) with one encoder instead of one per call.
EIDS_JSON = json.JSONEncoder(separators=(",", ":"))


class Script:
    """EVALSHA with hand-packed arguments on a pooled connection (loads the
    script on NOSCRIPT, e.g. after a Redis restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest().encode()

    def __call__(self, client: redis.Redis, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        head = [b"EVALSHA", self.sha, b"%d" % len(keys)]
        return self._send(client, pack([*head, *keys, *args]))

    def call_framed(
        self, client: redis.Redis, n_keys: int, framed: list[bytes], n_args: int
    ) -> Any:
        """Like calling it with keys + args already framed by ``_bulk`` (the same
        bytes); ``framed`` holds ``n_args`` arguments (an element may hold several)."""
        head = b"*%d\r\n" % (3 + n_args) + bulk(b"EVALSHA") + bulk(self.sha) + bulk(b"%d" % n_keys)
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


read_script = Script(_READ)
write_script = Script(_WRITE)


def split_fields(raw: bytes) -> list[bytes]:
    """``<len>:<bytes>`` fields, as the read script frames them (binary-safe)."""
    out = []
    pos = 0
    while pos < len(raw):
        colon = raw.index(b":", pos)
        end = colon + 1 + int(raw[pos:colon])
        out.append(raw[colon + 1 : end])
        pos = end
    return out


def markers_of(listed: bytes, nu: int) -> list[bytes]:
    """The read script's forget markers (``<index>=<marker>`` lines) per user."""
    markers = [b""] * nu
    if listed:
        for line in listed.split(b"\n"):
            i, _, m = line.partition(b"=")
            markers[int(i) - 1] = m
    return markers
