"""How many published global versions stay in Redis.

Before, every superseded ``{prefix}:g:{<version>}`` lived ``global_ttl_s``
(an hour): at ~1 publish a second that is ~3,600 live versions, each the size
of the catalogue (issue 14: ~1.3 GB at 435 videos, growing with the
catalogue). Now the learner keeps the ``keep`` newest published versions and
deletes older ones in the same transaction that publishes the new one. The
published versions are listed in ``{prefix}:g:versions`` (a sorted set,
score = version) so a learner that takes over knows what its predecessor
left. The TTL stays as a back-stop for versions published before this list
existed.

Readers are not affected: :class:`streamer.reader.lookup.Lookup` keeps the
decoded version it serves in its own memory (a reader pins its version for as
long as it likes, without Redis), and if a version named by ``current``
disappears between its GET and its HGETALL it reads ``current`` again.
"""

from __future__ import annotations

from typing import Any

from streamer.reader.redis_record import global_key


def versions_key(prefix: str) -> str:
    return f"{prefix}:g:versions"


def superseded(client: Any, prefix: str, new_version: int, keep: int) -> list[int]:
    """The published versions to delete once ``new_version`` is published:
    all but the ``keep`` newest, counting the new one (read immediately; the
    caller queues :func:`queue_drop` in its transaction)."""
    raw = client.zrange(versions_key(prefix), 0, -1)
    live = sorted({int(v) for v in raw} | {int(new_version)})
    return [v for v in live[:-keep] if v != new_version] if keep > 0 else []


def queue_drop(pipe: Any, prefix: str, new_version: int, drop: list[int]) -> None:
    """Queue: list ``new_version``, delete the ``drop`` versions and unlist them."""
    pipe.zadd(versions_key(prefix), {str(int(new_version)): int(new_version)})
    if drop:
        pipe.delete(*[global_key(prefix, v) for v in drop])
        pipe.zrem(versions_key(prefix), *[str(v) for v in drop])
