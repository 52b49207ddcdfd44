"""Issue 14, item 2, through the real service (real Kafka, real Redis):

* a flood of new video ids: without a cap the catalogue and every published
  global record grow with the ids seen (reproduced with ``--max-videos 0``,
  the old behaviour); with the cap they stay bounded;
* a steady stream publishes ~1 global version a second: before, each
  superseded version lived an hour (``global_ttl_s``), so old versions piled
  up; now only ``--global-keep-versions`` stay."""

from __future__ import annotations

import random
import time

import pytest
import redis
from test_stream_support import create_topic, produce, running, wait_exit, worker_cmd

from streamer.event import encode_event
from streamer.reader.redis_record import decode_global_record, global_current_key, global_key
from streamer.service.store.global_retention import versions_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _flood_events(n: int, n_users: int = 200, seed: int = 1) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        u = f"user-{rng.randrange(n_users)}"
        out.append((u.encode(), encode_event(f"f{i}", u, f"new-{i}", 5.0, now)))
    return out


def _global(client: redis.Redis, prefix: str) -> tuple[int, int]:
    """(n_videos, bytes) of the current global record."""
    v = int(client.get(global_current_key(prefix)))
    fields = client.hgetall(global_key(prefix, v))
    return decode_global_record(fields).n_videos, sum(len(x) for x in fields.values())


def _version_keys(client: redis.Redis, prefix: str) -> list[bytes]:
    return [k for k in client.scan_iter(match=f"{prefix}:g:{{*}}", count=1000)]


@pytest.mark.parametrize("cap", [0, 500])
def test_new_video_flood(
    kafka_bootstrap, redis_url, key_prefix, topic_name, tmp_path, cap: int
) -> None:  # type: ignore[no-untyped-def]
    create_topic(kafka_bootstrap, topic_name)
    client = redis.Redis.from_url(redis_url)
    produce(kafka_bootstrap, topic_name, _flood_events(3000))
    cmd = worker_cmd(
        kafka_bootstrap,
        redis_url,
        topic_name,
        key_prefix,
        "--stop-when-idle-s",
        "3",
        "--max-videos",
        str(cap),
        "--publish-every-ms",
        "200",
    )
    log = tmp_path / "w.log"
    with running(cmd, log) as proc:
        assert wait_exit(proc, 150, log) == 0
    n_videos, size = _global(client, key_prefix)
    if cap == 0:  # the defect: every id ever seen is published, for good
        assert n_videos == 3000
    else:
        assert n_videos <= cap
        # ~ cap x (the float32 arrays per video + id): D = 4 at n_factors 3
        # (mean, scale, covariance) plus, in a version 2 record, the choice
        # component's cd = 11 (mean, covariance)
        per_video = 4 * (4 + 4 + 16 + 11 + 121) + 10
        assert size < cap * per_video * 1.2


def test_old_global_versions_do_not_pile_up(
    kafka_bootstrap, redis_url, key_prefix, topic_name, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """~20 publishes; before, all of them stayed (each with an hour's expiry)."""
    create_topic(kafka_bootstrap, topic_name)
    client = redis.Redis.from_url(redis_url)
    from test_stream_support import make_events

    events, _ = make_events(2500, 300, seed=3)
    cmd = worker_cmd(
        kafka_bootstrap,
        redis_url,
        topic_name,
        key_prefix,
        "--stop-when-idle-s",
        "3",
        "--publish-every-batches",
        "1",
        "--global-keep-versions",
        "2",
    )
    log = tmp_path / "w.log"
    with running(cmd, log) as proc:
        produce(kafka_bootstrap, topic_name, events, rate=1500.0)
        assert wait_exit(proc, 150, log) == 0
    current = int(client.get(global_current_key(key_prefix)))
    assert current >= 15  # many versions were published
    keys = _version_keys(client, key_prefix)
    assert len(keys) <= 2, keys
    assert global_key(key_prefix, current).encode() in keys
    assert client.zcard(versions_key(key_prefix)) == len(keys)
