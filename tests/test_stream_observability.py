"""Metrics and health as a platform sees them: the exposition format of the
labelled families, base units, build info, the bind address, and (against
the real broker and Redis) a spare replica that holds no partition but is
ready, so a rolling update does not stall on it. The Redis outage that must
not fail liveness is in tests/test_stream_outage.py."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from test_stream_support import create_topic, free_port, running, wait_for, worker_cmd

from streamer.service.metrics import Gauge, StreamMetrics, serve


def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), ""
    except OSError:  # not listening yet (start-up)
        return 0, ""


def test_labelled_gauge_renders_every_label_and_replace_drops_old_ones() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()

    def samples() -> list[str]:
        return [ln for ln in generate_latest(reg).decode().splitlines() if not ln.startswith("#")]

    g = Gauge("x_lag", "help", ("topic", "partition"), registry=reg)
    g.replace({("t", "0"): 5, ("t", "1"): 0})
    assert samples() == [
        'x_lag{partition="0",topic="t"} 5.0',
        'x_lag{partition="1",topic="t"} 0.0',
    ]
    g.replace({("t", "1"): 3})  # partition 0 was revoked
    assert samples() == ['x_lag{partition="1",topic="t"} 3.0']
    reg2 = CollectorRegistry()
    odd = Gauge("y", "help", "v", registry=reg2)
    odd.set(1, 'a"b\\c\nd')
    assert 'y{v="a\\"b\\\\c\\nd"} 1.0' in generate_latest(reg2).decode().splitlines()


def test_durations_are_in_seconds_and_build_info_is_exported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HPMF_BUILD_REVISION", "abc1234")
    m = StreamMetrics()
    m.freshness.observe(0.012)
    text = m.render()
    assert 'hpmf_stream_freshness_seconds_bucket{le="0.015"} 1' in text
    assert "hpmf_stream_batch_duration_seconds_count 0" in text
    assert "_ms" not in text  # no millisecond names are left
    (info,) = [ln for ln in text.splitlines() if ln.startswith("hpmf_stream_build_info{")]
    assert 'version="0.1.0"' in info and 'revision="abc1234"' in info and info.endswith(" 1.0")


def test_readiness_needs_set_up_and_redis_but_no_partitions() -> None:
    m = StreamMetrics()
    m.redis_ok = True
    assert not m.ready()  # not set up yet
    m.started = True
    assert m.ready() and m.assigned.get() == 0  # a spare replica is ready
    m.redis_ok = False
    assert not m.ready() and "hpmf_stream_redis_up 0" in m.render()
    m.redis_ok = True
    m.last_loop -= m.live_after_s + 1  # the loop stopped turning
    assert not m.live() and not m.ready()


def test_metrics_bind_to_the_configured_address() -> None:
    m = StreamMetrics()
    port = free_port()
    server = serve(m, "0.0.0.0", port)
    try:
        assert get(port, "/metrics")[0] == 200  # reachable on any address, loopback included
        assert server.server_address[0] == "0.0.0.0"
    finally:
        server.shutdown()
        server.server_close()
    if not socket.has_ipv6:
        return
    try:
        server = serve(m, "::1", port)
    except OSError:  # no IPv6 on this host's loopback
        return
    try:
        assert get(port, "/healthz", host="::1")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_spare_replica_without_partitions_is_ready(
    kafka_bootstrap, redis_url, topic_name, key_prefix, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    pa, pb = free_port(), free_port()
    base = worker_cmd(kafka_bootstrap, redis_url, topic_name, key_prefix)
    with running([*base, "--metrics-port", str(pa), "--worker-id", "a"], tmp_path / "a.log"):
        wait_for(
            lambda: "hpmf_stream_assigned_partitions 1" in get(pa, "/metrics")[1],
            60,
            "worker a owns the partition",
        )
        with running([*base, "--metrics-port", str(pb), "--worker-id", "b"], tmp_path / "b.log"):

            def assigned() -> list[str]:
                return sorted(
                    ln
                    for p in (pa, pb)
                    for ln in get(p, "/metrics")[1].splitlines()
                    if ln.startswith("hpmf_stream_assigned_partitions ")
                )

            # After b's join the group settles with the one partition on one of them.
            wait_for(
                lambda: (
                    assigned()
                    == [
                        "hpmf_stream_assigned_partitions 0.0",
                        "hpmf_stream_assigned_partitions 1.0",
                    ]
                ),
                60,
                "one owner, one spare",
            )
            # Both are ready, the spare included.
            wait_for(
                lambda: get(pa, "/readyz")[0] == get(pb, "/readyz")[0] == 200, 30, "both ready"
            )
            assert get(pa, "/healthz")[0] == get(pb, "/healthz")[0] == 200
