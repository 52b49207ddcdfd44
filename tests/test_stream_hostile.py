"""A hostile corpus on the real broker (issue 14, item 1): records no careful
producer would send, mixed into a normal stream. The worker survives every
one of them, dead-letters each with its reason, and the normal users' counts
are exact.

Before the fix: the few-hundred-digit integer stopped the worker (exit 1,
OverflowError, on every restart), the near-maximum-size record made the
dead-letter produce fail (MessageSizeTooLargeError, exit 1 on every restart),
the newline video id was applied and then froze the global model (the
learner's publish raised ValueError), the key mismatch and the implausible
timestamps were applied, and a record whose header key is not UTF-8 made
every poll raise CorruptRecordError (its partition never moved again)."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer
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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NEAR_MAX = 1_048_400  # the broker's default message.max.bytes is 1,048,588: fits, with headers added it does not


class _NotUtf8(str):
    """A header key that kafka-python's producer writes as non-UTF-8 bytes
    (the protocol calls it a string; the broker does not check)."""

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return b"\xff\xfe"


def ev(
    user: object, video: object = "v1", minutes: object = 3.0, ts: object = None, eid: str = "h"
) -> dict[str, object]:
    return {
        "event_id": eid,
        "user_id": user,
        "video_id": video,
        "minutes": minutes,
        "ts": int(time.time() * 1000) if ts is None else ts,
    }


def raw_json(d: dict[str, object], **raw_fields: bytes) -> bytes:
    """JSON with some fields' text given verbatim (numbers json cannot write)."""
    text = json.dumps({k: (f"@@{k}@@" if k in raw_fields else v) for k, v in d.items()}).encode()
    for k, v in raw_fields.items():
        text = text.replace(f'"@@{k}@@"'.encode(), v)
    return text


def hostile(now_ms: int) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]], str]]:
    """(key, value, headers, expected dead-letter reason)."""
    big = b"9" * 400
    return [
        (b"h1", raw_json(ev("h1"), minutes=big), [], "not_finite"),
        (b"h2", raw_json(ev("h2"), ts=big), [], "future_timestamp"),
        (b"h3", raw_json(ev("h3"), minutes=b"-" + big), [], "not_finite"),
        (
            b"h4",
            b'{"event_id":"x","user_id":"h4","video_id":"v","minutes":1,"ts":' + b"1" * 4000 + b"}",
            [],
            "future_timestamp",
        ),
        (b"h5", b"x" * NEAR_MAX, [], "payload_too_large"),
        (b"h6", json.dumps(ev("h6", video="a\nb")).encode(), [], "bad_id"),
        (b"h7", json.dumps(ev("h7\n", video="v")).encode(), [], "bad_id"),
        (b"user-1", json.dumps(ev("h8")).encode(), [], "key_mismatch"),
        (None, json.dumps(ev("h9")).encode(), [], "key_mismatch"),
        (b"", json.dumps(ev("h10")).encode(), [], "key_mismatch"),
        (b"k" * 100_000, json.dumps(ev("h11")).encode(), [], "key_mismatch"),
        (b"h12", json.dumps(ev("h12", ts=1)).encode(), [], "bad_timestamp"),
        (b"h13", json.dumps(ev("h13", ts="0001-01-01T00:00:00")).encode(), [], "bad_timestamp"),
        (
            b"h14",
            json.dumps(ev("h14", ts=now_ms + 400 * 86_400_000)).encode(),
            [],
            "future_timestamp",
        ),
        (
            b"h15",
            b'{"event_id":"x","user_id":"h15","video_id":"\xff\xfe","minutes":1,"ts":1}',
            [],
            "invalid_utf8",
        ),
        (b"h16", None, [], "invalid_json"),
        (
            b"h17",
            b"\x00" * 64,
            [("\x00", b"\xff" * 300), ("", b""), ("é" * 50, bytes(range(256)))],
            "invalid_json",
        ),
        (b"h18", json.dumps(ev("h18", video=10**300)).encode(), [], "bad_id"),
    ]


