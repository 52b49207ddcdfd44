"""Round trip against the real broker and Redis (one server, and the
three-master Redis Cluster): events produced are in Redis with the right
counts, in the published format, with expiry; duplicates by event_id are
skipped; the globals are published under the documented key names; SIGTERM
exits 0."""

from __future__ import annotations

import signal
import time
import urllib.request

import pytest
from test_stream_support import (
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

from streamer.reader.lookup import Lookup, Status
from streamer.reader.redis_record import decode_global_record, decode_user_record, user_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_events_round_trip_into_redis(kafka_bootstrap, redis_store, topic_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    redis_client, key_prefix, gk = redis_store.client, redis_store.prefix, redis_store.global_key
    create_topic(kafka_bootstrap, topic_name)
    events, counts = make_events(3000, 150, seed=1)
    # A producer retry: the same event ids again (must not be counted twice).
    dupes = events[:200]
    produce(kafka_bootstrap, topic_name, events + dupes)
    log = tmp_path / "worker.log"
    port = free_port()
    cmd = worker_cmd(
        kafka_bootstrap,
        redis_store.url,
        topic_name,
        key_prefix,
        "--metrics-port",
        str(port),
        "--user-ttl-s",
        "600",
        "--lag-refresh-s",
        "0.2",
        *redis_store.worker_args(),
    )
    t_start = time.time() * 1000
    with running(cmd, log) as proc:
        users = sorted(counts)
        wait_for(
            lambda: user_counts(redis_client, key_prefix, users) == dict(counts),
            60,
            "all counts in Redis",
        )

        def scrape() -> str:
            return (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
                .read()
                .decode()
            )

        # The lag is refreshed on a timer, idle or not, per partition.
        zero_lags = [
            f'hpmf_stream_consumer_lag{{partition="{p}",topic="{topic_name}"}} 0.0'
            for p in range(4)
        ]
        wait_for(
            lambda: all(z in scrape().splitlines() for z in zero_lags),
            20,
            "every partition's lag at 0",
        )
        # The duplicates come last and change no count: the counts can be
        # complete while their batch (already counted as consumed at poll)
        # is still being processed. Wait for that batch, then read.
        wait_for(lambda: 'why="duplicate"} 200' in scrape(), 30, "the duplicates' batch processed")
        metrics = scrape()
        ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status
        live = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, 30, log) == 0

    assert ready == 200 and live == 200
    assert "hpmf_stream_events_consumed_total 3200" in metrics
    assert 'hpmf_stream_skipped_events_total{why="duplicate"} 200' in metrics
    assert "hpmf_stream_freshness_seconds_count 3000" in metrics
    assert "hpmf_stream_batch_duration_seconds_count " in metrics
    assert "hpmf_stream_redis_up 1.0" in metrics.splitlines()
    assert "hpmf_stream_learner 1.0" in metrics.splitlines()  # the only worker is the learner
    assert (
        "hpmf_stream_learner_backlog_entries 0.0" in metrics.splitlines()
    )  # ... and has caught up
    assert 'revision="' in metrics and 'version="0.1.0"' in metrics  # hpmf_stream_build_info
    summary = stopped_summaries(log)[-1]
    assert summary["applied"] == 3000 and summary["skipped_duplicate"] == 200

    # Every user record decodes with the published codec and is consistent.
    for u in users[:20]:
        key = user_key(key_prefix, u)
        fields = redis_client.hgetall(key)
        rec = decode_user_record(fields, key)
        assert rec.n_events == counts[u]
        assert rec.dim == 4 and rec.cov.shape == (4, 4)
        assert sorted(rec.history, key=lambda h: h[2]) == rec.history  # oldest first
        assert rec.updated_ms >= t_start and rec.offset >= 0 and 0 <= rec.partition < 4
        assert 0 < redis_client.ttl(key) <= 600
    # The learner published a global record that the reader codec accepts,
    # under the documented names (on a cluster: one hash tag, {prefix}).
    cur = int(redis_client.get(gk("g:current")))
    g = decode_global_record(redis_client.hgetall(gk(f"g:{{{cur}}}")), "g")
    assert g.version == cur >= 1 and g.n_videos == 80 and g.transform == "log1p"
    # Its stream of statistics was trimmed at the last publish (SIGTERM publishes).
    assert redis_client.xlen(gk("gstats")) == 0
    assert redis_client.hget(gk("learner"), "gv") == str(cur).encode()
    assert (
        redis_client.exists(gk("epoch")) and redis_client.zscore(gk("g:versions"), str(cur)) == cur
    )
    # The reader library finds the records in either mode.
    post = Lookup(redis_client, key_prefix).user_posterior(users[0])
    assert (
        post.status is Status.OK and post.n_events == counts[users[0]] and post.model_version == cur
    )
    if redis_store.cluster:
        # Every global key in one slot: what keeps the learner's publish one transaction.
        slots = {
            redis_client.keyslot(gk(n))
            for n in ("g:current", f"g:{{{cur}}}", "gstats", "learner", "epoch")
        }
        assert len(slots) == 1
        assert (
            len({redis_client.keyslot(user_key(key_prefix, u)) for u in users}) > 1
        )  # users spread
