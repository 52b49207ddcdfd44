"""The store seam: what the loop asks of its stores, and the implementations.

The worker (:mod:`streamer.service.worker`) talks to a :class:`UserStore`
(read the batch's users, write their records with the batch's statistics,
delete what a lost Redis must not keep) and to a :class:`GlobalsStore` (the
shared globals and the learner role). It never asks which Redis is behind
them: :func:`user_store_for` picks the implementation for the client.

* :class:`RedisUserStore`: one Redis; one read and one write script per batch
  (:mod:`streamer.service.store.user_store`).
* :class:`ClusterUserStore`: a Redis Cluster (``HPMF_REDIS_CLUSTER``); the
  scripts per hash slot, pipelined per node
  (:mod:`streamer.service.store.user_store_cluster`).
* :class:`streamer.service.store.global_store.GlobalStore` serves both: its
  keys share one hash tag on a cluster (``global_prefix``).

A new store (another database) implements these two protocols.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from streamer.reader.redis_record import is_cluster_client, user_key
from streamer.service.store.user_store import (
    StoredUser,
    UserBatchWrite,
    load_users,
    write_batch,
)

if TYPE_CHECKING:
    from model.choice import ChoiceModel
    from model.online import GlobalStats
    from model.protocol import StreamingModel


class UserStore(Protocol):
    """Per-user state: one read and one atomic, fenced write per batch."""

    def load(
        self,
        user_ids: list[str],
        pointer_key: str,
        versions: dict[str, bytes] | None = None,
        forgotten: dict[str, dict[int, int]] | None = None,
    ) -> tuple[dict[str, StoredUser], bytes | None]: ...

    def write(self, batch: UserBatchWrite) -> bytes | None: ...

    def discard(self, user_ids: Iterable[str]) -> None: ...


class GlobalsStore(Protocol):
    """The shared globals as the loop uses them."""

    model: StreamingModel
    choice: ChoiceModel | None
    record_format: int
    stream_key: str
    is_learner: bool

    @property
    def current_key(self) -> str: ...

    def maintain(self) -> None: ...

    def refresh(self, current: bytes | None, force: bool = False) -> None: ...

    def written(self, stream_id: bytes | str, stats: GlobalStats) -> None: ...

    def learn(self, max_entries: int = 64) -> int: ...

    def backlog(self) -> tuple[int, float]: ...

    def release(self) -> None: ...


class RedisUserStore:
    """:class:`UserStore` on one Redis server."""

    cluster = False

    def __init__(self, client: Any, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    def load(
        self,
        user_ids: list[str],
        pointer_key: str,
        versions: dict[str, bytes] | None = None,
        forgotten: dict[str, dict[int, int]] | None = None,
    ) -> tuple[dict[str, StoredUser], bytes | None]:
        return load_users(
            self.client, self.prefix, user_ids, pointer_key, versions, forgotten, self.cluster
        )

    def write(self, batch: UserBatchWrite) -> bytes | None:
        return write_batch(self.client, self.prefix, batch, cluster=self.cluster)

    def discard(self, user_ids: Iterable[str]) -> None:
        keys = {user_key(self.prefix, u) for u in user_ids}
        if keys:  # redis-py splits a DEL across a cluster's slots
            self.client.delete(*keys)


class ClusterUserStore(RedisUserStore):
    """:class:`UserStore` on a Redis Cluster."""

    cluster = True


def user_store_for(client: Any, prefix: str) -> UserStore:
    """The user store for ``client`` (a Redis or a Redis Cluster client)."""
    return (ClusterUserStore if is_cluster_client(client) else RedisUserStore)(client, prefix)
