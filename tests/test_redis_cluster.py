"""Redis Cluster mode (HPMF_REDIS_CLUSTER) against the three-master cluster of
deploy/local/redis_cluster.sh: the key layout (one slot per user, one slot
for every global key), the batch read and write split per slot with the same
result as on one Redis, the per-user fence, forget, and the settings."""

from __future__ import annotations

import numpy as np
import pytest
import redis
from pydantic import ValidationError
from redis.crc import key_slot

from model.config import HPMFConfig
from model.online import OnlineHPMF
from streamer.event import WatchEvent
from streamer.reader.redis_record import global_current_key, global_key, global_prefix, user_key
from streamer.service.forget import forget_key, forget_users
from streamer.service.model_update import SourcedEvent, update_users
from streamer.service.rebuild import marker_key
from streamer.service.settings import StreamSettings
from streamer.service.store.global_retention import versions_key
from streamer.service.store.global_stats_record import encode_stats
from streamer.service.store.user_store import (
    UserBatchWrite,
    WriteConflict,
    load_users,
    write_batch,
)

CFG = HPMFConfig(n_factors=2, transform="log1p")


def test_key_names_of_both_modes_are_fixed() -> None:
    # The published names (docs/redis_format.md), spelled out: other services read them.
    single, cluster = global_prefix("hpmf", False), global_prefix("hpmf", True)
    assert [
        global_current_key(single),
        global_key(single, 7),
        versions_key(single),
        marker_key(single),
    ] == ["hpmf:g:current", "hpmf:g:{7}", "hpmf:g:versions", "hpmf:epoch"]
    assert [
        global_current_key(cluster),
        global_key(cluster, 7),
        versions_key(cluster),
        marker_key(cluster),
    ] == ["{hpmf}:g:current", "{hpmf}:g:{7}", "{hpmf}:g:versions", "{hpmf}:epoch"]
    assert (
        user_key("hpmf", "u1") == "hpmf:u:{u1}" and forget_key("hpmf", "u1") == "hpmf:f:{u1}"
    )  # both modes
    # One slot for every global key (the learner's publish is one transaction) ...
    names = [
        "g:current",
        "g:{7}",
        "g:{8}",
        "g:versions",
        "learner",
        "learner:lease",
        "gstats",
        "epoch",
    ]
    assert len({key_slot(f"{cluster}:{n}".encode()) for n in names}) == 1
    # ... and one per user, shared with its forget marker (the write's fence reads both).
    for u in ("u1", "42", "a{b", "x}y"):
        assert key_slot(user_key("hpmf", u).encode()) == key_slot(forget_key("hpmf", u).encode())


def _events(users: list[str], per_user: int, start: int = 0) -> list[SourcedEvent]:
    out = []
    for j in range(start, start + per_user):
        for i, u in enumerate(users):
            o = j * len(users) + i
            out.append(
                SourcedEvent(
                    WatchEvent(f"e{o}", u, f"v{o % 7}", 1.0 + o % 5, 1000 + o), 0, o, 1000 + o
                )
            )
    return out


def _apply(
    client,
    prefix: str,
    gprefix: str,
    model: OnlineHPMF,
    events: list[SourcedEvent],
    expected: dict[str, bytes] | None = None,
) -> tuple[dict, bytes | None]:  # type: ignore[type-arg]
    users = sorted({e.event.user_id for e in events})
    versions: dict[str, bytes] = {}
    stored, _ = load_users(client, prefix, users, global_current_key(gprefix), versions)
    upd = update_users(model, events, stored, dedupe_window=64, now_ms=5000)
    assert upd.stats is not None
    sid = write_batch(
        client,
        prefix,
        UserBatchWrite(
            upd.records,
            upd.event_ids,
            60,
            f"{gprefix}:gstats",
            "w",
            encode_stats(upd.stats),
            upd.seen_at,
            expected=versions if expected is None else expected,
        ),
    )
    return versions, sid


@pytest.mark.integration
def test_batch_split_per_slot_writes_what_one_redis_writes(redis_client, cluster_store) -> None:  # type: ignore[no-untyped-def]
    cl, prefix = cluster_store.client, cluster_store.prefix
    users = [f"user-{i}" for i in range(40)]
    assert len({cl.keyslot(user_key(prefix, u)) for u in users}) == 40  # one script per slot here
    results = []
    for client, gp in ((redis_client, prefix), (cl, global_prefix(prefix, True))):
        model = OnlineHPMF(CFG)
        for b in range(3):
            _, sid = _apply(client, prefix, gp, model, _events(users, 2, start=2 * b))
            assert sid  # the statistics were XADDed, after the users
        assert client.xlen(f"{gp}:gstats") == 3
        stored, pointer = load_users(client, prefix, users, global_current_key(gp))
        results.append(stored)
    single, cluster = results
    assert {u: s.state.n_events for u, s in cluster.items()} == {u: 6 for u in users}
    for u in users:  # the same records, field for field
        a, b = single[u], cluster[u]
        assert (a.partition, a.offset, a.event_ids, a.state.history) == (
            b.partition,
            b.offset,
            b.event_ids,
            b.state.history,
        )
        np.testing.assert_array_equal(a.state.mean, b.state.mean)
        np.testing.assert_array_equal(a.state.cov, b.state.cov)


