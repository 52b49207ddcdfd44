"""Admin steps against a broker whose data directory is brand new.

Such a broker has no offsets topic yet: the first group request makes it
create one and is answered CoordinatorNotAvailable, then for a moment
CoordinatorLoadInProgress / NotCoordinator (``make demo`` on a fresh machine
died of the first, at its reset step). The integration test starts a private
broker with the project's own ``deploy/local/kafka.sh`` on free ports and a new
data directory and runs the demo's reset against it at once; the unit tests pin
the retry policy with a stand-in admin client."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import CoordinatorNotAvailableError, GroupAuthorizationFailedError
from kafka.structs import OffsetAndMetadata
from test_stream_support import ROOT, free_port

from streamer.service import kafka_admin
from streamer.service.kafka_admin import (
    BrokerNotReadyError,
    delete_group,
    delete_topics,
    ensure_topics,
)


def _kafka_sh(action: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "deploy/local/kafka.sh"), action],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"kafka.sh {action} failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_demo_reset_and_admin_steps_on_a_brand_new_broker(
    redis_url, key_prefix, tmp_path, caplog
) -> None:  # type: ignore[no-untyped-def]
    from streamer.cli.demo import reset

    port, controller = free_port(), free_port()
    data = tmp_path / "kafka-data"
    env = {
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "HPMF_RUN": str(tmp_path / "run"),
        "KAFKA_DATA": str(data),
    }
    bootstrap = f"127.0.0.1:{port}"
    assert not data.exists()
    _kafka_sh("start", env)
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        assert "__consumer_offsets" not in admin.list_topics()  # brand new: no group can exist yet
        admin.close()
        topic, group = f"fresh-{uuid.uuid4().hex[:8]}", f"fresh-group-{uuid.uuid4().hex[:8]}"
        with caplog.at_level(logging.WARNING, logger="streamer.service.kafka_admin"):
            reset(
                topic, f"{topic}.dlq", group, key_prefix, bootstrap, redis_url
            )  # step 2/7 of make demo
        # It waited for the coordinator (logged), and did not fail.
        waits = [r.getMessage() for r in caplog.records if "not ready" in r.getMessage()]
        assert waits and all(f"delete consumer group {group!r}" in w for w in waits), waits

        assert ensure_topics(bootstrap, {topic: 2}) == [topic]
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(5, "", -1) for p in range(2)})
        consumer.close()
        assert delete_group(bootstrap, group) is True
        assert delete_group(bootstrap, group) is False
        delete_topics(bootstrap, [topic])
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        assert topic not in admin.list_topics()
        admin.close()
    finally:
        _kafka_sh("stop", env)


class _FakeAdmin:
    """Stands in for KafkaAdminClient: answers delete_groups from a script."""

    script: list[object] = []
    made = 0

    def __init__(self, **config: object) -> None:
        type(self).made += 1

    def delete_groups(self, groups: list[str]) -> dict[str, str]:
        answer = type(self).script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return {groups[0]: str(answer)}

    def close(self) -> None:
        pass


@pytest.fixture
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> type[_FakeAdmin]:
    monkeypatch.setattr(kafka_admin, "KafkaAdminClient", _FakeAdmin)
    monkeypatch.setattr(kafka_admin.time, "sleep", lambda s: None)
    _FakeAdmin.made = 0
    return _FakeAdmin


def test_delete_group_waits_through_every_not_ready_answer(fake_admin, caplog) -> None:  # type: ignore[no-untyped-def]
    fake_admin.script = [
        CoordinatorNotAvailableError("FindCoordinatorResponse error for GROUP/g"),
        "CoordinatorLoadInProgressError",
        "NotCoordinatorError",
        "OK",
    ]
    with caplog.at_level(logging.WARNING, logger="streamer.service.kafka_admin"):
        assert delete_group("127.0.0.1:1", "g", wait_s=10) is True
    waits = [r.getMessage() for r in caplog.records]
    assert len(waits) == 3
    for w, name in zip(
        waits,
        ("CoordinatorNotAvailableError", "CoordinatorLoadInProgressError", "NotCoordinatorError"),
        strict=True,
    ):
        assert name in w and "retrying" in w
    assert fake_admin.made == 4  # a fresh client per attempt: no stale coordinator is reused


def test_delete_group_not_found_is_false_and_other_answers_fail_at_once(fake_admin) -> None:  # type: ignore[no-untyped-def]
    fake_admin.script = ["GroupIdNotFoundError"]
    assert delete_group("127.0.0.1:1", "g", wait_s=10) is False
    fake_admin.script = ["GroupNotEmptyError"]
    with pytest.raises(RuntimeError, match="GroupNotEmptyError"):
        delete_group("127.0.0.1:1", "g", wait_s=10)
    fake_admin.script = [GroupAuthorizationFailedError()]  # not retriable: no waiting
    with pytest.raises(GroupAuthorizationFailedError):
        delete_group("127.0.0.1:1", "g", wait_s=10)
    assert fake_admin.made == 3


def test_a_coordinator_that_never_comes_gives_one_line_error(fake_admin) -> None:  # type: ignore[no-untyped-def]
    fake_admin.script = ["CoordinatorLoadInProgressError"] * 1000
    t0 = time.monotonic()
    with pytest.raises(BrokerNotReadyError) as err:
        delete_group("127.0.0.1:1", "g", wait_s=0.5)
    assert time.monotonic() - t0 < 5
    message = str(err.value)
    assert "\n" not in message
    assert (
        "not ready to delete consumer group 'g'" in message
        and "CoordinatorLoadInProgressError" in message
    )


class _LaggingMetadataAdmin:
    """Stands in for KafkaAdminClient on a broker whose metadata cache learns of
    a created topic a few requests after CreateTopics was answered."""

    listed: list[str] = []
    lag = 0

    def __init__(self, **config: object) -> None:
        pass

    def list_topics(self) -> list[str]:
        if type(self).lag > 0:
            type(self).lag -= 1
            return []
        return list(type(self).listed)

    def create_topics(self, new_topics: list[object], timeout_ms: int) -> None:
        type(self).listed += [t.name for t in new_topics]  # type: ignore[attr-defined]
        type(self).lag = 3  # the next three metadata answers do not list them yet

    def close(self) -> None:
        pass


def test_ensure_topics_returns_only_once_the_created_topics_are_listed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A describe_configs right after creation (the worker reads the events
    topic's retention) found the topic unknown while the broker's metadata
    lagged; ensure_topics now waits until the new topics are listed."""
    monkeypatch.setattr(kafka_admin, "KafkaAdminClient", _LaggingMetadataAdmin)
    monkeypatch.setattr(kafka_admin.time, "sleep", lambda s: None)
    _LaggingMetadataAdmin.listed, _LaggingMetadataAdmin.lag = [], 0
    assert kafka_admin.ensure_topics("127.0.0.1:1", {"t": 1}, wait_s=5) == ["t"]
    assert _LaggingMetadataAdmin.lag == 0  # every lagging answer was waited through
    assert kafka_admin.ensure_topics("127.0.0.1:1", {"t": 1}, wait_s=5) == []


