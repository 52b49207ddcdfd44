"""Shared fixtures: the real local Kafka broker, Redis server and three-node
Redis Cluster.

`make test` starts them (deploy/local/with_services.sh) before pytest runs and
stops them afterwards. Tests isolate themselves by unique topic names and Redis
key prefixes instead of flushing shared state.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

KAFKA_BOOTSTRAP = os.environ.get(
    "HPMF_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
)
REDIS_URL = os.environ.get(
    "HPMF_REDIS_URL", f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0"
)
# One node of the cluster of deploy/local/redis_cluster.sh (the client finds the others).
REDIS_CLUSTER_URL = os.environ.get(
    "HPMF_TEST_REDIS_CLUSTER_URL",
    f"redis://127.0.0.1:{os.environ.get('REDIS_CLUSTER_PORT', '7000')}/0",
)


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(
            f"no Redis at {REDIS_URL}: run the tests with `make test` (it starts Redis): {exc}"
        )
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP, request_timeout_ms=10_000)
        admin.close()
    except KafkaError as exc:
        pytest.fail(f"no Kafka broker at {KAFKA_BOOTSTRAP}: run the tests with `make test`: {exc}")
    return KAFKA_BOOTSTRAP


@pytest.fixture
def topic_name() -> str:
    """A fresh topic name for this test (topics are created by the code under test)."""
    return f"test-watch-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException, RedisError

    try:
        client = RedisCluster.from_url(REDIS_CLUSTER_URL)
        info = client.cluster_info()
        client.close()
    except (RedisError, RedisClusterException) as exc:
        pytest.fail(
            f"no Redis Cluster at {REDIS_CLUSTER_URL}: run the tests with `make test` (it starts one): {exc}"
        )
    assert info.get("cluster_state") == "ok", info
    return REDIS_CLUSTER_URL


@dataclass
class RedisStore:
    """The Redis the service runs against in a test: one server, or a Redis
    Cluster (``hpmf stream --redis-cluster true``), with a client of it and the
    test's key prefix."""

    mode: str
    url: str
    client: Any
    prefix: str

    @property
    def cluster(self) -> bool:
        return self.mode == "cluster"

    def worker_args(self) -> list[str]:
        return ["--redis-cluster", "true"] if self.cluster else []

    def global_key(self, name: str) -> str:
        """A global key's name as the service writes it, spelled out (not
        built by the code under test): ``<prefix>:<name>`` on one Redis,
        ``{<prefix>}:<name>`` on a cluster (docs/redis_format.md)."""
        return f"{{{self.prefix}}}:{name}" if self.cluster else f"{self.prefix}:{name}"


@pytest.fixture(params=["single", "cluster"])
def redis_store(request, redis_url, redis_client, key_prefix) -> Iterator[RedisStore]:  # type: ignore[no-untyped-def]
    """The integration tests that take this run against both: a single Redis
    and the three-master cluster."""
    if request.param == "single":
        yield RedisStore("single", redis_url, redis_client, key_prefix)
    else:
        yield request.getfixturevalue("cluster_store")


@pytest.fixture
def cluster_store(redis_cluster_url, key_prefix) -> Iterator[RedisStore]:  # type: ignore[no-untyped-def]
    """The three-master cluster, with this test's prefix; its keys (both
    spellings of the prefix) are deleted afterwards."""
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster_url)
    yield RedisStore("cluster", redis_cluster_url, client, key_prefix)
    for pattern in (f"{key_prefix}:*", f"{{{key_prefix}}}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()
