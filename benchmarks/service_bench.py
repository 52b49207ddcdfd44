"""Accuracy through the service equals the harness (issue 12):
``python -m benchmarks.run service``.

The churn60 simulated stream (``hpmf simulate --preset churn60``) is written
to a file; its first ``HPMF_BENCH_SERVICE_EVENTS`` events (default 20,000, in
time order) are replayed one at a time through Kafka into a real worker
(``hpmf stream`` subprocess, the service's defaults except
:data:`streamer.evaluation.through_service.SERVICE_SETTINGS`), each scored against the
posterior the public reader served just before it
(:func:`streamer.evaluation.through_service.score_through_service`). The same events go
through the harness behind ``hpmf evaluate``, as

    hpmf evaluate FILE --limit N --transform log1p --batch-size 1 --models hpmf

does (the same model configuration: checked, :func:`config_mismatch`).

Figures (model scale, log1p minutes):

    service.sim_rmse                       the service, on the events it served
    service.harness_sim_rmse_same_events   the harness on those same events
    service.rmse_diff                      the two above, service minus harness
    service.harness_sim_rmse               the harness on every event (hpmf evaluate's figure)
    service.coverage90, service.harness_coverage90_same_events
    service.n_events, service.n_scored     replayed / served
    service.n_no_globals, service.n_unknown_video   not served, and why
    service.mean_abs_diff, service.max_abs_diff     |served mean - harness mean| per event
    service.history_mismatches             served posteriors that did not hold exactly the
                                           user's earlier events (0 expected)
    service.globals_lag_mean/_max          events the served global record lagged behind
    service.events_per_s                   the scored replay's rate (one event in flight)

The worker runs the learner as deployed: it publishes every 20 batches or
1 s, and runs its replay sweeps (from 10,000 events on) in a background
thread, folded in when done; the harness folds each the moment it is due.

A second run, **lockstep** (``HPMF_BENCH_SERVICE_LOCKSTEP_EVENTS``, default
12,000, so that the learner's first replay sweeps are inside; 0 skips it):
the worker publishes its globals after every batch, folds each sweep in when
due (:data:`streamer.evaluation.through_service.LOCKSTEP_SETTINGS`), and the scorer
waits for each version before it reads, which takes both asynchronies out. Its figures are ``service.lockstep_*`` (the same names); what is left
is float32 storage, so ``service.lockstep_max_abs_diff`` is ~1e-7.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import torch

from benchmarks.env import BOOTSTRAP, PY, REDIS_URL, ROOT
from model.evaluate import ladder_config, run_stream, warm_up
from model.online import OnlineHPMF
from model.simulate import PRESETS, SimConfig, simulate
from streamer.cli.stream import stream_argv
from streamer.evaluation.through_service import (
    ASYNC_FIELDS,
    LOCKSTEP_SETTINGS,
    SERVICE_SETTINGS,
    compare,
    config_mismatch,
    score_through_service,
)
from streamer.files.events_file import read_events_head, write_events
from streamer.service.connections import redis_client
from streamer.service.kafka_admin import delete_topics, ensure_topics
from streamer.service.settings import StreamSettings

EVENTS = int(os.environ.get("HPMF_BENCH_SERVICE_EVENTS", "20000"))
LOCKSTEP_EVENTS = int(os.environ.get("HPMF_BENCH_SERVICE_LOCKSTEP_EVENTS", "12000"))
TRANSFORM = "log1p"  # the service's default; the simulator draws log1p(minutes)


def worker_settings(lockstep: bool = False) -> dict[str, object]:
    """:data:`SERVICE_SETTINGS`, and for lockstep :data:`LOCKSTEP_SETTINGS` too."""
    return {**SERVICE_SETTINGS, **(LOCKSTEP_SETTINGS if lockstep else {})}


def start_worker(
    topic: str, prefix: str, log: Path, bootstrap: str, redis_url: str, lockstep: bool = False
) -> subprocess.Popen[bytes]:
    cmd = stream_argv(
        PY,
        {
            "kafka_bootstrap": bootstrap,
            "redis_url": redis_url,
            "topic": topic,
            "group_id": f"g-{topic}",
            "redis_prefix": prefix,
            "metrics_port": 0,
            "log_level": "WARNING",
            **worker_settings(lockstep),
        },
    )
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=fh)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the worker finishes its batch), then SIGKILL; by PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _cleanup(bootstrap: str, redis_url: str, topic: str, prefix: str) -> None:
    client = redis_client(url=redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()
    try:
        delete_topics(bootstrap, [topic, f"{topic}.dlq", f"{topic}.forget", f"{topic}.checkpoints"])
    except Exception as exc:  # a left-over topic is harmless; say so and go on
        print(f"   (could not delete topics of {topic}: {exc!r})", file=sys.stderr)


def through_service(
    path: Path,
    limit: int | None,
    workdir: Path,
    *,
    bootstrap: str = BOOTSTRAP,
    redis_url: str = REDIS_URL,
    progress: bool = True,
    lockstep: bool = False,
) -> dict[str, float]:
    """The first ``limit`` events of ``path`` through a fresh worker and through
    the harness; :func:`streamer.evaluation.through_service.compare`'s figures."""
    mismatch = config_mismatch(StreamSettings(**worker_settings(lockstep)), TRANSFORM)
    # As deployed, the learner may differ in when its work lands (ASYNC_FIELDS); in what it learns, never.
    allowed = () if lockstep else ASYNC_FIELDS
    if any(f not in allowed for f in mismatch):  # then the two would not be the same model
        raise RuntimeError(f"the worker's model differs from hpmf evaluate's in {mismatch}")
    events = read_events_head(path, limit)
    tag = uuid.uuid4().hex[:10]
    topic, prefix = f"through-{tag}", f"through-{tag}"
    ensure_topics(bootstrap, {topic: 4, f"{topic}.dlq": 4})
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"worker-{tag}.log"
    client = redis_client(url=redis_url)
    proc = start_worker(topic, prefix, log, bootstrap, redis_url, lockstep)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(events),
            desc="through the service",
            unit="ev",
            file=sys.stderr,
            mininterval=5.0,
        )
    try:
        served = score_through_service(
            events,
            bootstrap=bootstrap,
            topic=topic,
            client=client,
            prefix=prefix,
            source=path.name,
            alive=lambda: proc.poll() is None,
            progress=None if bar is None else bar.update,
            lockstep=lockstep,
        )
    except (TimeoutError, RuntimeError) as exc:
        raise RuntimeError(
            f"{exc}; worker log tail:\n{log.read_text(errors='replace')[-3000:]}"
        ) from exc
    finally:
        if bar is not None:
            bar.close()
        stop(proc)
        client.close()
        _cleanup(bootstrap, redis_url, topic, prefix)
    # The harness, as hpmf evaluate runs it (streamer/cli/evaluate.py).
    torch.set_num_threads(1)
    warm_up()
    model = OnlineHPMF(ladder_config("hpmf", transform=TRANSFORM))
    harness = run_stream(
        model, events.user_ids.tolist(), events.video_ids.tolist(), events.values, batch_size=1
    )
    return compare(served, harness, events.user_ids)


