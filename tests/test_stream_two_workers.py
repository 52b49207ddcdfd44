"""Two workers in one consumer group against the real broker: a second worker
joins mid-stream (rebalance), then the first is stopped with SIGTERM
(rebalance again, learner hand-over). Every user's event count in Redis
equals what was produced for them, and the globals keep being published by
exactly one learner. Against one Redis and the three-master Redis Cluster."""

from __future__ import annotations

import signal
import threading

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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_two_workers_with_rebalances_count_every_event_once(
    kafka_bootstrap, redis_store, topic_name, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    redis_client, key_prefix = redis_store.client, redis_store.prefix
    create_topic(kafka_bootstrap, topic_name)
    events, counts = make_events(6000, 300, seed=6)
    users = sorted(counts)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    cmd = worker_cmd(
        kafka_bootstrap,
        redis_store.url,
        topic_name,
        key_prefix,
        "--stop-when-idle-s",
        "5",
        *redis_store.worker_args(),
    )
    # The producer holds its last third until B has joined: on a loaded machine B's
    # start-up (seconds of imports) could outlast the whole stream, and B would
    # join an idle topic instead of a running one.
    b_joined = threading.Event()

    def produce_around_the_join() -> None:
        produce(kafka_bootstrap, topic_name, events[:4000], 300.0)
        b_joined.wait(timeout=120)
        produce(kafka_bootstrap, topic_name, events[4000:], 300.0)

    producer = threading.Thread(target=produce_around_the_join)

    def total() -> int:
        return sum(user_counts(redis_client, key_prefix, users).values())

    try:
        with running(cmd + ["--worker-id", "A"], log_a) as a:
            wait_for(lambda: _assigned(log_a), 60, "A assigned partitions")
            producer.start()
            # B starts now and joins mid-stream (its start-up takes seconds).
            with running(cmd + ["--worker-id", "B"], log_b) as b:
                wait_for(lambda: _assigned(log_b), 60, "B assigned partitions")
                b_joined.set()
                seen = total()
                assert 0 < seen < 5000, "the stream ended before the rebalance; slow the producer"
                wait_for(lambda: total() > seen + 600, 60, "progress with two workers")
                # ... then A leaves gracefully: B takes all partitions and the lease.
                a.send_signal(signal.SIGTERM)
                assert wait_exit(a, 30, log_a) == 0
                producer.join(timeout=60)
                assert wait_exit(b, 90, log_b) == 0
    finally:
        b_joined.set()
        producer.join(timeout=60)

    assert user_counts(redis_client, key_prefix, users) == dict(counts)
    applied = [stopped_summaries(p)[-1]["applied"] for p in (log_a, log_b)]
    assert all(n > 0 for n in applied) and sum(applied) == 6000  # both worked, none twice
    learners = [
        r.get("worker")
        for p in (log_a, log_b)
        for r in _records(p)
        if r.get("msg") == "took the learner role"
    ]
    assert learners[0] == "A" and "B" in learners  # A learned first, B took over
    assert int(redis_client.get(redis_store.global_key("g:current"))) >= 1
    assert redis_client.get(redis_store.global_key("learner:lease")) is None  # released at shutdown


def _records(path):  # type: ignore[no-untyped-def]
    from test_stream_support import log_records

    return log_records(path)


def _assigned(path) -> bool:  # type: ignore[no-untyped-def]
    return any(
        r.get("msg") == "partitions assigned" and r.get("partitions") for r in _records(path)
    )
