"""delete_group drops a consumer group's committed offsets (the demo's reset
relies on it so a recreated topic is never read from an earlier run's offsets)."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamer.service.kafka_admin import delete_group, delete_topics, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_delete_group_drops_committed_offsets(kafka_bootstrap: str, topic_name: str) -> None:
    group = f"test-group-{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka_bootstrap, {topic_name: 2})
    try:
        c = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        c.commit({TopicPartition(topic_name, p): OffsetAndMetadata(7, "", -1) for p in range(2)})
        c.close()
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        assert {
            tp.partition: o.offset for tp, o in admin.list_group_offsets(group)[group].items()
        } == {0: 7, 1: 7}
        assert delete_group(kafka_bootstrap, group) is True
        assert not admin.list_group_offsets(group).get(group)  # no offsets left
        admin.close()
        assert delete_group(kafka_bootstrap, group) is False  # nothing to delete: not an error
    finally:
        delete_topics(kafka_bootstrap, [topic_name])


def test_service_topics_keep_the_user_ttl_and_a_compacted_checkpoints_topic(
    kafka_bootstrap, topic_name
) -> None:  # type: ignore[no-untyped-def]
    """Issue 14: the events topic kept 24 h (this broker's default) against a
    7-day user TTL, so a rebuild could not bring users back. The service now
    creates it with retention = TTL + 1 day, and reads the effective value
    (also a broker default, which describe_configs hides unless asked)."""
    from streamer.service.kafka_admin import service_topic_specs, service_topics, topic_config
    from streamer.service.settings import StreamSettings

    s = StreamSettings(topic=topic_name, kafka_bootstrap=kafka_bootstrap, user_ttl_s=3600)
    topics, _ = service_topic_specs(s)
    assert set(service_topics(s)) == set(topics)
    try:
        assert topic_config(kafka_bootstrap, topic_name, "retention.ms") == str(
            (3600 + 86400) * 1000
        )
        assert (
            topic_config(kafka_bootstrap, f"{topic_name}.checkpoints", "cleanup.policy")
            == "compact"
        )
        # A topic created without a setting reports the broker's effective value.
        assert topic_config(kafka_bootstrap, f"{topic_name}.dlq", "retention.ms") is not None
    finally:
        delete_topics(kafka_bootstrap, list(topics))
