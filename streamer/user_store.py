"""Per-user state in Redis: read the batch's users (step 3), queue their new
records (step 4).

The record layout is the published one (``streamer.redis_record``, see
docs/redis_format.md). The service adds one internal field, ``eids``: the
user's most recent event ids (a JSON list, newest last, at most
``dedupe_window``), written in the same HSET so it is exactly as durable as the
count it protects. Readers ignore it.

Nothing per-user stays in the worker's memory after a batch: churned users
simply expire from Redis (``HPMF_USER_TTL_S``), and a missing user is a new
user (the model's pooled prior).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from model.posterior import UserState
from streamer.redis_record import (
    RecordError,
    UserRecord,
    decode_user_record,
    queue_user_record,
    user_key,
    user_state_from_record,
)

log = logging.getLogger(__name__)

EIDS_FIELD = "eids"


@dataclass
class StoredUser:
    """What Redis holds for one user, as the loop needs it."""

    state: UserState
    partition: int
    offset: int
    event_ms: int = 0
    event_ids: list[str] = field(default_factory=list)


def load_users(client: Any, prefix: str, user_ids: list[str], extra_gets: list[str] | None = None) -> tuple[dict[str, StoredUser], list[Any]]:
    """HGETALL every user in one round trip (plus GETs of ``extra_gets`` keys,
    piggy-backed on the same pipeline). Missing users are absent from the
    result; a corrupt record is logged and treated as missing (the user
    restarts from the prior rather than stopping the stream)."""
    pipe = client.pipeline(transaction=False)
    for uid in user_ids:
        pipe.hgetall(user_key(prefix, uid))
    for k in extra_gets or []:
        pipe.get(k)
    replies = pipe.execute()
    out: dict[str, StoredUser] = {}
    for uid, fields in zip(user_ids, replies, strict=False):
        if not fields:
            continue
        key = user_key(prefix, uid)
        try:
            rec = decode_user_record(fields, key)
        except RecordError as exc:
            log.error("unreadable user record; the user restarts from the prior", extra={"key": key, "error": str(exc)})
            continue
        eids_raw = fields.get(EIDS_FIELD.encode()) or fields.get(EIDS_FIELD)
        try:
            eids = json.loads(eids_raw) if eids_raw else []
        except ValueError:
            eids = []
        out[uid] = StoredUser(user_state_from_record(rec), rec.partition, rec.offset, rec.event_ms, eids)
    return out, replies[len(user_ids):]


def queue_user_write(pipe: Any, prefix: str, user_id: str, rec: UserRecord, event_ids: list[str], ttl_s: int) -> None:
    """HSET the full record and ``eids``, refresh the expiry (one MULTI holds all)."""
    queue_user_record(pipe, prefix, user_id, rec, ttl_s)
    pipe.hset(user_key(prefix, user_id), EIDS_FIELD, json.dumps(event_ids, separators=(",", ":")))