@pytest.mark.timeout(60)
def test_no_broker_gives_one_line_error_from_the_cli() -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "topics", "--kafka-bootstrap", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env={**os.environ, "HPMF_ADMIN_WAIT_S": "3"},
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("hpmf topics: error:")]
    assert len(errors) == 1, done.stderr
    assert f"Kafka at 127.0.0.1:{port} was not ready to create topics" in errors[0]
    assert "Traceback" not in done.stderr
    assert time.monotonic() - t0 < 40


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_worker_waiting_for_an_absent_broker_stops_promptly_on_sigterm(
    redis_url, key_prefix, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The worker's own retry loop waits for Kafka at start-up (topic creation)
    and hears SIGTERM; the admin step inside it makes one attempt per call
    (a bootstrap that alone waited 30 s used to hold the stop that long)."""
    import signal

    from test_stream_support import running, wait_exit, worker_cmd

    port = free_port()  # nothing listens there
    log = tmp_path / "worker.log"
    with running(worker_cmd(f"127.0.0.1:{port}", redis_url, "t-absent", key_prefix), log) as proc:
        deadline = time.monotonic() + 60
        while "create topics failed, retrying" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert wait_exit(proc, 30, log) == 0
        assert time.monotonic() - t0 < 15, log.read_text()[-3000:]
