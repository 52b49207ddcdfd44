"""One prequential run of one rung with HPMFConfig overrides, for trying settings.

    python -m benchmarks.model_runs movielens hpmf prior_scale=0.42 [batch_size=1]
    python -m benchmarks.model_runs churn60 oracle
    python -m benchmarks.model_runs churn60 hpmf events=30000   # the first 30,000 events

``movielens``: MovieLens 100K (``make data``), b0's prior mean 3, identity
transform; ``churn60``: ``hpmf simulate --preset churn60``, log1p. Prints the
metrics of :func:`model.evaluate.metrics`, the error and predictive spread by
the user's earlier events, and the learned noise sd. The figures in
docs/evaluation.md's taste sections come from these runs.
"""

from __future__ import annotations

import argparse
import ast
import time

import numpy as np
import torch

from model.evaluate import by_history, ladder_config, metrics, run_stream, warm_up
from model.online import OnlineHPMF
from model.oracle import oracle_stream
from model.simulate import PRESETS, SimConfig, simulate
from model.taste_diagnostics import subspace_cosines, taste_share


def _override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if not key or not _:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("stream", choices=("movielens", "churn60"))
    p.add_argument("rung", help="global_mean, biases, pmf, hpmf, or oracle (churn60 only)")
    p.add_argument(
        "overrides",
        nargs="*",
        type=_override,
        help="HPMFConfig field=value; batch_size=N; events=N (the first N events only)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    kw = dict(args.overrides)
    batch_size = int(kw.pop("batch_size", 1))  # type: ignore[call-overload]
    limit = kw.pop("events", None)
    if args.stream == "movielens":
        from benchmarks.movielens import movielens_100k
        from streamer.files.events_file import read_events

        ev = read_events(movielens_100k())
        users, videos, values, truth = ev.user_ids.tolist(), ev.video_ids.tolist(), ev.values, None
        cfg = dict(global_mean_prior=3.0)
    else:
        sim = simulate(SimConfig(**PRESETS["churn60"]))  # type: ignore[arg-type]
        users, videos, values, truth = (
            sim.user_ids.tolist(),
            sim.video_ids.tolist(),
            sim.values,
            sim.truth,
        )
        cfg = dict(transform="log1p")
    if limit is not None:
        n = int(limit)  # type: ignore[call-overload]
        users, videos, values = users[:n], videos[:n], values[:n]
    warm_up()
    t0 = time.perf_counter()
    if args.rung == "oracle":
        if truth is None:
            p.error("the oracle needs the simulator's truth: use churn60")
        res, model = oracle_stream(users, videos, np.log1p(values), truth.to_arrays()), None
    else:
        model = OnlineHPMF(ladder_config(args.rung, **cfg, **kw))  # type: ignore[arg-type]
        res = run_stream(model, users, videos, values, batch_size=batch_size)
    out = {k: round(v, 4) for k, v in metrics(res).items()}
    print(
        f"{args.stream} {args.rung} minibatch {batch_size} events {len(values)} {kw}: {out} ({time.perf_counter() - t0:.0f} s)"
    )
    for row in by_history(res):
        print(
            f"  earlier events [{row['lo']:.0f}, {row['hi']:.0f}): n {row['n']:.0f}, rmse {row['rmse']:.4f}, "
            f"spread {row['spread']:.4f}"
        )
    if model is not None:
        print(
            f"  noise sd {model.sigma:.4f}, sweep noise factor {np.exp(model.sweep_log_noise):.3f}"
        )
    if model is not None and truth is not None and model.config.n_factors > 0:
        snap = model.export_globals()
        share = taste_share(snap.video_mean, snap.user_prior_mean, snap.user_prior_cov)
        known = [k for k, v in enumerate(truth.video_ids) if str(v) in model.video_index]
        rows = [model.video_index[str(truth.video_ids[k])] for k in known]
        cos = subspace_cosines(snap.video_mean[rows, :-1], truth.V[known])
        print(f"  taste share {share:.3f}, subspace cosines {np.round(cos, 2).tolist()}")


if __name__ == "__main__":
    main()
