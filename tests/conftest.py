"""Shared fixtures: the real local Kafka broker and Redis server.

`make test` starts both (deploy/local/with_services.sh) before pytest runs and
stops them afterwards. Tests isolate themselves by unique topic names and Redis
key prefixes instead of flushing shared state.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

KAFKA_BOOTSTRAP = os.environ.get("HPMF_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}")
REDIS_URL = os.environ.get("HPMF_REDIS_URL", f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"no Redis at {REDIS_URL}: run the tests with `make test` (it starts Redis): {exc}")
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
