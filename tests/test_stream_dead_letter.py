"""A burst of malformed events of every kind lands in the dead-letter topic,
byte for byte and with its reason and origin in the headers, while the valid
events around it keep flowing into Redis."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaConsumer
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

from streamer import event as ev

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def malformed(now_ms: int) -> list[tuple[str, bytes]]:
    ok = {"event_id": "bad", "user_id": "user-1", "video_id": "v", "minutes": 3.0, "ts": now_ms}

    def j(**over: object) -> bytes:
        d = {**ok, **over}
        return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()

    return [
        (ev.PAYLOAD_TOO_LARGE, j(pad="x" * 5000)),
        (ev.INVALID_UTF8, b'{"event_id":"\xff\xfe"}'),
        (ev.INVALID_JSON, b'{"event_id": "e", '),
        (ev.NOT_AN_OBJECT, b'"just a string"'),
        (ev.MISSING_FIELD, j(minutes=...)),
        (ev.WRONG_TYPE, j(minutes="ten")),
        (ev.NOT_FINITE, j().replace(b"3.0", b"NaN")),
        (ev.NEGATIVE_MINUTES, j(minutes=-4)),
        (ev.ABSURD_MINUTES, j(minutes=1e7)),
        (ev.BAD_TIMESTAMP, j(ts="not a time")),
        (ev.FUTURE_TIMESTAMP, j(ts=now_ms + 86_400_000)),
        (ev.BAD_ID, j(user_id="")),
        (ev.KEY_MISMATCH, j(user_id="user-2")),  # produced with key user-1
    ]


def test_malformed_burst_goes_to_dead_letter_topic(
    kafka_bootstrap, redis_url, redis_client, topic_name, key_prefix, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    create_topic(kafka_bootstrap, topic_name)
    before, c1 = make_events(1000, 60, seed=2, id_prefix="a")
    after, c2 = make_events(1000, 60, seed=3, id_prefix="b")
    bad = malformed(int(time.time() * 1000))
    # Every kind is in the burst (but decoder_error: a decoder bug, which no record can be made to cause).
    assert {r for r, _ in bad} == set(ev.REASONS) - {ev.DECODER_ERROR}
    burst = [(b"user-1", payload) for _, payload in bad] * 3
    produce(kafka_bootstrap, topic_name, before + burst + after)
    counts = c1 + c2
    log = tmp_path / "worker.log"
    with running(
        worker_cmd(kafka_bootstrap, redis_url, topic_name, key_prefix, "--stop-when-idle-s", "4"),
        log,
    ) as proc:
        users = sorted(counts)
        wait_for(
            lambda: user_counts(redis_client, key_prefix, users) == dict(counts),
            60,
            "valid events in Redis",
        )
        assert wait_exit(proc, 30, log) == 0

    consumer = KafkaConsumer(
        f"{topic_name}.dlq",
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )
    dead = list(consumer)
    consumer.close()
    assert len(dead) == len(burst)
    by_payload = {p: r for r, p in bad}
    for rec in dead:
        h = {k: v.decode() for k, v in rec.headers}
        assert h["error"] == by_payload[rec.value]  # original bytes, right reason
        assert h["error_detail"]
        assert h["source_topic"] == topic_name
        assert 0 <= int(h["source_partition"]) < 4 and int(h["source_offset"]) >= 0
        assert abs(int(h["failed_at"]) - time.time() * 1000) < 120_000
        assert rec.key == b"user-1"
    # Each dead letter names a distinct source position.
    assert len({(r.headers[3][1], r.headers[4][1]) for r in dead}) == len(burst)
    # Logs name topic, partition and offset of every problem.
    warn = [line for line in log.read_text().splitlines() if "dead-letter" in line]
    assert len(warn) == len(burst) and all('"offset"' in w and '"partition"' in w for w in warn)
