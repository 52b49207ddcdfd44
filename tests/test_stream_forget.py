"""``hpmf forget`` (issue 14, item 6) against the real broker and Redis: the
user's record goes, and neither a replay of the topic nor a Redis that lost
its data brings it back; events produced after the forget count afresh."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from kafka import KafkaConsumer
from test_stream_support import (
    PYTHON,
    ROOT,
    create_topic,
    log_records,
    make_events,
    produce,
    running,
    user_counts,
    wait_exit,
    worker_cmd,
)

from streamer.event import encode_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _run_worker(
    kafka_bootstrap: str, redis_url: str, topic: str, prefix: str, log, group: str
) -> None:  # type: ignore[no-untyped-def]
    cmd = worker_cmd(
        kafka_bootstrap, redis_url, topic, prefix, "--stop-when-idle-s", "3", "--group-id", group
    )
    with running(cmd, log) as proc:
        assert wait_exit(proc, 90, log) == 0, log.read_text()[-3000:]


def test_forget_survives_replay_and_redis_loss(
    kafka_bootstrap, redis_url, redis_client, topic_name, key_prefix, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    create_topic(kafka_bootstrap, topic_name)
    events, counts = make_events(600, 12, seed=9)
    produce(kafka_bootstrap, topic_name, events)
    users = sorted(counts)
    gone = users[:2]
    log = tmp_path / "worker.log"
    _run_worker(kafka_bootstrap, redis_url, topic_name, key_prefix, log, "g1")
    assert user_counts(redis_client, key_prefix, users) == dict(counts)

    out = subprocess.run(
        [
            PYTHON,
            "-m",
            "streamer.cli",
            "forget",
            *gone,
            "--topic",
            topic_name,
            "--kafka-bootstrap",
            kafka_bootstrap,
            "--redis-url",
            redis_url,
            "--redis-prefix",
            key_prefix,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"forgot {len(gone)} user(s)" in out.stdout
    expect = {**dict(counts), **{u: 0 for u in gone}}
    assert user_counts(redis_client, key_prefix, users) == expect
    for u in gone:
        assert redis_client.exists(f"{key_prefix}:f:{{{u}}}")
    # Kafka holds the request (the truth), keyed by user.
    consumer = KafkaConsumer(
        f"{topic_name}.forget",
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    requests = {r.key.decode(): json.loads(r.value) for r in consumer}
    consumer.close()
    assert set(requests) == set(gone) and sum(requests[gone[0]]["cutoff"].values()) == len(events)

    # 1. A replay of the whole topic (a new consumer group) brings nobody back.
    _run_worker(kafka_bootstrap, redis_url, topic_name, key_prefix, log, "g2")
    assert user_counts(redis_client, key_prefix, users) == expect
    summary = [r for r in log_records(log) if r.get("msg") == "stopped"][-1]
    assert summary["applied"] == 0

    # 2. Redis loses everything; the replay rebuilds the kept users, and the
    #    markers come back from the forget topic before any event is applied.
    for key in redis_client.scan_iter(match=f"{key_prefix}:*", count=1000):
        redis_client.delete(key)
    _run_worker(kafka_bootstrap, redis_url, topic_name, key_prefix, log, "g3")
    assert user_counts(redis_client, key_prefix, users) == expect
    assert all(redis_client.exists(f"{key_prefix}:f:{{{u}}}") for u in gone)

    # 3. Events produced after the forget are a new beginning for that user.
    after = [
        (gone[0].encode(), encode_event(f"new-{i}", gone[0], "v1", 5.0, int(time.time() * 1000)))
        for i in range(3)
    ]
    produce(kafka_bootstrap, topic_name, after)
    _run_worker(kafka_bootstrap, redis_url, topic_name, key_prefix, log, "g3")
    assert user_counts(redis_client, key_prefix, users) == {**expect, gone[0]: 3}


def test_forget_refuses_an_id_outside_the_alphabet(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [PYTHON, "-m", "streamer.cli", "forget", "a\nb"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "not a user id" in out.stderr
