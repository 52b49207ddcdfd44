"""Create the service's Kafka topics (the broker does not auto-create them)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: str, topics: dict[str, int], replication: int = 1, timeout_ms: int = 15_000,
    configs: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Create every topic in ``topics`` (name -> partitions) that does not exist yet,
    with the topic configs in ``configs`` (name -> {key: value}) if given.

    Returns the names created. Idempotent: existing topics are left as they are
    (their partition count is not changed; repartitioning a keyed topic would
    move users between partitions, see docs/streaming.md).
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
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


def topic_config(bootstrap: str, topic: str, name: str, timeout_ms: int = 15_000) -> str | None:
    """The effective value of one topic-level config (e.g. ``retention.ms``),
    None if the topic or the config is unknown."""
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        # config_filter "all": by default only values set on the topic come
        # back, and a topic on the broker's default (this project's local
        # broker keeps 24 h) would look unknown.
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=[name])], config_filter="all")
    finally:
        admin.close()
    try:
        value = res["topic"][topic][name]["value"]
    except (KeyError, TypeError):
        return None
    return None if value is None else str(value)


def service_topics(settings: Any) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """The topics the service uses (events, dead letters, the learner's
    checkpoints) with their partitions and the configs they are created with:
    the events topic keeps the user TTL plus a day (a rebuild after Redis
    loses its data replays that), the checkpoints topic is compacted."""
    from streamer.checkpoint_topic import TOPIC_CONFIGS

    s = settings
    topics = {s.topic: s.partitions, s.dead_letter_topic: s.partitions, s.checkpoints_topic_name: 1}
    configs = {s.topic: {"retention.ms": str(s.events_retention_ms)}, s.checkpoints_topic_name: dict(TOPIC_CONFIGS)}
    return topics, configs
def topic_refused(bootstrap: str, topic: str, timeout_ms: int = 10_000) -> bool:
    """True if the broker refuses to describe ``topic`` to this client
    (TOPIC_AUTHORIZATION_FAILED, asked by name)."""
    from kafka.errors import TopicAuthorizationFailedError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    return any(t.get("error_code") == TopicAuthorizationFailedError.errno for t in described)


def delete_topics(bootstrap: str, names: list[str], timeout_ms: int = 15_000) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        existing = set(admin.list_topics())
        gone = [n for n in names if n in existing]
        if gone:
            admin.delete_topics(gone, timeout_ms=timeout_ms)
    finally:
        admin.close()


_COORDINATOR_NOT_READY = {"NotCoordinatorError", "CoordinatorLoadInProgressError", "CoordinatorNotAvailableError"}


def delete_group(bootstrap: str, group: str, timeout_ms: int = 15_000) -> bool:
    """Delete a consumer group and its committed offsets; False if there was none.
    (The demo's reset uses it so that nothing of an earlier run is left, the
    group's committed offsets included.)"""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
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
