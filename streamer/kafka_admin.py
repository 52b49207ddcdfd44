"""Create the service's Kafka topics (the broker does not auto-create them)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: str, topics: dict[str, int], replication: int = 1, timeout_ms: int = 15_000,
    configs: dict[str, dict[str, str]] | None = None, config: Mapping[str, Any] | None = None,
) -> list[str]:  # fmt: skip
    """Create every topic in ``topics`` (name -> partitions) that does not exist yet,
    with ``replication`` replicas and the topic configs in ``configs`` (name ->
    {key: value}) if given. ``config``: the client's security settings
    (:func:`streamer.connections.kafka_security`; default: the environment's).

    Returns the names created. Idempotent: existing topics are left as they are
    (their partition count is not changed; repartitioning a keyed topic would
    move users between partitions, see docs/streaming.md).
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **_security(config))
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name=name, num_partitions=n, replication_factor=replication,
                     topic_configs=(configs or {}).get(name, {}))
            for name, n in topics.items()
            if name not in existing
        ]
        if not wanted:
            return []
        # A concurrent creator (another worker starting) may win the race: fine.
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(wanted, timeout_ms=timeout_ms)
        created = [t.name for t in wanted]
        log.info("created topics", extra={"topics": created})
        return created
    finally:
        admin.close()


def topic_refused(bootstrap: str, topic: str, timeout_ms: int = 10_000, config: Mapping[str, Any] | None = None) -> bool:
    """True if the broker refuses to describe ``topic`` to this client
    (TOPIC_AUTHORIZATION_FAILED, asked by name)."""
    from kafka.errors import TopicAuthorizationFailedError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **_security(config))
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    return any(t.get("error_code") == TopicAuthorizationFailedError.errno for t in described)


def delete_topics(bootstrap: str, names: list[str], timeout_ms: int = 15_000, config: Mapping[str, Any] | None = None) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **_security(config))
    try:
        existing = set(admin.list_topics())
        gone = [n for n in names if n in existing]
        if gone:
            admin.delete_topics(gone, timeout_ms=timeout_ms)
    finally:
        admin.close()


def _security(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The given client security settings, or the environment's (HPMF_KAFKA_SECURITY_PROTOCOL, ...)."""
    from streamer.connections import kafka_security

    return dict(config) if config is not None else kafka_security()


_COORDINATOR_NOT_READY = {"NotCoordinatorError", "CoordinatorLoadInProgressError", "CoordinatorNotAvailableError"}


def delete_group(bootstrap: str, group: str, timeout_ms: int = 15_000, config: Mapping[str, Any] | None = None) -> bool:
    """Delete a consumer group and its committed offsets; False if there was none.
    (The demo's reset uses it so that nothing of an earlier run is left, the
    group's committed offsets included.)"""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **_security(config))
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        while True:
            result = admin.delete_groups([group]).get(group)
            # Right after the broker starts its group coordinator may still be loading.
            if result not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        admin.close()
    if result == "GroupIdNotFoundError":
        return False
    if result != "OK":
        raise RuntimeError(f"could not delete consumer group {group!r}: {result} (is a consumer still running?)")
    return True


def service_topics(s: Any) -> list[str]:
    """Create the service's topic and dead-letter topic as the settings ``s``
    (a StreamSettings) say: partitions, replication factor, retention and the
    client's security settings. Returns the names created."""
    from streamer.connections import kafka_security

    retention = {"retention.ms": str(s.topic_retention_ms)} if s.topic_retention_ms else {}
    return ensure_topics(s.kafka_bootstrap, {s.topic: s.partitions, s.dead_letter_topic: s.partitions},
                         replication=s.topic_replication_factor, config=kafka_security(s),
                         configs={s.topic: retention, s.dead_letter_topic: retention})  # fmt: skip
