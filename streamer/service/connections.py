"""Client configuration from the settings, in one place, so every Kafka and
Redis client of the project (the worker, topic creation, replay, the demo,
the benchmarks) connects the same way: security protocol, SASL, TLS files
and passwords (from the environment or the secrets directory)."""

from __future__ import annotations

from typing import Any

import redis

from streamer.service.settings import StreamSettings


def kafka_security(s: StreamSettings | None = None) -> dict[str, Any]:
    """kafka-python keyword arguments for the security settings (the same
    names for KafkaConsumer, KafkaProducer and KafkaAdminClient).

    >>> kafka_security(StreamSettings())
    {'security_protocol': 'PLAINTEXT'}
    """
    s = s or StreamSettings()
    out: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    if s.kafka_security_protocol.startswith("SASL_"):
        out |= {
            "sasl_mechanism": s.kafka_sasl_mechanism,
            "sasl_plain_username": s.kafka_sasl_username,
            "sasl_plain_password": s.kafka_sasl_password.get_secret_value(),
        }
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        out["ssl_check_hostname"] = s.kafka_ssl_check_hostname
        for key, value in (
            ("ssl_cafile", s.kafka_ssl_cafile),
            ("ssl_certfile", s.kafka_ssl_certfile),
            ("ssl_keyfile", s.kafka_ssl_keyfile),
            ("ssl_password", s.kafka_ssl_password.get_secret_value()),
        ):
            if value:
                out[key] = value
    return out


def group_membership(s: StreamSettings) -> dict[str, Any]:
    """KafkaConsumer arguments for static membership and the assignor."""
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    assignor = {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "sticky": StickyPartitionAssignor,
        "cooperative-sticky": CooperativeStickyAssignor,
    }[s.partition_assignor]
    out: dict[str, Any] = {"partition_assignment_strategy": (assignor,)}
    if s.group_instance_id:
        out["group_instance_id"] = s.group_instance_id
    return out


def redis_options(s: StreamSettings) -> dict[str, Any]:
    """redis-py keyword arguments beyond the URL: the ACL user and password
    (which win over ones in the URL) and, for rediss://, the TLS files."""
    out: dict[str, Any] = {}
    if s.redis_username:
        out["username"] = s.redis_username
    if s.redis_password.get_secret_value():
        out["password"] = s.redis_password.get_secret_value()
    if s.redis_url.startswith("rediss://"):
        for key, value in (
            ("ssl_ca_certs", s.redis_ssl_ca_certs),
            ("ssl_certfile", s.redis_ssl_certfile),
            ("ssl_keyfile", s.redis_ssl_keyfile),
        ):
            if value:
                out[key] = value
    return out


def redis_client(
    s: StreamSettings | None = None, url: str | None = None, **kwargs: Any
) -> redis.Redis:
    """A Redis client for ``url`` (default: the settings' redis_url) with the
    settings' credentials and TLS files: a ``redis.cluster.RedisCluster``
    (the URL names one start-up node) when the settings say ``redis_cluster``."""
    s = s or StreamSettings()
    target = url or s.redis_url
    if s.redis_cluster:
        return redis_cluster_client(s, target, **kwargs)
    # redis-py lets the URL's own user/password win over keyword arguments;
    # the settings are meant to win (a secret file over a URL in a ConfigMap).
    pool = redis.ConnectionPool.from_url(target, **kwargs)
    pool.connection_kwargs.update(redis_options(s.model_copy(update={"redis_url": target})))
    return redis.Redis(connection_pool=pool)


def redis_cluster_client(s: StreamSettings, url: str, **kwargs: Any) -> redis.Redis:
    """A RedisCluster whose start-up node is ``url``; it finds the other
    nodes itself (CLUSTER SLOTS). RedisCluster lets a URL's user and password
    win over keyword arguments, so when the settings name credentials the
    URL's are dropped first (the settings win, as for a single Redis)."""
    from redis.cluster import RedisCluster

    opts = redis_options(s.model_copy(update={"redis_url": url}))
    if "username" in opts or "password" in opts:
        url = _without_userinfo(url)
    kwargs.pop(
        "health_check_interval", None
    )  # per node connection; the cluster client re-checks on error
    client = RedisCluster.from_url(url, **kwargs, **opts)
    return client  # type: ignore[return-value]  # the same command API as redis.Redis


def _without_userinfo(url: str) -> str:
    """``url`` without ``user:password@``.

    >>> _without_userinfo("redis://app:pw@127.0.0.1:7000/0")
    'redis://127.0.0.1:7000/0'
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