@pytest.mark.integration
def test_a_conflict_in_one_slot_leaves_the_others_written_and_adds_no_statistics(
    cluster_store,
) -> None:  # type: ignore[no-untyped-def]
    cl, prefix = cluster_store.client, cluster_store.prefix
    gp = global_prefix(prefix, True)
    users = [f"user-{i}" for i in range(10)]
    model = OnlineHPMF(CFG)
    _apply(cl, prefix, gp, model, _events(users, 1))
    versions: dict[str, bytes] = {}
    stored, _ = load_users(cl, prefix, users, global_current_key(gp), versions)
    cl.hset(user_key(prefix, "user-3"), "n", b"99")  # another worker wrote user-3 meanwhile
    upd = update_users(model, _events(users, 1, start=1), stored, dedupe_window=64, now_ms=6000)
    with pytest.raises(WriteConflict):
        write_batch(
            cl,
            prefix,
            UserBatchWrite(
                upd.records,
                upd.event_ids,
                60,
                f"{gp}:gstats",
                "w",
                b"stats",
                upd.seen_at,
                expected=versions,
            ),
        )
    counts = {u: int(cl.hget(user_key(prefix, u), "n")) for u in users}
    assert counts == {**{u: 2 for u in users}, "user-3": 99}  # each user atomic; the others written
    assert cl.xlen(f"{gp}:gstats") == 1  # only the first batch's statistics
    # The retry re-reads: the written users' events are skipped by their stored offsets.
    stored, _ = load_users(cl, prefix, users, global_current_key(gp))
    again = update_users(model, _events(users, 1, start=1), stored, dedupe_window=64, now_ms=7000)
    assert set(again.records) == {"user-3"} and again.applied == 1 and again.skipped_replay == 9


@pytest.mark.integration
def test_forget_on_the_cluster(kafka_bootstrap, cluster_store, topic_name) -> None:  # type: ignore[no-untyped-def]
    from test_stream_support import create_topic

    cl, prefix = cluster_store.client, cluster_store.prefix
    users = ["a", "b", "c"]
    for u in users:
        cl.hset(user_key(prefix, u), "n", b"1")
    create_topic(kafka_bootstrap, topic_name)
    cutoff = forget_users(kafka_bootstrap, topic_name, f"{topic_name}.forget", cl, prefix, users)
    assert set(cutoff) == {0, 1, 2, 3}
    assert not any(cl.exists(user_key(prefix, u)) for u in users)
    assert all(cl.get(forget_key(prefix, u)) is not None for u in users)


def test_cluster_settings() -> None:
    s = StreamSettings(redis_cluster=True, redis_url="redis://127.0.0.1:7000")
    assert s.redis_cluster
    with pytest.raises(ValidationError, match="hash tags"):
        StreamSettings(redis_cluster=True, redis_prefix="{hpmf}")
    with pytest.raises(ValidationError, match="database 0"):
        StreamSettings(redis_cluster=True, redis_url="redis://127.0.0.1:7000/3")
    assert StreamSettings(redis_url="redis://127.0.0.1:6379/3").redis_url.endswith(
        "/3"
    )  # one Redis: any db


@pytest.mark.integration
def test_the_settings_build_a_cluster_client(redis_cluster_url) -> None:  # type: ignore[no-untyped-def]
    from redis.cluster import RedisCluster

    from streamer.service.connections import redis_client

    client = redis_client(
        StreamSettings(redis_cluster=True, redis_url=redis_cluster_url),
        socket_timeout=5,
        health_check_interval=30,
    )
    try:
        assert isinstance(client, RedisCluster)
        assert len(client.get_primaries()) == 3
    finally:
        client.close()


def _move_slot(client, slot: int, dst) -> None:  # type: ignore[no-untyped-def]
    """Move ``slot`` with its keys to node ``dst``, as a reshard does."""
    src = client.nodes_manager.get_node_from_slot(slot)
    src_r, dst_r = client.get_redis_connection(src), client.get_redis_connection(dst)
    src_id, dst_id = src_r.execute_command("CLUSTER MYID"), dst_r.execute_command("CLUSTER MYID")
    dst_r.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
    src_r.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
    while keys := src_r.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
        src_r.execute_command("MIGRATE", dst.host, dst.port, "", 0, 5000, "KEYS", *keys)
    for node in client.get_primaries():
        client.get_redis_connection(node).execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)


