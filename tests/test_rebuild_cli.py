"""Issue 14, item 3, with no traffic: every key of the deployment deleted
(what a Redis restart without persistence leaves) while the worker idles.

Before: nothing rebuilt, and every lookup failed with NoGlobalsError while
/readyz said 200. Now the idle worker notices within a second (the epoch
marker), the learner republishes the global record from its Kafka checkpoint,
the users are replayed from Kafka; ``hpmf rebuild`` asks for the same on
purpose and waits for it, and a rebuild of an intact Redis changes nothing."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import redis
from test_stream_support import (
    create_topic,
    make_events,
    produce,
    running,
    user_counts,
    wait_exit,
    wait_for,
    worker_cmd,
)

from streamer.reader.lookup import Lookup, Status
from streamer.reader.redis_record import global_current_key
from streamer.service.rebuild import marker_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(200)]


def test_keys_lost_while_idle_are_rebuilt_and_hpmf_rebuild_waits(
    kafka_bootstrap, redis_url, key_prefix, topic_name, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    create_topic(kafka_bootstrap, topic_name)
    events, counts = make_events(1500, 120, seed=5)
    users = sorted(counts)
    client = redis.Redis.from_url(redis_url)
    log = tmp_path / "w.log"
    cmd = worker_cmd(
        kafka_bootstrap, redis_url, topic_name, key_prefix, "--checkpoint-every-s", "1"
    )
    with running(cmd, log) as proc:
        produce(kafka_bootstrap, topic_name, events, rate=1000.0)
        wait_for(lambda: user_counts(client, key_prefix, users) == dict(counts), 90, "all applied")
        wait_for(
            lambda: len(client.hkeys(marker_key(key_prefix))) == 5,
            30,
            "epoch + 4 partitions marked",
        )
        import time

        time.sleep(2.5)  # a Kafka checkpoint after the last publish
        keys = list(client.scan_iter(match=f"{key_prefix}:*", count=1000))
        client.delete(*keys)  # Redis lost everything; no more traffic
        # The idle worker notices; the learner republishes from the checkpoint.
        wait_for(
            lambda: client.get(global_current_key(key_prefix)) is not None,
            40,
            "globals republished",
        )
        post = Lookup(client, key_prefix).user_posterior(users[0])
        assert post.model_version > 0
        wait_for(
            lambda: user_counts(client, key_prefix, users) == dict(counts), 60, "users rebuilt"
        )
        assert post.status in (Status.OK, Status.NEW_USER)
        # The operator's command on an intact Redis: a rebuild that changes nothing.
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamer.cli",
                "rebuild",
                "--kafka-bootstrap",
                kafka_bootstrap,
                "--topic",
                topic_name,
                "--redis-url",
                redis_url,
                "--redis-prefix",
                key_prefix,
                "--wait",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "rebuilt: all 4 partitions" in out.stdout, out.stdout
        assert "checkpoint" in out.stdout and "version" in out.stdout
        assert user_counts(client, key_prefix, users) == dict(counts)
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, 60, log) == 0
    text = log.read_text()
    assert "Redis lost its data" in text and "kafka checkpoint" in text
