"""kill -9 mid-batch, restart: every user's applied count equals the events
produced for them -- nothing lost, nothing counted twice. Against one Redis
and against the three-master Redis Cluster (where a batch is written slot
by slot, so a kill can land between two slots of one batch)."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from test_stream_support import (
    create_topic,
    make_events,
    produce,
    running,
    stopped_summaries,
    user_counts,
    wait_exit,
    wait_for,
    worker_cmd,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def test_killed_between_redis_write_and_commit(
    kafka_bootstrap, redis_store, topic_name, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The worst moment: the batch is in Redis, its offsets are not committed.
    The fault hook SIGKILLs the worker right there (after its 3rd write)."""
    create_topic(kafka_bootstrap, topic_name)
    events, counts = make_events(2000, 120, seed=4)
    produce(kafka_bootstrap, topic_name, events)
    users = sorted(counts)
    log = tmp_path / "worker.log"
    redis_client, key_prefix = redis_store.client, redis_store.prefix
    cmd = worker_cmd(
        kafka_bootstrap,
        redis_store.url,
        topic_name,
        key_prefix,
        "--stop-when-idle-s",
        "4",
        *redis_store.worker_args(),
    )
    with running(cmd, log, env={"HPMF_FAULT_KILL_AFTER_WRITE": "3"}) as proc:
        assert wait_exit(proc, 60, log) == -signal.SIGKILL
    partial = user_counts(redis_client, key_prefix, users)
    assert 0 < sum(partial.values()) < 2000  # it died mid-stream with batches written

    with running(cmd, log) as proc:
        assert wait_exit(proc, 90, log) == 0
    assert user_counts(redis_client, key_prefix, users) == dict(counts)
    summary = stopped_summaries(log)[-1]
    # The uncommitted batch was read again and skipped, not re-applied.
    assert summary["skipped_replay"] > 0
    assert summary["applied"] + sum(partial.values()) == 2000


def test_kill_9_at_a_random_moment_while_events_flow(
    kafka_bootstrap, redis_store, topic_name, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    create_topic(kafka_bootstrap, topic_name)
    events, counts = make_events(4000, 200, seed=5)
    users = sorted(counts)
    producer = threading.Thread(target=produce, args=(kafka_bootstrap, topic_name, events, 800.0))
    log = tmp_path / "worker.log"
    redis_client, key_prefix = redis_store.client, redis_store.prefix
    cmd = worker_cmd(
        kafka_bootstrap,
        redis_store.url,
        topic_name,
        key_prefix,
        "--stop-when-idle-s",
        "4",
        *redis_store.worker_args(),
    )
    try:
        with running(cmd, log) as proc:
            producer.start()
            wait_for(
                lambda: sum(user_counts(redis_client, key_prefix, users).values()) > 800,
                60,
                "some progress",
            )
            time.sleep(0.37)  # land somewhere inside a batch, not at a poll boundary
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        gv_before = int(redis_client.get(redis_store.global_key("g:current")) or 0)
        with running(cmd, log) as proc:
            producer.join(timeout=30)
            assert wait_exit(proc, 90, log) == 0
    finally:
        producer.join(timeout=30)
    assert user_counts(redis_client, key_prefix, users) == dict(counts)
    # The restarted worker took over the learner role and went on publishing.
    assert int(redis_client.get(redis_store.global_key("g:current"))) > gv_before