@pytest.mark.integration
def test_a_moved_slot_is_followed(redis_cluster_url, cluster_store) -> None:  # type: ignore[no-untyped-def]
    """A reshard moved a user's slot after the worker's client mapped the
    slots: the per-node pipeline gets MOVED, refreshes the map and resends."""
    from redis.cluster import RedisCluster

    prefix, gp = cluster_store.prefix, global_prefix(cluster_store.prefix, True)
    stale = RedisCluster.from_url(redis_cluster_url)  # maps the slots now
    model = OnlineHPMF(CFG)
    _apply(stale, prefix, gp, model, _events(["mover", "stayer"], 1))
    admin = cluster_store.client
    slot = admin.keyslot(user_key(prefix, "mover"))
    home = admin.nodes_manager.get_node_from_slot(slot)
    away = next(n for n in admin.get_primaries() if n.name != home.name)
    _move_slot(admin, slot, away)
    try:
        stored, _ = load_users(stale, prefix, ["mover", "stayer"], global_current_key(gp))
        assert {u: s.state.n_events for u, s in stored.items()} == {"mover": 1, "stayer": 1}
        _apply(stale, prefix, gp, model, _events(["mover", "stayer"], 1, start=1))
        assert int(admin.hget(user_key(prefix, "mover"), "n")) == 2
        assert (
            stale.nodes_manager.get_node_from_slot(slot).name == away.name
        )  # the map was refreshed
    finally:
        admin.nodes_manager.initialize()
        _move_slot(admin, slot, home)  # leave the cluster as the other tests expect it
    stale.close()


@pytest.mark.integration
def test_a_slot_in_migration_is_waited_for_then_written(cluster_store) -> None:  # type: ignore[no-untyped-def]
    """Mid-reshard: the source answers ASK for a user whose keys are not
    there; cluster_send follows it with ASKING, and the importing node asks to
    try again (a two-key script, its keys not all there yet). TRYAGAIN is a
    transient error (the worker retries the batch); once the slot has moved,
    the same write goes through."""
    from streamer.service.errors import TRANSIENT

    cl, prefix = cluster_store.client, cluster_store.prefix
    gp = global_prefix(prefix, True)
    slot = cl.keyslot(user_key(prefix, "newcomer"))
    src = cl.nodes_manager.get_node_from_slot(slot)
    dst = next(n for n in cl.get_primaries() if n.name != src.name)
    src_r, dst_r = cl.get_redis_connection(src), cl.get_redis_connection(dst)
    src_id, dst_id = src_r.execute_command("CLUSTER MYID"), dst_r.execute_command("CLUSTER MYID")
    dst_r.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
    src_r.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
    model = OnlineHPMF(CFG)
    try:
        with pytest.raises(TRANSIENT) as caught:
            _apply(cl, prefix, gp, model, _events(["newcomer"], 1))
        # The source would answer ASK (both keys missing there): TRYAGAIN
        # comes from the importing node, so the redirection was followed.
        assert isinstance(caught.value, redis.exceptions.TryAgainError)
        assert cl.xlen(f"{gp}:gstats") == 0  # nothing half-done: no statistics
    finally:  # the migration called off: both nodes back to a stable slot, the other tests need it
        for r in (src_r, dst_r):
            r.execute_command("CLUSTER SETSLOT", slot, "STABLE")
    for r in (src_r, dst_r):  # no slot left migrating or importing
        assert all(not n["migrations"] for n in r.execute_command("CLUSTER NODES").values())
    _apply(cl, prefix, gp, model, _events(["newcomer"], 1))
    assert int(cl.hget(user_key(prefix, "newcomer"), "n")) == 1


@pytest.mark.integration
def test_acl_credentials_of_the_settings_reach_every_node(cluster_store) -> None:  # type: ignore[no-untyped-def]
    """An ACL user on every node (added for this test, removed after): the
    settings' user and password win over wrong ones in the URL, on every node
    the client finds, as for one Redis (streamer/service/connections.py)."""
    from streamer.service.connections import redis_client

    admin, prefix = cluster_store.client, cluster_store.prefix
    user, password = f"acl-{prefix}", "s3cret-cluster"
    nodes = [admin.get_redis_connection(n) for n in admin.get_primaries()]
    for node in nodes:
        node.execute_command(
            "ACL",
            "SETUSER",
            user,
            "on",
            f">{password}",
            f"~{prefix}:*",
            f"~{{{prefix}}}:*",
            "+@all",
        )
    host, port = cluster_store.url.split("//")[1].split("/")[0].split(":")
    try:
        s = StreamSettings(
            redis_cluster=True,
            redis_url=f"redis://nobody:wrong@{host}:{port}/0",
            redis_username=user,
            redis_password=password,
        )
        client = redis_client(s)
        try:
            users = [f"acl-user-{i}" for i in range(30)]
            for u in users:  # spread over every node
                client.hset(user_key(prefix, u), "n", b"1")
            assert {
                admin.nodes_manager.get_node_from_slot(admin.keyslot(user_key(prefix, u))).name
                for u in users
            } == {n.name for n in admin.get_primaries()}
            assert client.acl_whoami() == user
        finally:
            client.close()
    finally:
        for node in nodes:
            node.execute_command("ACL", "DELUSER", user)
