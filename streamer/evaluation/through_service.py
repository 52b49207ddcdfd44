"""Accuracy through the service: score each event of a stream against the
posterior the service served just before it, and compare with the harness.

``hpmf evaluate`` (:func:`model.evaluate.run_stream`) replays a file through
``OnlineHPMF`` in one process. This module asks the same question of the
running service, a worker fed through Kafka that keeps its users in Redis.
For each event, in stream order (:func:`score_through_service`):

1. **Read what is served**: the user's posterior and the current global record
   through the public reader (:class:`streamer.reader.lookup.Lookup`, the
   code other services use; its maths is :mod:`streamer.reader.lookup_math`), and
   keep the predictive mean and std of this event's video on the model scale.
2. **Produce** the event to the topic, keyed by user, and wait for the ack.
3. **Wait until the worker applied it**: the user's record names the event's
   (partition, offset) (``p``/``o``, docs/redis_format.md).

So every event is predicted before it is learned and learned before the next
one is read: prequential at minibatch 1, the accuracy definition (issue 12).

Where the service cannot serve what the harness scores (``status``):

* ``no_globals``: no global record is published yet (the very first event);
* ``unknown_video``: the served global record does not hold the video (its
  first event, or one seen only since the last publish). The harness predicts
  such a video from its pooled prior; the record carries no video prior, so
  the reader answers NaN (docs/lookup.md).

:func:`compare` scores both on the events the service served, and reports the
harness on every event as well (what ``hpmf evaluate`` prints).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import redis

from model.config import HPMFConfig
from model.evaluate import StreamResult, earlier_events, ladder_config
from streamer.event import encode_event
from streamer.files.events_file import Events
from streamer.reader.lookup import Lookup, NoGlobalsError
from streamer.reader.redis_record import global_current_key, read_applied_offset, user_key
from streamer.service.settings import StreamSettings

Z90 = 1.6449  # as model.evaluate: mean +- Z90 * std is a central 90% interval

SERVICE_SETTINGS: dict[str, Any] = {
    "batch_max_events": 1,
    "max_minutes": 1e6,
    "max_videos": 0,
}
"""Worker settings for a through-service run, and why:

