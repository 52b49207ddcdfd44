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
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from kafka.errors import KafkaError

T = TypeVar("T")

#: Exceptions that mean "a dependency is unreachable right now": retry.
TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    KafkaError,
    OSError,
)


class StreamError(RuntimeError):
    """A fault of the service itself (not of an event or a dependency)."""


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
    between attempts that fail with a transient error. Other errors propagate.
    Raises :class:`StopRequested` if shutdown is requested while waiting: the
    caller then must not treat the step as done."""
    delay = 0.05
    attempt = 0
    while True:
        try:
            return fn()
        except transient as exc:
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
