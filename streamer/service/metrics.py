"""Metrics in the Prometheus text format (``prometheus-client``), and the
health endpoints.

Each :class:`StreamMetrics` has a registry of its own (tests and the demo run
several in one process). The loop updates counters, gauges and histograms
through the small wrappers below, which also keep each series' value for the
loop's own use (``get``: the shutdown summary, the readiness check).

Endpoints (``--metrics-port``):

* ``/metrics``  Prometheus text exposition. Durations are in seconds (the
  base unit), counts are plain numbers.
* ``/healthz``  live: 200 while the loop turns -- it completed an iteration,
  or is waiting for a dependency (Redis, Kafka) and checking for shutdown,
  within ``live_after_s``. An outage does not fail it: restarting the
  process would not bring the dependency back.
* ``/readyz``   ready: 200 once set up, while Redis answered last and the
  loop is live, and no partition is being rebuilt after Redis lost its data
  (the worker's ``extra_ready``, see streamer/service/rebuild.py). Assigned
  partitions are not required: a replica beyond the partition count is a
  spare, idle and ready (a rolling update must not wait on it forever).
"""

from __future__ import annotations

import os
import platform
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# No ``*_created`` series: the service's dashboards and alerts do not use them.
prometheus_client.disable_created_metrics()

#: A label value: one string, or a tuple of strings for several label names.
LabelValue = str | tuple[str, ...]


def _names(label: str | tuple[str, ...] | None) -> tuple[str, ...]:
    return () if label is None else (label,) if isinstance(label, str) else tuple(label)


