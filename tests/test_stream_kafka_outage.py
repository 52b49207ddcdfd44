"""Kafka unreachable mid-stream: the worker keeps running, reconnects when the
broker returns, consumes what is produced after it, and counts every event
exactly once.

Uses a private broker (its own ports, data and run directories) started by
the project's own ``deploy/local/kafka.sh`` and killed by this test with
SIGKILL by its PID; the shared broker is not touched. The broker's log
segments survive a kill of its process (they sit in the page cache), as its
data does on a real host whose broker process crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_stream_support import (
    ROOT,
    create_topic,
    free_port,
    make_events,
    produce,
    running,
    stopped_summaries,
    user_counts,
    wait_exit,
    wait_for,
    worker_cmd,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _kafka_sh(action: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "deploy/local/kafka.sh"), action],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"kafka.sh {action} failed:\n{done.stdout}\n{done.stderr}"


def _broker_pid(run_dir: Path) -> int:
    return int((run_dir / "kafka.pid").read_text())


def test_kafka_outage_is_survived_and_nothing_is_lost(
    redis_client, redis_url, key_prefix, topic_name, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    port, controller = free_port(), free_port()
    run_dir = tmp_path / "run"
    env = {
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "HPMF_RUN": str(run_dir),
        "KAFKA_DATA": str(tmp_path / "kafka-data"),
    }
    bootstrap = f"127.0.0.1:{port}"
    _kafka_sh("start", env)
    try:
        create_topic(bootstrap, topic_name)
        events, counts = make_events(3000, 150, seed=11)
        first, second = events[:1500], events[1500:]
        users = sorted(counts)
        log = tmp_path / "worker.log"
        produce(bootstrap, topic_name, first)
        with running(
            worker_cmd(
                bootstrap, redis_url, topic_name, key_prefix, "--retry-max-backoff-s", "0.5"
            ),
            log,
        ) as proc:
            wait_for(
                lambda: sum(user_counts(redis_client, key_prefix, users).values()) == 1500,
                60,
                "the first half in Redis",
            )

            os.kill(_broker_pid(run_dir), signal.SIGKILL)  # the broker is gone
            time.sleep(3.0)
            assert proc.poll() is None, log.read_text()[-3000:]  # the worker waits, it does not die
            _kafka_sh("start", env)  # back, with the same data

            produce(bootstrap, topic_name, second)
            wait_for(
                lambda: user_counts(redis_client, key_prefix, users) == dict(counts),
                120,
                "every event in Redis after the broker came back",
            )
            proc.send_signal(signal.SIGTERM)
            assert wait_exit(proc, 60, log) == 0
        assert user_counts(redis_client, key_prefix, users) == dict(counts)
        summary = stopped_summaries(log)[-1]
        # Every event applied once; events re-read after a lost commit show as replay skips.
        assert summary["applied"] == 3000
        assert (
            summary["events"]
            == summary["applied"] + summary["skipped_replay"] + summary["skipped_duplicate"]
        )
        # The graceful stop committed everything it wrote: a restarted worker
        # would start at the end of every partition.
        assert _committed(bootstrap, f"g-{topic_name}", topic_name) == _end_offsets(
            bootstrap, topic_name
        )
    finally:
        _kafka_sh("stop", env)


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        return {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()