* ``batch_max_events`` 1: minibatch 1. (The scorer waits for each event, so a
  batch never holds more; with the default a lone event would wait for the
  batch's age, 50 ms, before it is processed.)
* ``max_minutes`` 1e6: the harness's ``max_value``. The simulator's
  log-normal tail passes the service's default plausibility cap (24 h) on
  59 of churn60's 143k events; the worker would dead-letter them, the
  harness learn them.
* ``max_videos`` 0: the harness has no catalogue cap (the simulated
  catalogue is far below the default cap of 20,000 anyway).

Everything else (transform log1p, 10 factors, priors, replay, SVI, the
learner's publish cadence, its replay sweeps in a background thread) is the
service's default."""

LOCKSTEP_SETTINGS: dict[str, Any] = {
    "publish_every_batches": 1,
    "replay_background": False,
}
"""Added for a lockstep run: the learner publishes after every batch (the
scorer then waits for each version), and folds each replay sweep in the
moment it is due, as the harness does, instead of when its background
thread is done. What is left between the service and the harness is then
float32 storage in Redis."""

ASYNC_FIELDS = ("replay_background",)
"""HPMFConfig fields that say *when* the learner's work lands, not what the
model is; the deployed service and the harness differ in them on purpose."""

STATUSES = ("ok", "no_globals", "unknown_video")


@dataclass(frozen=True)
class ServedStream:
    """Per event, what the service served just before it (model scale)."""

    mean: np.ndarray  # (N,) predictive mean; NaN where not served
    std: np.ndarray  # (N,) predictive std (noise included); NaN where not served
    status: np.ndarray  # (N,) one of STATUSES
    n_events: np.ndarray  # (N,) events in the served user posterior (0: the pooled prior; -1: none)
    model_version: np.ndarray  # (N,) global version served (-1: none)
    user_version: (
        np.ndarray
    )  # (N,) global version the user's record was computed against (-1: prior/none)
    seconds: float  # wall time of the whole run

    def __len__(self) -> int:
        return len(self.mean)


def config_mismatch(
    settings: StreamSettings, transform: str, global_mean_prior: float = 0.0
) -> list[str]:
    """The HPMFConfig fields in which the worker's model (from ``settings``)
    differs from ``hpmf evaluate --models hpmf --transform T
    --global-mean-prior B0``'s, sorted; empty when they are the same model,
    learned on the same schedule.

    >>> config_mismatch(StreamSettings(**SERVICE_SETTINGS, **LOCKSTEP_SETTINGS), "log1p")
    []
    >>> config_mismatch(StreamSettings(**SERVICE_SETTINGS), "log1p")
    ['replay_background']
    >>> config_mismatch(StreamSettings(), "log1p")
    ['max_value', 'max_videos', 'replay_background']
    """
    service = HPMFConfig(**settings.model_config_dict())
    harness = ladder_config("hpmf", transform=transform, global_mean_prior=global_mean_prior)
    return sorted(
        f.name for f in fields(HPMFConfig) if getattr(service, f.name) != getattr(harness, f.name)
    )


def wait_applied(
    client: redis.Redis,
    key: str,
    partition: int,
    offset: int,
    timeout_s: float,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until the user record at ``key`` names (partition, offset) or a
    later offset of that partition. ``alive`` (e.g. the worker process is
    running) is checked while waiting; TimeoutError if it never comes."""
    end = time.monotonic() + timeout_s
    pause = 0.0005
    while True:
        applied = read_applied_offset(client, key)
        if applied is not None and applied[0] == partition and applied[1] >= offset:
            return
        if time.monotonic() > end:
            raise TimeoutError(
                f"{key}: offset {partition}:{offset} not applied in {timeout_s} s "
                f"(record has {applied!r})"
            )
        if alive is not None and not alive():
            raise RuntimeError(f"the worker stopped before {key} got offset {partition}:{offset}")
        # Short at first (the worker usually answers in a few ms), then backing
        # off: polling must not take the worker's CPU on a busy machine.
        time.sleep(pause)
        pause = min(pause * 1.5, 0.005)


def wait_published(
    client: redis.Redis,
    prefix: str,
    version: int,
    timeout_s: float,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until ``{prefix}:g:current`` names ``version`` or a later one."""
    end = time.monotonic() + timeout_s
    pause = 0.0005
    while True:
        raw = client.get(global_current_key(prefix))
        if raw is not None and int(raw) >= version:
            return
        if time.monotonic() > end:
            raise TimeoutError(
                f"global version {version} not published in {timeout_s} s (current: {raw!r})"
            )
        if alive is not None and not alive():
            raise RuntimeError(f"the worker stopped before publishing global version {version}")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.005)


def score_through_service(
    events: Events,
    *,
    bootstrap: str,
    topic: str,
    client: redis.Redis,
    prefix: str,
    source: str = "stream",
    kafka_config: Mapping[str, Any] | None = None,
    first_timeout_s: float = 180.0,
    timeout_s: float = 60.0,
    alive: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
    lockstep: bool = False,
) -> ServedStream:
    """Score ``events`` (in order) against a running worker that consumes
    ``topic`` and writes users under ``prefix`` (see the module docstring).

    Event ids are ``<source>:<row>``, the scheme of ``hpmf replay``.
    ``first_timeout_s`` covers the worker's start (joining the group, torch's
    warm-up); each later event gets ``timeout_s``.

    ``lockstep``: before reading for event i, also wait until the published
    global version is at least i (the learner's version counts the batches
    it applied, one per event here), i.e. the globals that learned every
    earlier event. With a worker that publishes after every batch
    (``publish_every_batches`` 1) this takes the learner's publish lag out,
    leaving what differs between the service and the harness apart from it.
    """
    from kafka import KafkaProducer

    from streamer.service.connections import kafka_security

    n = len(events)
    mean = np.full(n, np.nan)
    std = np.full(n, np.nan)
    status = np.empty(n, dtype=object)
    n_ev = np.full(n, -1, dtype=np.int64)
    mver = np.full(n, -1, dtype=np.int64)
    uver = np.full(n, -1, dtype=np.int64)
    # refresh_interval_ms=0: the reader checks g:current on every call (in the
    # same round trip as the user), so it serves the newest published globals.
    lookup = Lookup(client, prefix, refresh_interval_ms=0)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=0,
        **(dict(kafka_config) if kafka_config is not None else kafka_security()),
    )
    users, videos, values = (
        events.user_ids.tolist(),
        events.video_ids.tolist(),
        events.values.tolist(),
    )
    t0 = time.monotonic()
    try:
        for i in range(n):
            uid, vid = str(users[i]), str(videos[i])
            if lockstep and i > 0:
                wait_published(client, prefix, i, timeout_s, alive)
            try:
                pred = lookup.predict(uid, [vid])
            except NoGlobalsError:
                status[i] = "no_globals"
            else:
                post = pred.posterior
                n_ev[i] = post.n_events
                mver[i] = post.model_version
                uver[i] = -1 if post.user_version is None else post.user_version
                if bool(pred.known[0]):
                    status[i] = "ok"
                    mean[i], std[i] = float(pred.model_mean[0]), float(pred.model_std[0])
                else:
                    status[i] = "unknown_video"
            value = encode_event(
                f"{source}:{i}", uid, vid, float(values[i]), int(time.time() * 1000)
            )
            md = producer.send(topic, key=uid.encode(), value=value).get(timeout=30)
            wait_applied(
                client,
                user_key(prefix, uid),
                md.partition,
                md.offset,
                first_timeout_s if i == 0 else timeout_s,
                alive,
            )
            if progress is not None:
                progress(1)
    finally:
        producer.close(timeout=10)
    return ServedStream(mean, std, status, n_ev, mver, uver, time.monotonic() - t0)


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(err)))) if err.size else math.nan