class Counter:
    """A counter family (``label``: its label name or names), values kept for ``get``."""

    _kind: Callable[..., Any] = prometheus_client.Counter

    def __init__(
        self,
        name: str,
        help_text: str,
        label: str | tuple[str, ...] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.help, self.label = name, help_text, label
        self.values: dict[LabelValue, float] = {}
        self._metric = self._kind(name, help_text, _names(label), registry=registry)

    def _child(self, label: LabelValue) -> Any:
        if self.label is None:
            return self._metric
        return self._metric.labels(*((label,) if isinstance(label, str) else label))

    def inc(self, amount: float = 1.0, label: LabelValue = "") -> None:
        self.values[label] = self.values.get(label, 0.0) + amount
        self._child(label).inc(amount)

    def get(self, label: LabelValue = "") -> float:
        return self.values.get(label, 0.0)


class Gauge(Counter):
    _kind = prometheus_client.Gauge

    def set(self, value: float, label: LabelValue = "") -> None:
        self.values[label] = float(value)
        self._child(label).set(float(value))

    def replace(self, values: Mapping[LabelValue, float]) -> None:
        """Set the whole labelled family at once; labels not given disappear
        (a partition that was revoked stops being reported)."""
        self.values = {k: float(v) for k, v in values.items()}
        self._metric.clear()
        for k, v in self.values.items():
            self._child(k).set(v)


class Histogram:
    def __init__(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name, self.help = name, help_text
        self._metric = prometheus_client.Histogram(
            name, help_text, buckets=tuple(buckets), registry=registry
        )

    def observe(self, value: float) -> None:
        self._metric.observe(value)

    def observe_many(self, values: Sequence[float]) -> None:
        observe = self._metric.observe
        for v in values:
            observe(v)


#: Bucket bounds in seconds (1 ms to 60 s; the bounds the millisecond
#: histograms had, so figures before and after the change compare).
SECONDS_BUCKETS = tuple(
    ms / 1000
    for ms in (1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 120, 150, 200)
    + (250, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000, 60000)
)


def build_labels() -> tuple[str, str, str]:
    """(version, revision, python) for ``hpmf_stream_build_info``: the installed
    package's version, the source revision the image was built from
    (``HPMF_BUILD_REVISION``, set by the Dockerfile's build argument)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("hpmf-streamer")
    except PackageNotFoundError:
        ver = "unknown"
    return ver, os.environ.get("HPMF_BUILD_REVISION", "") or "unknown", platform.python_version()


PREFIX = "hpmf_stream_"
"""Every series this service exports is named ``hpmf_stream_*``."""


class StreamMetrics:
    """Everything the service exports; names are ``hpmf_stream_*``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = self._counter(
            "events_consumed_total", "Kafka records consumed (valid or not)."
        )
        self.invalid = self._counter(
            "invalid_events_total", "Events sent to the dead-letter topic.", "reason"
        )
        self.dead_letters_reduced = self._counter(
            "dead_letters_reduced_total",
            "Dead letters too large to produce whole, sent reduced (a prefix).",
        )
        self.quarantined = self._counter(
            "quarantined_stats_total",
            "Global statistics entries the learner could not apply or publish, dead-lettered.",
            "reason",
        )
        self.skipped = self._counter(
            "skipped_events_total",
            "Valid events not applied (replay: already applied; duplicate: event id seen; forgotten: produced before the user was forgotten).",
            "why",
        )
        self.applied = self._counter("applied_events_total", "Events folded into user posteriors.")
        self.batches = self._counter("batches_total", "Minibatches processed (non-empty).")
        self.users_written = self._counter("users_written_total", "User records written to Redis.")
        self.commit_failures = self._counter(
            "commit_failures_total", "Kafka offset commits that failed."
        )
        self.retries = self._counter(
            "dependency_retries_total", "Retried Redis/Kafka calls.", "what"
        )
        self.batch_latency = self._histogram(
            "batch_duration_seconds", "Poll-close to offsets-committed time of a batch."
        )
        self.freshness = self._histogram(
            "freshness_seconds",
            "Kafka record timestamp (produce time) to Redis write acknowledged, per applied event.",
        )
        self.lag = self._gauge(
            "consumer_lag",
            "Per assigned partition, high watermark minus position (records), refreshed every lag_refresh_s.",
            ("topic", "partition"),
        )
        self.lag_refreshed = self._gauge(
            "consumer_lag_refreshed_timestamp_seconds",
            "Unix time of the last refresh of consumer_lag.",
        )
        self.learner_backlog = self._gauge(
            "learner_backlog_entries",
            "Batches' global statistics written but not yet applied by the learner (reported by the learner; 0 elsewhere).",
        )
        self.learner_backlog_age = self._gauge(
            "learner_backlog_age_seconds",
            "Age of the oldest statistics entry the learner has not applied (0: none waiting; reported by the learner).",
        )
        self.global_version = self._gauge(
            "global_model_version", "Version of the globals this worker computes against."
        )
        self.learner = self._gauge("learner", "1 while this worker holds the learner lease.")
        self.assigned = self._gauge("assigned_partitions", "Partitions assigned to this worker.")
        self.redis_up = self._gauge(
            "redis_up", "1 while the last Redis call succeeded, 0 after a failure."
        )
        self.build_info = self._gauge(
            "build_info", "Always 1; the labels say what runs.", ("version", "revision", "python")
        )
        self.build_info.set(1, build_labels())
        self.rebuilding = self._gauge(
            "rebuilding",
            "Partitions being rebuilt from Kafka after Redis lost its data (not ready meanwhile).",
        )
        self.last_loop = time.time()
        self.started = False  # set-up done (connected, topics known, model warmed up)
        self.live_after_s = 30.0

    def _counter(
        self, name: str, help_text: str, label: str | tuple[str, ...] | None = None
    ) -> Counter:
        return Counter(PREFIX + name, help_text, label, self.registry)

    def _gauge(
        self, name: str, help_text: str, label: str | tuple[str, ...] | None = None
    ) -> Gauge:
        return Gauge(PREFIX + name, help_text, label, self.registry)

    def _histogram(self, name: str, help_text: str) -> Histogram:
        return Histogram(PREFIX + name, help_text, SECONDS_BUCKETS, self.registry)

    @property
    def redis_ok(self) -> bool:
        return self.redis_up.get() == 1

    @redis_ok.setter
    def redis_ok(self, ok: bool) -> None:
        self.redis_up.set(1 if ok else 0)

    def all(self) -> list[Counter | Histogram]:
        """Every metric family (the deploy tests check that alerts and
        dashboards query only these)."""
        return [v for v in vars(self).values() if isinstance(v, Counter | Histogram)]

    def render(self) -> str:
        return generate_latest(self.registry).decode()

    def tick(self) -> None:
        """The loop is alive: called every iteration, and every ~50 ms while
        a step waits for a dependency (streamer.service.errors.retry)."""
        self.last_loop = time.time()

    def live(self) -> bool:
        return time.time() - self.last_loop < self.live_after_s

    def ready(self) -> bool:
        return self.started and self.redis_ok and self.live()


def serve(
    metrics: StreamMetrics, host: str, port: int, extra_ready: Callable[[], bool] | None = None
) -> ThreadingHTTPServer:
    """Start the HTTP endpoint in a daemon thread; returns the server (``.shutdown()``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.startswith("/metrics"):
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                ok = metrics.live()
                self._send(200 if ok else 503, "live\n" if ok else "stalled\n")
            elif self.path.startswith("/readyz"):
                ok = metrics.ready() and (extra_ready() if extra_ready else True)
                self._send(200 if ok else 503, "ready\n" if ok else "not ready\n")
            else:
                self._send(404, "not found\n")

        def _send(self, code: int, body: str, ctype: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # scrapes are not news
            pass

    server_cls = _IPv6Server if ":" in host else ThreadingHTTPServer
    server = server_cls((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


class _IPv6Server(ThreadingHTTPServer):
    """For an IPv6 bind address ("::" listens on every address, IPv4 too where the system maps it)."""

    address_family = socket.AF_INET6


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket.

    ``cumulative`` has one count per bound plus the +Inf count last.

    >>> histogram_quantile(0.5, [10, 20], [0, 10, 10])
    15.0
    """
    total = cumulative[-1]
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_b, prev_c = 0.0, 0.0
    for b, c in zip(bounds, cumulative, strict=False):
        if c >= rank:
            return prev_b + (b - prev_b) * ((rank - prev_c) / max(c - prev_c, 1e-12))
        prev_b, prev_c = b, c
    return float(bounds[-1])


def parse_histogram(text: str, name: str) -> tuple[list[float], list[float]]:
    """Bounds and cumulative counts of histogram ``name`` from a /metrics page."""
    bounds: list[float] = []
    counts: list[float] = []
    inf = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            val = float(line.rsplit(" ", 1)[1])
            if le == "+Inf":
                inf = val
            else:
                bounds.append(float(le))
                counts.append(val)
    return bounds, counts + [inf]
