"""Key names: where each record lives (docs/redis_format.md)."""

from __future__ import annotations


def user_key(prefix: str, user_id: object) -> str:
    """``{prefix}:u:{<user_id>}``: the hash tag keeps one user's keys in one cluster slot."""
    return f"{prefix}:u:{{{user_id}}}"


def global_key(prefix: str, version: int) -> str:
    """``{prefix}:g:{<version>}``: one complete global record."""
    return f"{prefix}:g:{{{int(version)}}}"


def global_current_key(prefix: str) -> str:
    """``{prefix}:g:current``: the newest complete global version, as text."""
    return f"{prefix}:g:current"


def global_prefix(prefix: str, cluster: bool) -> str:
    """The prefix of the global and learner keys: ``prefix`` on one Redis;
    ``{prefix}`` on a Redis Cluster, one hash tag, so that every global key
    (``g:current``, ``g:{<version>}``, ``g:versions``, ``learner``,
    ``learner:lease``, ``gstats``, ``epoch``) lives in one slot and the
    learner's publish stays one transaction. Pass the result as ``prefix`` to
    :func:`global_key` and :func:`global_current_key`; user keys keep the
    plain prefix (their own hash tag is the user id).

    >>> global_current_key(global_prefix("hpmf", True)), global_key(global_prefix("hpmf", True), 7)
    ('{hpmf}:g:current', '{hpmf}:g:{7}')
    >>> global_current_key(global_prefix("hpmf", False))
    'hpmf:g:current'
    """
    return f"{{{prefix}}}" if cluster else prefix


def is_cluster_client(client: object) -> bool:
    """True for redis-py's ``RedisCluster`` (or a pipeline of one)."""
    return getattr(client, "nodes_manager", None) is not None
