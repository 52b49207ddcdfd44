"""Evaluation harness: replay an event stream through :class:`OnlineHPMF` and score it.

Pure (arrays in, numbers out, no I/O); ``hpmf evaluate`` reads the file,
prints and plots. Every rung of the model ladder (:data:`LADDER`) runs through
the same ``OnlineHPMF.predict`` / ``OnlineHPMF.learn`` code the service runs,
with user states kept in a dict (a stand-in for Redis).

Protocols (events must be in timestamp order):

* **prequential** (test-then-train): each minibatch is first predicted with the
  users' stored states (a user not seen before gets ``None``, the pooled
  prior), then learned. Every event is scored exactly once, by a model that has
  not seen it.
* **holdout**: the first ``train_fraction`` of the stream is learned
  (minibatch by minibatch, as above but unscored); the rest is predicted, in
  minibatches, with no learning, from the states the training part left.

Metrics, on the transformed scale y = transform(value), from the predictive
mean m and standard deviation s of each scored event (see :func:`metrics`):

    rmse        sqrt(mean (y - m)^2)
    mae         mean |y - m|
    nll         mean [ log(s sqrt(2 pi)) + (y - m)^2 / (2 s^2) ]   (Gaussian predictive NLL, nats)
    coverage90  fraction of events with |y - m| <= 1.6449 s         (ideal: 0.90)
    rmse_new    rmse over events whose user had 0 earlier events
    rmse_lt5    rmse over events whose user had < 5 earlier events
    rmse_lt20   rmse over events whose user had < 20 earlier events
    events_per_s  events / wall seconds spent in predict + learn

"Earlier events" of a user: in prequential, that user's events earlier in the
stream (including earlier events of the same, not yet learned, minibatch); in
holdout, that user's events in the training part (the only ones learned).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.batch import Batch, event_columns
from model.config import HPMFConfig
from model.online import OnlineHPMF
from model.posterior import UserState
from model.transform import forward

PROTOCOLS = ("prequential", "holdout")

LADDER: dict[str, dict[str, Any]] = {
    "global_mean": {"n_factors": 0, "biases": False},
    "biases": {"n_factors": 0, "biases": True},
    "pmf": {"user_pooling": False, "video_pooling": False},
    "hpmf": {},
}
"""The model ladder: HPMFConfig overrides of each rung; anything not named keeps
HPMFConfig's default (so ``hpmf`` is exactly the defaults, and ``pmf`` is the
same model, same code, with both pooled priors switched off)."""

METRICS = ("rmse", "mae", "nll", "coverage90", "rmse_new", "rmse_lt5", "rmse_lt20", "events_per_s")
"""The metric names of the JSON report; other tools read them, keep them exact."""

Z90 = 1.6449  # the 95% quantile of N(0, 1): mean +- Z90 * std is a central 90% interval

HISTORY_BINS: tuple[tuple[int, int], ...] = (
    (0, 1),
    (1, 2),
    (2, 5),
    (5, 10),
    (10, 20),
    (20, 50),
    (50, 10**12),
)
"""Bins [lo, hi) of a user's earlier events, for :func:`by_history`."""


def ladder_config(
    name: str, transform: str = "identity", seed: int = 0, **overrides: Any
) -> HPMFConfig:
    """The HPMFConfig of ladder rung ``name``.

    >>> ladder_config("pmf").user_pooling, ladder_config("hpmf") == HPMFConfig()
    (False, True)
    >>> ladder_config("svd")
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'svd'; choose from: global_mean, biases, pmf, hpmf
    """
    if name not in LADDER:
        raise ValueError(f"unknown model {name!r}; choose from: {', '.join(LADDER)}")
    kw: dict[str, Any] = {**LADDER[name], "transform": transform, "seed": seed, **overrides}
    return HPMFConfig(**kw)


@dataclass(frozen=True)
class StreamResult:
    """Per scored event: position in the stream, target, predictive mean/std, and
    how many earlier events its user had; plus the processing time."""

    index: np.ndarray  # (M,) stream positions of the scored events
    target: np.ndarray  # (M,) transformed values y
    mean: np.ndarray  # (M,) predictive mean m
    std: np.ndarray  # (M,) predictive std s
    n_prior: np.ndarray  # (M,) the user's earlier events
    n_events: int  # events processed (learned and/or predicted)
    seconds: float  # wall time inside predict + learn

    def __len__(self) -> int:
        return len(self.target)