def _rmse_se(err: np.ndarray) -> float:
    """Standard error of an RMSE over these events, as sampling noise: the
    MSE's is sd(e^2)/sqrt(n); the square root's, by the delta method, that
    over 2 RMSE. What a different draw of as many events would move it by."""
    if err.size < 2:
        return math.nan
    sq = np.square(err)
    return float(np.std(sq, ddof=1) / math.sqrt(sq.size) / (2.0 * math.sqrt(np.mean(sq))))


def _rmse_diff_se(err_a: np.ndarray, err_b: np.ndarray) -> float:
    """Standard error of RMSE(a) - RMSE(b) on the same events (paired: the
    per-event difference of squared errors), by the delta method."""
    if err_a.size < 2:
        return math.nan
    d = np.square(err_a) - np.square(err_b)
    rmse = math.sqrt(0.5 * (np.mean(np.square(err_a)) + np.mean(np.square(err_b))))
    return float(np.std(d, ddof=1) / math.sqrt(d.size) / (2.0 * rmse))


def compare(served: ServedStream, harness: StreamResult, user_ids: Any) -> dict[str, float]:
    """Through-service figures against the harness's run on the same events
    (prequential, minibatch 1, every event scored: ``harness.index`` must be
    0..N-1).

    ``sim_rmse``/``coverage90``: the service on the events it served;
    ``harness_*_same_events``: the harness on exactly those events;
    ``harness_sim_rmse``: the harness on every event (``hpmf evaluate``'s
    figure); ``rmse_se``: the sampling noise of that RMSE (its standard
    error over these events), ``rmse_diff_se`` the paired standard error of
    ``rmse_diff``; ``history_mismatches``: served events whose user posterior did
    not hold exactly the user's earlier events (0 when each event is scored
    against the posterior just before it).

    >>> h = StreamResult(np.arange(3), np.array([1.0, 2, 3]), np.array([1.0, 2, 2]), np.ones(3),
    ...                  np.array([0, 1, 0]), 3, 1.0)
    >>> s = ServedStream(np.array([np.nan, 2.5, 2]), np.array([np.nan, 1, 1]),
    ...                  np.array(["no_globals", "ok", "ok"], dtype=object), np.array([-1, 1, 0]),
    ...                  np.array([-1, 1, 1]), np.array([-1, 1, -1]), 2.0)
    >>> c = compare(s, h, ["a", "a", "b"])
    >>> c["n_scored"], c["sim_rmse"], c["harness_sim_rmse_same_events"], c["history_mismatches"]
    (2.0, 0.7905694150420949, 0.7071067811865476, 0.0)
    """
    n = len(served)
    if len(harness) != n or not np.array_equal(harness.index, np.arange(n)):
        raise ValueError("the harness run must score the same events, every one (prequential)")
    ok = served.status == "ok"
    y = harness.target
    err_s = (y - served.mean)[ok]
    err_h = (y - harness.mean)[ok]
    diff = np.abs(served.mean - harness.mean)[ok]
    earlier = earlier_events([str(u) for u in user_ids])
    served_any = served.n_events >= 0
    lag = (np.arange(n) - served.model_version)[served_any]
    return {
        "n_events": float(n),
        "n_scored": float(ok.sum()),
        "n_no_globals": float((served.status == "no_globals").sum()),
        "n_unknown_video": float((served.status == "unknown_video").sum()),
        "sim_rmse": _rmse(err_s),
        "harness_sim_rmse_same_events": _rmse(err_h),
        "harness_sim_rmse": _rmse(y - harness.mean),
        "rmse_diff": _rmse(err_s) - _rmse(err_h),
        "rmse_se": _rmse_se(err_h),
        "rmse_diff_se": _rmse_diff_se(err_s, err_h),
        "coverage90": float(np.mean(np.abs(err_s) <= Z90 * served.std[ok]))
        if ok.any()
        else math.nan,
        "harness_coverage90_same_events": float(np.mean(np.abs(err_h) <= Z90 * harness.std[ok]))
        if ok.any()
        else math.nan,
        "mean_abs_diff": float(diff.mean()) if diff.size else math.nan,
        "max_abs_diff": float(diff.max()) if diff.size else math.nan,
        "history_mismatches": float((served.n_events != earlier)[served_any].sum()),
        # The learner's version counts the batches it applied: event i's local
        # step ran on version i, so i - (version served) is how many events the
        # served globals lagged behind the ones the harness predicts with.
        "globals_lag_mean": float(np.mean(lag)) if lag.size else math.nan,
        "globals_lag_max": float(np.max(lag)) if lag.size else math.nan,
        "events_per_s": n / served.seconds if served.seconds > 0 else math.nan,
    }
