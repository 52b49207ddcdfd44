"""Errors of the streaming service and the small policy that handles them.

Two kinds of trouble, two answers:

* **A bad event** (breaks the contract in :mod:`streamer.event`): it is the
  producer's fault and retrying cannot fix it. It goes to the dead-letter
  topic with its reason and origin, is counted, and the stream goes on.
* **An unreachable dependency** (Redis, Kafka): nothing is wrong with the
  data. The step is retried with capped exponential backoff and a clear log
  line; nothing is committed meanwhile, so a crash during the outage loses
  nothing (the batch is replayed, and the per-user stored offsets make the
  replay a no-op for what was already written).
* **A refusal that waiting cannot fix** -- a wrong Redis password (``WRONGPASS``,
  ``NOAUTH``), a Redis ACL that lacks a command (``NOPERM``), a Kafka
  authorization or SASL authentication failure: :func:`fatal_setting` names
  the setting to fix, :func:`retry` raises :class:`ConfigurationError` at
  once instead of retrying, and ``hpmf stream`` exits 3 with one line that
  names the setting. (redis-py makes an authentication error a kind of
  ConnectionError, which is why it used to be retried forever.)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from kafka import errors as kafka_errors
from kafka.errors import KafkaError

T = TypeVar("T")

#: Exceptions that mean "a dependency is unreachable right now": retry.
TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    # A full Redis under maxmemory-policy noeviction (docs/operations.md)
    # refuses writes; a transaction or script is refused before its first
    # write, so nothing half-done is left, and waiting until memory is freed
    # or added loses nothing (a crash loop would not free any).
    redis.exceptions.OutOfMemoryError,
    # Redis Cluster: a failover or a reshard in progress (CLUSTERDOWN,
    # TRYAGAIN, a slot no node serves for a moment). A batch's per-slot
    # writes are fenced, so the retry re-reads and skips what was written.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    # A slot still redirected after streamer/service/store/cluster_send.py followed it a
    # few times (MovedError is a kind of AskError): a reshard in progress.
    redis.exceptions.AskError,
    KafkaError,
    OSError,
)


class StreamError(RuntimeError):
    """A fault of the service itself (not of an event or a dependency)."""


class ConfigurationError(StreamError):
    """A dependency refused us for a reason only a configuration change can fix."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(
            f"{message} -- check the setting {setting} (env HPMF_{setting.upper()}, flag --{setting.replace('_', '-')}); not retried"
        )
        self.setting = setting


# (exception class, setting to fix, what it means); the first match wins.
_FATAL: tuple[tuple[type[BaseException], str, str], ...] = (
    (redis.exceptions.AuthenticationError, "redis_url", "Redis refused the credentials"),
    (redis.exceptions.NoPermissionError, "redis_url", "the Redis user lacks a permission (ACL)"),
    (kafka_errors.TopicAuthorizationFailedError, "topic", "Kafka refused access to the topic"),
    (
        kafka_errors.GroupAuthorizationFailedError,
        "group_id",
        "Kafka refused access to the consumer group",
    ),
    (
        kafka_errors.TransactionalIdAuthorizationFailedError,
        "kafka_bootstrap",
        "Kafka refused the transactional id",
    ),
    (
        kafka_errors.ClusterAuthorizationFailedError,
        "kafka_bootstrap",
        "Kafka refused a cluster operation (ACL)",
    ),
    (kafka_errors.AuthorizationError, "kafka_bootstrap", "Kafka authorization failed"),
    (
        kafka_errors.SaslAuthenticationFailedError,
        "kafka_bootstrap",
        "Kafka refused the SASL credentials",
    ),
    (
        kafka_errors.UnsupportedSaslMechanismError,
        "kafka_bootstrap",
        "Kafka does not support the SASL mechanism",
    ),
)


def fatal_setting(exc: BaseException) -> ConfigurationError | None:
    """The configuration error that ``exc`` means, or None if it may pass by itself.

    >>> fatal_setting(redis.exceptions.AuthenticationError("WRONGPASS invalid username-password pair")).setting
    'redis_url'
    >>> fatal_setting(redis.exceptions.ConnectionError("Connection refused")) is None
    True
    """
    if isinstance(exc, ConfigurationError):
        return exc
    for cls, setting, what in _FATAL:
        if isinstance(exc, cls):
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            return ConfigurationError(setting, f"{what} ({type(exc).__name__}: {detail})")
    return None


class StopRequested(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a retry loop when shutdown was requested."""


def retry(
    fn: Callable[[], T],
    what: str,
    log: logging.Logger,
    should_stop: Callable[[], bool],
    max_backoff_s: float = 5.0,
    on_failure: Callable[[BaseException], None] | None = None,
    transient: tuple[type[BaseException], ...] = TRANSIENT,
) -> T:
    """Call ``fn`` until it succeeds, sleeping 50 ms, 100 ms, ... up to
    ``max_backoff_s`` (with jitter, so N workers do not reconnect in lockstep)
    between attempts that fail with a transient error. Other errors propagate;
    an authentication or authorization refusal (:func:`fatal_setting`) is
    raised at once as :class:`ConfigurationError`, even where its class is a
    transient one (redis-py's AuthenticationError is a ConnectionError).
    Raises :class:`StopRequested` if shutdown is requested while waiting: the
    caller then must not treat the step as done."""
    delay = 0.05
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            fatal = fatal_setting(exc)
            if fatal is not None:
                raise fatal from exc
            if not isinstance(exc, transient):
                raise
            attempt += 1
            if on_failure is not None:
                on_failure(exc)
            log.warning(
                f"{what} failed, retrying in {delay:.2f} s",
                extra={"attempt": attempt, "error": repr(exc)[:300]},
            )
            end = time.monotonic() + delay * (0.5 + random.random())
            while time.monotonic() < end:
                if should_stop():
                    raise StopRequested(what) from exc
                time.sleep(min(0.05, max(0.0, end - time.monotonic())))
            delay = min(delay * 2, max_backoff_s)