def test_hostile_corpus_does_not_stop_the_stream(
    kafka_bootstrap, redis_url, redis_client, topic_name, key_prefix, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from model.batch import Batch
    from model.config import HPMFConfig
    from model.online import OnlineHPMF
    from streamer.reader.redis_record import global_key
    from streamer.service.settings import StreamSettings
    from streamer.service.store.global_stats_record import encode_stats

    create_topic(kafka_bootstrap, topic_name)
    before, c1 = make_events(800, 40, seed=5, id_prefix="a")
    after, c2 = make_events(800, 40, seed=6, id_prefix="b")
    counts = c1 + c2
    now = int(time.time() * 1000)
    corpus = hostile(now)
    produce(kafka_bootstrap, topic_name, before)
    # Valid events of normal users with garbage headers: applied (headers are not read).
    garbage = [("\x00\x01", b"\xff\xfe\x00" * 100)] + [(f"h{i}", bytes([i])) for i in range(200)]
    extra, c3 = make_events(30, 40, seed=7, id_prefix="c")
    counts += c3
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, max_request_size=4 * 1024 * 1024, acks="all"
    )
    for key, value, headers, _ in corpus:
        producer.send(topic_name, key=key, value=value, headers=headers or None, partition=0)
    for key, value in extra:
        producer.send(topic_name, key=key, value=value, headers=garbage)
    # A valid event whose header key is not UTF-8 (kafka-python's parser used
    # to raise on it from every poll: the partition never moved again).
    more, c4 = make_events(3, 40, seed=8, id_prefix="d")
    counts += c4
    for key, value in more:
        producer.send(topic_name, key=key, value=value, headers=[(_NotUtf8("x"), b"v")])
    producer.flush()
    producer.close()
    produce(kafka_bootstrap, topic_name, after)

    # A statistics entry with a newline video id, as a worker before the id
    # alphabet wrote it: the learner must quarantine it, not freeze on it.
    cfg = HPMFConfig(**StreamSettings(n_factors=3).model_config_dict())
    stats = OnlineHPMF(cfg).local_update(Batch.of(["old-user"], ["bad\nvideo"], [5.0]), {}).stats
    redis_client.xadd(f"{key_prefix}:gstats", {"w": b"old-worker", "b": encode_stats(stats)})

    log = tmp_path / "worker.log"
    cmd = worker_cmd(kafka_bootstrap, redis_url, topic_name, key_prefix, "--stop-when-idle-s", "4")
    with running(cmd, log) as proc:
        users = sorted(counts)

        def done() -> bool:
            assert proc.poll() is None or proc.returncode == 0, (
                f"worker exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
            return user_counts(redis_client, key_prefix, users) == dict(counts)

        wait_for(done, 90, "every normal event in Redis")
        assert wait_exit(proc, 60, log) == 0

    # No hostile user was written.
    hostile_users = [f"h{i}" for i in range(1, 19)] + ["h7\n"]
    assert set(user_counts(redis_client, key_prefix, hostile_users).values()) == {0}
    # The globals moved on past the quarantined entry: published, and without the bad video.
    current = redis_client.get(f"{key_prefix}:g:current")
    assert current is not None and int(current) > 0
    ids = redis_client.hget(global_key(key_prefix, int(current)), "video_ids")
    assert ids is not None and b"bad" not in ids

    consumer = KafkaConsumer(
        f"{topic_name}.dlq",
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    dead = list(consumer)
    consumer.close()
    by_offset = {}
    quarantined = []
    for rec in dead:
        h = {k: v for k, v in rec.headers}
        if h["source_topic"] == f"{key_prefix}:gstats".encode():
            quarantined.append(h)
            continue
        assert h["source_topic"].decode() == topic_name
        by_offset[int(h["source_offset"])] = (rec, h)
    # Partition 0 holds the corpus, in order, after `before`'s events of that partition.
    got = sorted(by_offset.items())
    assert [h["error"].decode() for _, (_, h) in got] == [r for *_, r in corpus]
    for (_, (rec, h)), (key, value, _, _) in zip(got, corpus, strict=True):
        if value is not None and len(value) >= NEAR_MAX:
            # Too large to copy whole: a reduced dead letter, a prefix and the original's sizes.
            assert h.get("truncated") == b"1"
            assert int(h["original_value_bytes"]) == len(value or b"") and int(
                h["original_key_bytes"]
            ) == len(key or b"")
            assert (rec.value or b"") == (value or b"")[:1024] and (rec.key or b"") == (key or b"")[
                :1024
            ]
        else:
            assert "truncated" not in h and rec.value == value and rec.key == key
    assert [q["error"] for q in quarantined] == [b"unpublishable_video_id"]