def run() -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    workdir = ROOT / ".run" / f"service-bench-{tag}"
    workdir.mkdir(parents=True, exist_ok=True)
    sim = simulate(SimConfig(**PRESETS["churn60"]))  # type: ignore[arg-type]
    path = workdir / "churn60.tsv"
    write_events(path, sim.user_ids, sim.video_ids, sim.values, sim.timestamps)
    t0 = time.monotonic()
    figures = through_service(path, EVENTS, workdir)
    out = {f"service.{k}": v for k, v in figures.items()}
    out["service.seconds"] = time.monotonic() - t0
    # The machine is shared: say how busy it was (1-min load average).
    out["service.loadavg_1m"] = float(Path("/proc/loadavg").read_text().split()[0])
    if LOCKSTEP_EVENTS > 0:
        t0 = time.monotonic()
        lock = through_service(path, LOCKSTEP_EVENTS, workdir, lockstep=True)
        out.update({f"service.lockstep_{k}": v for k, v in lock.items()})
        out["service.lockstep_seconds"] = time.monotonic() - t0
        print(
            f"   lockstep ({LOCKSTEP_EVENTS} events): rmse diff {lock['rmse_diff']:+.2e}, "
            f"max |served - harness| {lock['max_abs_diff']:.2e}",
            flush=True,
        )
    print(
        f"   through the service: rmse {out['service.sim_rmse']:.4f} on {out['service.n_scored']:.0f} events; "
        f"harness on the same events {out['service.harness_sim_rmse_same_events']:.4f} "
        f"(diff {out['service.rmse_diff']:+.5f}); harness on all {out['service.n_events']:.0f}: "
        f"{out['service.harness_sim_rmse']:.4f}",
        flush=True,
    )
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
