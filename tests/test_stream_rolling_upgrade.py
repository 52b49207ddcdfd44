"""Rolling upgrade from record format 1 to 2 (issue #14 item 5, docs/operations.md
"Rolling upgrade of the record format") against the real broker and Redis.

The runbook, step by step, with the same users throughout:

0. the previous release: a worker without the choice component writes version 1;
1. new readers are deployed first: they read the old (version 1) records;
2. new workers, still writing version 1 (``--record-format 1``): the old
   readers, which know version 1 only, keep reading every user;
3. once every reader is new, flip the writer to version 2: users touched
   since carry the choice posterior, the global record the choice component,
   and ``recommend`` ranks by expected minutes if shown.

At no step does any user fall back to the prior because of the upgrade:
every user's record is read as theirs (status ``ok``), with every event
counted. An *old* reader of a version 2 record is also shown, to pin what the
docs say it does: it refuses it (``unsupported_version``), which is why the
writer waits.

"Old reader" = this reader library knowing only version 1 (the previous
release's ``SCHEMA_VERSIONS``), the one thing that differs in its code path.
"""

from __future__ import annotations

import collections
import signal
from pathlib import Path

import numpy as np
import pytest
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

from streamer.reader.lookup import GlobalsUnreadableError, Lookup, Status
from streamer.reader.redis_record import (
    decode_global_record,
    global_current_key,
    global_key,
    user_key,
)
from streamer.reader.redis_record import format as record_format
from streamer.service.store.global_stats_record import decode_choice_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _run_until(cmd: list[str], log: Path, client, prefix: str, want: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    users = sorted(want)
    with running(cmd, log) as proc:
        wait_for(lambda: user_counts(client, prefix, users) == want, 90, "every count in Redis")
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, 60, log) == 0


def _versions(client, prefix: str, users: list[str]) -> collections.Counter[bytes]:  # type: ignore[no-untyped-def]
    pipe = client.pipeline(transaction=False)
    for u in users:
        pipe.hget(user_key(prefix, u), "v")
    return collections.Counter(pipe.execute())


def _global_version_field(client, prefix: str) -> bytes:  # type: ignore[no-untyped-def]
    return client.hget(global_key(prefix, int(client.get(global_current_key(prefix)))), "v")


def _read_all(redis_url: str, prefix: str, users: list[str]) -> list:  # type: ignore[type-arg]
    return Lookup.from_url(redis_url, prefix, refresh_interval_ms=0).user_posteriors(users)


def test_rolling_upgrade_from_format_1_to_2(
    kafka_bootstrap,
    redis_url,
    redis_client,
    topic_name,
    key_prefix,  # type: ignore[no-untyped-def]
    tmp_path,
    monkeypatch,
) -> None:
    create_topic(kafka_bootstrap, topic_name)
    base = worker_cmd(kafka_bootstrap, redis_url, topic_name, key_prefix, "--lag-refresh-s", "0.5")
    counts: collections.Counter[str] = collections.Counter()

    def old_reader() -> list:  # type: ignore[type-arg]
        with monkeypatch.context() as m:
            m.setattr(record_format, "SCHEMA_VERSIONS", (1,))
            return _read_all(redis_url, key_prefix, sorted(counts))

    # 0. The previous release: the minutes model alone, version 1 records.
    events, c0 = make_events(1500, 120, seed=1, id_prefix="a")
    produce(kafka_bootstrap, topic_name, events)
    counts.update(c0)
    _run_until(
        [*base, "--choice", "false"], tmp_path / "w0.log", redis_client, key_prefix, dict(counts)
    )
    users = sorted(counts)
    assert _versions(redis_client, key_prefix, users) == {b"1": len(users)}
    assert _global_version_field(redis_client, key_prefix) == b"1"

    # 1. New readers first: version 1 records read as the users' own.
    new = _read_all(redis_url, key_prefix, users)
    assert [p.status for p in new] == [Status.OK] * len(users)
    assert [p.n_events for p in new] == [counts[u] for u in users]

    # 2. New workers writing version 1 (the choice component runs; its
    #    posteriors go to the learner but not into the records yet).
    events, c1 = make_events(1500, 120, seed=2, id_prefix="b")
    produce(kafka_bootstrap, topic_name, events)
    counts.update(c1)
    _run_until(
        [*base, "--record-format", "1"], tmp_path / "w1.log", redis_client, key_prefix, dict(counts)
    )
    users = sorted(counts)
    assert _versions(redis_client, key_prefix, users) == {b"1": len(users)}
    assert _global_version_field(redis_client, key_prefix) == b"1"
    for reader in (old_reader(), _read_all(redis_url, key_prefix, users)):
        assert [p.status for p in reader] == [Status.OK] * len(users)
        assert [p.n_events for p in reader] == [counts[u] for u in users]
    # the learner learned the choice component meanwhile (its snapshot for workers)
    assert redis_client.hget(f"{key_prefix}:learner", "csnap")

    # 3. Every reader is new: flip the writer to version 2. Only half the
    #    users come back, so version 1 and 2 records are read side by side.
    events, c2 = make_events(800, 60, seed=3, id_prefix="c")
    produce(kafka_bootstrap, topic_name, events)
    counts.update(c2)
    _run_until(
        [*base, "--record-format", "2"], tmp_path / "w2.log", redis_client, key_prefix, dict(counts)
    )
    users = sorted(counts)
    versions = _versions(redis_client, key_prefix, users)
    assert versions[b"2"] == len(c2) and versions[b"1"] == len(users) - len(c2)
    assert _global_version_field(redis_client, key_prefix) == b"2"
    gv = int(redis_client.get(global_current_key(key_prefix)))
    grec = decode_global_record(redis_client.hgetall(global_key(key_prefix, gv)))
    assert grec.has_choice and grec.choice_video_mean is not None
    assert grec.choice_video_mean.shape == (grec.n_videos, 11)  # default 10 choice factors + 1

    # The choice learner resumed from its checkpoint across the restart: it
    # learned more (user, video) pairs than this step's 800 events hold.
    ck = decode_choice_checkpoint(redis_client.hget(f"{key_prefix}:learner", "cckpt"))
    assert ck.clock > 800

    lookup = Lookup.from_url(redis_url, key_prefix, refresh_interval_ms=0)
    posts = lookup.user_posteriors(users)
    # No user fell back to the prior: every record is read as the user's own, every event counted.
    assert [p.status for p in posts] == [Status.OK] * len(users)
    assert [p.n_events for p in posts] == [counts[u] for u in users]
    # Version 2 users carry their choice posterior; version 1 users get the choice prior
    # (their minutes posterior is theirs) until their next event rewrites them.
    with_choice = {p.user_id for p in posts if p.choice_mean is not None}
    assert with_choice == set(c2)
    recs = lookup.recommend_many(sorted(c2)[:10], k=5)
    assert all(len(r.items) == 5 for r in recs)
    assert len({tuple(r.video_ids) for r in recs}) > 1  # choice posteriors differ, so do the lists
    assert all(np.isfinite(i.score) and i.score >= 0 for r in recs for i in r.items)

    # What the docs say an old reader does with version 2: refuses it. A
    # version 2 user is served the prior (unsupported_version), and a
    # version 2 global record cannot be loaded: the reason to flip last.
    with monkeypatch.context() as m:
        m.setattr(record_format, "SCHEMA_VERSIONS", (1,))
        with pytest.raises(GlobalsUnreadableError):
            Lookup.from_url(redis_url, key_prefix, refresh_interval_ms=0).user_posteriors(users)
