"""Kafka admin steps: create and delete topics, delete a consumer group.

Every step waits for a broker that is not ready yet. Right after a broker is
started on a brand-new data directory it has no offsets topic: the first
FindCoordinator request makes it create one and is answered
``CoordinatorNotAvailable``; then, for a moment, ``CoordinatorLoadInProgress``
or ``NotCoordinator``. A broker that is still starting may not answer at all.
Each of these answers is retried with a logged, bounded backoff (a fresh admin
client per attempt, so no stale coordinator is reused); when the wait is over,
:class:`BrokerNotReadyError` says in one line what was asked, of whom, and the
last answer. Any other answer is an error at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long an admin step waits for the broker by default, in seconds
#: (``HPMF_ADMIN_WAIT_S`` overrides it).
DEFAULT_WAIT_S = 30.0


def default_wait_s() -> float:
    return float(os.environ.get("HPMF_ADMIN_WAIT_S", DEFAULT_WAIT_S))


#: Answers to a group request that mean "the group coordinator is not ready yet".
COORDINATOR_NOT_READY = frozenset(
    {"CoordinatorNotAvailableError", "CoordinatorLoadInProgressError", "NotCoordinatorError"}
)


class BrokerNotReadyError(KafkaError):
    """The broker did not become ready for an admin step within its wait.

    A :class:`KafkaError` (so the service's own retry loop keeps waiting);
    ``str()`` is one line that says what to check."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "the Kafka broker is not ready"


class _NotReadyAnswer(Exception):  # noqa: N818 - a retry signal, never leaves this module
    """A broker's per-item answer (e.g. DeleteGroups) that means "not ready yet"."""


def _not_ready(exc: BaseException) -> bool:
    return isinstance(exc, _NotReadyAnswer) or (isinstance(exc, KafkaError) and exc.retriable)


def _answer(exc: BaseException) -> str:
    if isinstance(exc, _NotReadyAnswer):
        return str(exc)
    text = str(exc).strip().rstrip(":")
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def with_admin(
    bootstrap: str,
    what: str,
    step: Callable[[KafkaAdminClient], T],
    wait_s: float | None = None,
    request_timeout_ms: int = 15_000,
    config: Mapping[str, Any] | None = None,
) -> T:
    """Run ``step(admin)`` with a fresh admin client, retrying while the broker
    answers "not ready" (any retriable Kafka error, or a
    :data:`COORDINATOR_NOT_READY` answer) for at most ``wait_s`` seconds
    (default :func:`default_wait_s`).
    Each retry is logged (a warning); a broker still not ready at the end
    raises :class:`BrokerNotReadyError`. ``wait_s=0`` makes one attempt (a
    caller with its own retry loop); reaching a broker that does not answer
    at all takes up to 5-10 s per attempt."""
    wait_s = default_wait_s() if wait_s is None else wait_s
    start = time.monotonic()
    deadline = start + wait_s
    delay = 0.2
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                request_timeout_ms=request_timeout_ms,
                bootstrap_timeout_ms=int(1000 * min(max(remaining, 5.0), 10.0)),
                **_security(config),
            )
            try:
                return step(admin)
            finally:
                admin.close()
        except Exception as exc:
            if not _not_ready(exc):
                raise
            answer = _answer(exc)
        elapsed = time.monotonic() - start
        if time.monotonic() + delay > deadline:
            raise BrokerNotReadyError(
                f"Kafka at {bootstrap} was not ready to {what} after {elapsed:.0f} s and {attempt} attempts "
                f"(last answer: {answer}); check that the broker runs (make status) and its log (.run/kafka.log)"
            )
        log.warning(
            f"Kafka at {bootstrap} not ready to {what} ({answer}); retrying in {delay:.1f} s "
            f"(attempt {attempt}, {elapsed:.1f} s of at most {wait_s:.0f} s)"
        )
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    replication: int = 1,
    timeout_ms: int = 15_000,
    wait_s: float | None = None,
    configs: dict[str, dict[str, str]] | None = None,
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create every topic in ``topics`` (name -> partitions) that does not exist yet,
    with the topic configs in ``configs`` (name -> {key: value}) if given.

    Returns the names created. Idempotent: existing topics are left as they are
    (their partition count is not changed; repartitioning a keyed topic would
    move users between partitions, see docs/streaming.md).
    """

    def step(admin: KafkaAdminClient) -> list[str]:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=name,
                num_partitions=n,
                replication_factor=replication,
                topic_configs=(configs or {}).get(name, {}),
            )
            for name, n in topics.items()
            if name not in existing
        ]
        if not wanted:
            return []
        # A concurrent creator (another worker starting, or an earlier attempt
        # of this loop whose answer was lost) may have made them: fine.
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(wanted, timeout_ms=timeout_ms)
        names = [t.name for t in wanted]
        _wait_until_listed(admin, names, timeout_ms / 1000)
        return names

    created = with_admin(bootstrap, "create topics", step, wait_s, timeout_ms, config)
    if created:
        log.info("created topics", extra={"topics": created})
    return created


def topic_config(
    bootstrap: str,
    topic: str,
    name: str,
    timeout_ms: int = 15_000,
    config: Mapping[str, Any] | None = None,
) -> str | None:
    """The effective value of one topic-level config (e.g. ``retention.ms``),
    None if the topic or the config is unknown."""
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **_security(config)
    )
    try:
        # config_filter "all": by default only values set on the topic come
        # back, and a topic on the broker's default (this project's local
        # broker keeps 24 h) would look unknown.
        res = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs=[name])], config_filter="all"
        )
    finally:
        admin.close()
    try:
        value = res["topic"][topic][name]["value"]
    except (KeyError, TypeError):
        return None
    return None if value is None else str(value)


def topic_refused(
    bootstrap: str, topic: str, timeout_ms: int = 10_000, config: Mapping[str, Any] | None = None
) -> bool:
    """True if the broker refuses to describe ``topic`` to this client
    (TOPIC_AUTHORIZATION_FAILED, asked by name)."""
    from kafka.errors import TopicAuthorizationFailedError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **_security(config)
    )
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    return any(t.get("error_code") == TopicAuthorizationFailedError.errno for t in described)


def delete_topics(
    bootstrap: str,
    names: list[str],
    timeout_ms: int = 15_000,
    wait_s: float | None = None,
    config: Mapping[str, Any] | None = None,
) -> None:
    def step(admin: KafkaAdminClient) -> None:
        existing = set(admin.list_topics())
        gone = [n for n in names if n in existing]
        if gone:
            admin.delete_topics(gone, timeout_ms=timeout_ms)

    with_admin(bootstrap, "delete topics", step, wait_s, timeout_ms, config)


def delete_group(
    bootstrap: str,
    group: str,
    timeout_ms: int = 15_000,
    wait_s: float | None = None,
    config: Mapping[str, Any] | None = None,
) -> bool:
    """Delete a consumer group and its committed offsets; False if there was none.
    (The demo's reset uses it so that nothing of an earlier run is left, the
    group's committed offsets included.) On a broker whose data directory is
    brand new this waits until its group coordinator is up (see the module's
    docstring); the group then does not exist and the answer is False."""

    def step(admin: KafkaAdminClient) -> str:
        result = str(admin.delete_groups([group]).get(group))
        if result in COORDINATOR_NOT_READY:
            raise _NotReadyAnswer(result)
        return result

    result = with_admin(
        bootstrap, f"delete consumer group {group!r}", step, wait_s, timeout_ms, config
    )
    if result == "GroupIdNotFoundError":
        return False
    if result != "OK":
        raise RuntimeError(
            f"could not delete consumer group {group!r}: {result} (is a consumer still running?)"
        )
    return True


def _security(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The given client security settings, or the environment's (HPMF_KAFKA_SECURITY_PROTOCOL, ...)."""
    from streamer.service.connections import kafka_security

    return dict(config) if config is not None else kafka_security()


def service_topic_specs(s: Any) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    """The topics the service uses (events, dead letters, the learner's
    checkpoints) with their partitions and the configs they are created with
    (``s`` a StreamSettings): the events topic keeps ``events_retention_ms``
    (by default the user TTL plus a day: a rebuild after Redis loses its data
    replays that), the dead-letter topic ``topic_retention_ms`` if set (else
    the broker's default), the checkpoints topic is compacted."""
    from streamer.service.checkpoint_topic import TOPIC_CONFIGS

    topics = {s.topic: s.partitions, s.dead_letter_topic: s.partitions, s.checkpoints_topic_name: 1}
    configs = {
        s.topic: {"retention.ms": str(s.events_retention_ms)},
        s.dead_letter_topic: {"retention.ms": str(s.topic_retention_ms)}
        if s.topic_retention_ms
        else {},
        s.checkpoints_topic_name: dict(TOPIC_CONFIGS),
    }
    return topics, configs


def _wait_until_listed(admin: KafkaAdminClient, names: list[str], wait_s: float) -> None:
    """Wait (bounded) until the broker's metadata lists every topic in ``names``.

    CreateTopics is answered once the controller has the topics, before the
    broker's metadata cache has them; a describe_configs in that moment says
    the topic is unknown (the service reads the events topic's retention right
    after creating it). Past the wait it goes on: the caller's next request
    then reports the broker's own answer."""
    deadline = time.monotonic() + wait_s
    while not set(names) <= set(admin.list_topics()):
        if time.monotonic() > deadline:
            log.warning("created topics not listed yet", extra={"topics": names})
            return
        time.sleep(0.05)


def service_topics(s: Any, wait_s: float | None = None) -> list[str]:
    """Create the service's topics (:func:`service_topic_specs`) as the
    settings ``s`` (a StreamSettings) say: partitions, replication factor,
    retention and the client's security settings. Returns the names created."""
    from streamer.service.connections import kafka_security

    topics, configs = service_topic_specs(s)
    return ensure_topics(
        s.kafka_bootstrap,
        topics,
        replication=s.topic_replication_factor,
        config=kafka_security(s),
        wait_s=wait_s,
        configs=configs,
    )