def _check_stream(
    user_ids: Sequence[str], video_ids: Sequence[str], values: np.ndarray, batch_size: int
) -> np.ndarray:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return event_columns(user_ids, video_ids, values, "stream")


def earlier_events(user_ids: Sequence[str]) -> np.ndarray:
    """For each event, how many events of the same user came before it.

    >>> earlier_events(["a", "b", "a", "a"]).tolist()
    [0, 0, 1, 2]
    """
    seen: dict[str, int] = {}
    out = np.empty(len(user_ids), dtype=np.int64)
    for k, u in enumerate(user_ids):
        c = seen.get(u, 0)
        out[k] = c
        seen[u] = c + 1
    return out


def run_stream(
    model: OnlineHPMF,
    user_ids: Sequence[str],
    video_ids: Sequence[str],
    values: np.ndarray,
    batch_size: int = 256,
    protocol: str = "prequential",
    train_fraction: float = 0.8,
    states: dict[str, UserState] | None = None,
    progress: Callable[[int], None] | None = None,
) -> StreamResult:
    """Replay the stream through ``model`` under ``protocol`` (see module docstring).

    ``states`` (user id -> UserState) is updated in place if given. ``progress``
    is called with the number of events just processed, after each minibatch.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    vals = _check_stream(user_ids, video_ids, values, batch_size)
    users = [str(u) for u in user_ids]
    videos = [str(v) for v in video_ids]
    n = len(vals)
    target = forward(model.config.transform, vals)
    states = {} if states is None else states
    if protocol == "prequential":
        n_train, scored_from = n, 0
        n_prior = earlier_events(users)
    else:
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        n_train = scored_from = int(round(train_fraction * n))
        counts: dict[str, int] = {}
        for u in users[:n_train]:
            counts[u] = counts.get(u, 0) + 1
        n_prior = np.array([counts.get(u, 0) for u in users], dtype=np.int64)
    means = np.empty(n - scored_from)
    stds = np.empty(n - scored_from)
    seconds = 0.0
    start = 0
    while start < n:
        stop = min(start + batch_size, n)
        if start < n_train < stop:
            stop = n_train  # (holdout) a minibatch never straddles the split
        bu, bv = users[start:stop], videos[start:stop]
        t0 = time.perf_counter()
        served = None
        if stop > scored_from:
            lo = max(start, scored_from)
            m, s = model.predict([states.get(u) for u in bu[lo - start :]], bv[lo - start :])
            means[lo - scored_from : stop - scored_from] = m
            stds[lo - scored_from : stop - scored_from] = s
            served = (m, s) if lo == start else None
        if start < n_train:
            # What was just predicted is what was served: learn reuses it for
            # the noise calibration instead of predicting the batch again.
            states.update(model.learn(Batch.of(bu, bv, vals[start:stop]), states, served))
        seconds += time.perf_counter() - t0
        if progress is not None:
            progress(stop - start)
        start = stop
    return StreamResult(
        index=np.arange(scored_from, n),
        target=target[scored_from:],
        mean=means,
        std=stds,
        n_prior=n_prior[scored_from:],
        n_events=n,
        seconds=seconds,
    )


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(err)))) if err.size else math.nan


def metrics(res: StreamResult) -> dict[str, float]:
    """The :data:`METRICS` of a run (NaN for a slice with no events).

    >>> r = StreamResult(np.arange(4), np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3, 6]),
    ...                  np.ones(4), np.array([0, 0, 7, 30]), 4, 2.0)
    >>> m = metrics(r)
    >>> m["rmse"], m["mae"], m["coverage90"], m["rmse_new"], m["rmse_lt20"], m["events_per_s"]
    (1.0, 0.5, 0.75, 0.0, 0.0, 2.0)
    """
    err = res.target - res.mean
    var = np.square(res.std)
    nll = 0.5 * np.log(2.0 * math.pi * var) + np.square(err) / (2.0 * var)
    return {
        "rmse": _rmse(err),
        "mae": float(np.mean(np.abs(err))) if err.size else math.nan,
        "nll": float(np.mean(nll)) if err.size else math.nan,
        "coverage90": float(np.mean(np.abs(err) <= Z90 * res.std)) if err.size else math.nan,
        "rmse_new": _rmse(err[res.n_prior == 0]),
        "rmse_lt5": _rmse(err[res.n_prior < 5]),
        "rmse_lt20": _rmse(err[res.n_prior < 20]),
        "events_per_s": res.n_events / res.seconds if res.seconds > 0 else math.nan,
    }


def by_history(
    res: StreamResult, bins: Sequence[tuple[int, int]] = HISTORY_BINS
) -> list[dict[str, float]]:
    """Error and predictive spread by how many earlier events the user had.

    Per bin [lo, hi): ``n`` events, ``rmse``, and ``spread`` = sqrt(mean s^2),
    the root-mean predictive variance (for a calibrated model, spread ~ rmse).
    """
    out = []
    for lo, hi in bins:
        sel = (res.n_prior >= lo) & (res.n_prior < hi)
        err = (res.target - res.mean)[sel]
        out.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "n": float(sel.sum()),
                "rmse": _rmse(err),
                "spread": float(np.sqrt(np.mean(np.square(res.std[sel]))))
                if sel.any()
                else math.nan,
            }
        )
    return out


def rolling_rmse(res: StreamResult, window: int) -> tuple[np.ndarray, np.ndarray]:
    """RMSE over a sliding window of ``window`` scored events.

    Returns (stream position of each window's last event, rmse).

    >>> r = StreamResult(np.arange(4), np.zeros(4), np.array([1.0, 1, 3, 3]), np.ones(4),
    ...                  np.zeros(4, int), 4, 1.0)
    >>> rolling_rmse(r, 2)[1].tolist()
    [1.0, 2.23606797749979, 3.0]
    """
    sq = np.square(res.target - res.mean)
    if window < 1 or len(sq) < window:
        return np.empty(0, dtype=np.int64), np.empty(0)
    c = np.concatenate([[0.0], np.cumsum(sq)])
    return res.index[window - 1 :], np.sqrt((c[window:] - c[:-window]) / window)


def warm_up() -> None:
    """One tiny learn + predict on a throwaway model, so one-off costs (torch's lazy
    imports on the first optimizer, ~2 s) are not charged to the first timed model."""
    m = OnlineHPMF(HPMFConfig(n_factors=1, svi_min_events=1))
    states = m.learn(Batch.of(["u", "w"], ["a", "b"], [1.0, 2.0]), {})
    m.predict([states["u"]], ["b"])


def evaluate(
    user_ids: Sequence[str],
    video_ids: Sequence[str],
    values: np.ndarray,
    models: Sequence[str] = tuple(LADDER),
    protocol: str = "prequential",
    batch_size: int = 256,
    transform: str = "identity",
    seed: int = 0,
    progress: Callable[[str, int], None] | None = None,
    **overrides: Any,
) -> dict[str, StreamResult]:
    """Run each named ladder rung on the same stream, each with a fresh model
    and a fresh state store. ``progress(model_name, n_events_done)``;
    ``overrides`` are HPMFConfig settings given to every rung."""
    out: dict[str, StreamResult] = {}
    for name in models:
        model = OnlineHPMF(ladder_config(name, transform=transform, seed=seed, **overrides))
        cb = None if progress is None else (lambda k, _n=name: progress(_n, k))
        out[name] = run_stream(
            model,
            user_ids,
            video_ids,
            values,
            batch_size=batch_size,
            protocol=protocol,
            progress=cb,
        )
    return out


def report(
    results: dict[str, dict[str, float]], protocol: str, batch_size: int, n_events: int
) -> dict[str, Any]:
    """The JSON report: ``{"protocol", "batch_size", "n_events", "models": {name: METRICS}}``,
    NaN written as None (JSON null)."""

    def clean(x: float) -> float | None:
        return None if x is None or not math.isfinite(x) else float(x)

    return {
        "protocol": protocol,
        "batch_size": int(batch_size),
        "n_events": int(n_events),
        "models": {
            name: {k: clean(m.get(k, math.nan)) for k in METRICS} for name, m in results.items()
        },
    }
