"""The local service scripts fail with a clear, actionable message, not a trace."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KAFKA = ROOT / "deploy" / "local" / "kafka.sh"
REDIS = ROOT / "deploy" / "local" / "redis.sh"


def run(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a listener of this test."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def test_kafka_refuses_a_taken_port_and_says_what_to_do(busy_port: int, tmp_path: Path) -> None:
    r = run(
        KAFKA,
        "start",
        env={
            "KAFKA_PORT": str(busy_port),
            "KAFKA_CONTROLLER_PORT": str(busy_port),
            "HPMF_RUN": str(tmp_path),
        },
    )
    assert r.returncode == 1
    assert f"port 127.0.0.1:{busy_port} is already in use" in r.stderr
    assert "KAFKA_PORT=" in r.stderr  # the way out
    assert "Traceback" not in r.stderr and "Exception" not in r.stderr
    assert not (tmp_path / "kafka.pid").exists()


def test_redis_refuses_a_taken_port(busy_port: int, tmp_path: Path) -> None:
    r = run(REDIS, "start", env={"REDIS_PORT": str(busy_port), "HPMF_RUN": str(tmp_path)})
    assert r.returncode == 1
    assert f"port 127.0.0.1:{busy_port} is already in use" in r.stderr
    assert "REDIS_PORT=" in r.stderr


def test_redis_cluster_refuses_a_taken_port(busy_port: int, tmp_path: Path) -> None:
    r = run(
        ROOT / "deploy" / "local" / "redis_cluster.sh",
        "start",
        env={"REDIS_CLUSTER_PORT": str(busy_port), "HPMF_RUN": str(tmp_path)},
    )
    assert r.returncode == 1
    assert f"port 127.0.0.1:{busy_port} is already in use" in r.stderr
    assert "REDIS_CLUSTER_PORT=" in r.stderr and "Traceback" not in r.stderr
    assert not list((tmp_path / "redis-cluster").glob("*.pid"))  # nothing of ours left running


def test_kafka_without_java_says_how_to_install_it(tmp_path: Path) -> None:
    # A PATH with the shell tools but no java.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in (
        "bash",
        "cat",
        "dirname",
        "date",
        "seq",
        "sleep",
        "grep",
        "awk",
        "cut",
        "ls",
        "mkdir",
        "rm",
        "tail",
    ):
        src = subprocess.run(
            ["bash", "-c", f"command -v {tool}"], capture_output=True, text=True
        ).stdout.strip()
        if src:
            (bindir / tool).symlink_to(src)
    r = run(
        KAFKA,
        "start",
        env={
            "PATH": str(bindir),
            "HPMF_RUN": str(tmp_path / "run"),
            "KAFKA_PORT": "19992",
            "KAFKA_CONTROLLER_PORT": "19993",
        },
    )
    assert r.returncode == 1
    assert "Java not found" in r.stderr and "openjdk-17" in r.stderr


def test_kafka_with_maven_central_unreachable_says_so(tmp_path: Path) -> None:
    # Offline Maven with an empty local repository cannot resolve anything,
    # exactly as when Maven Central is out of reach.
    r = run(
        KAFKA,
        "fetch",
        env={
            "HPMF_CACHE": str(tmp_path / "cache"),
            "KAFKA_MVN_OPTS": f"-o -Dmaven.repo.local={tmp_path / 'repo'}",
        },
    )
    assert r.returncode == 1
    assert "Maven could not fetch org.apache.kafka:kafka_2.13" in r.stderr
    assert "Maven Central is reachable" in r.stderr
