"""delete_group drops a consumer group's committed offsets (the demo's reset
relies on it so a recreated topic is never read from an earlier run's offsets)."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamer.kafka_admin import delete_group, delete_topics, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_delete_group_drops_committed_offsets(kafka_bootstrap: str, topic_name: str) -> None:
    group = f"test-group-{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka_bootstrap, {topic_name: 2})
    try:
        c = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
        c.commit({TopicPartition(topic_name, p): OffsetAndMetadata(7, "", -1) for p in range(2)})
        c.close()
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        assert {tp.partition: o.offset for tp, o in admin.list_group_offsets(group)[group].items()} == {0: 7, 1: 7}
        assert delete_group(kafka_bootstrap, group) is True
        assert not admin.list_group_offsets(group).get(group)  # no offsets left
        admin.close()
        assert delete_group(kafka_bootstrap, group) is False  # nothing to delete: not an error
    finally:
        delete_topics(kafka_bootstrap, [topic_name])
