"""``hpmf evaluate``: score the model ladder on an events file.

    hpmf evaluate .data/ml-100k.inter --protocol prequential --batch-size 256 \\
        --json eval.json --plot docs/evaluation.png

Reads the file (:mod:`streamer.files.events_file`), replays it in timestamp order
through :class:`model.online.OnlineHPMF` for each rung of
:data:`model.evaluate.LADDER` (:func:`model.evaluate.run_stream`), prints a
table, and optionally writes the JSON report and a two-panel plot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

from model.evaluate import (
    LADDER,
    PROTOCOLS,
    StreamResult,
    by_history,
    ladder_config,
    metrics,
    report,
    rolling_rmse,
    run_stream,
    warm_up,
)
from model.online import OnlineHPMF
from model.oracle import oracle_stream
from model.transform import TRANSFORMS, forward
from streamer.cli import ranking as ranking_cli
from streamer.evaluation.ranking_eval import RANK_RUNGS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "protocols:\n"
        "  prequential  test-then-train: each minibatch is predicted with the users' stored\n"
        "               states (a new user gets the pooled prior), then learned\n"
        "  holdout      the first 80%% of events (by time) are learned, the last 20%% only\n"
        "               predicted, from the states the training part left\n"
        "  ranking      prequential ranking (default minibatch 1): at every K-th event after\n"
        "               the first N, rank every video seen so far that the user has not\n"
        "               watched, with the states from before the event; hit10, ndcg10, mrr,\n"
        "               catalogue_share over the rungs popularity, decayed_popularity,\n"
        "               cooccurrence, biases, pmf, hpmf (see docs/ranking.md)\n"
        "models (the ladder, all the same OnlineHPMF code with different HPMFConfig):\n"
        "  global_mean  n_factors=0, no biases: predicts b0 for everyone\n"
        "  biases       n_factors=0, user and video biases\n"
        "  pmf          the default model with both pooled priors switched off\n"
        "  hpmf         the default model (pooled, learned population priors)\n"
        "metrics (on the transformed scale): rmse, mae, nll (Gaussian predictive, nats per\n"
        "event), coverage90 (share within mean +- 1.6449 std), rmse_new / rmse_lt5 / rmse_lt20\n"
        "(events whose user had 0 / <5 / <20 earlier events), events_per_s (predict+learn)."
    )
    parser.add_argument(
        "events",
        type=Path,
        help="events file: CSV/TSV with user_id, video_id, "
        "value, timestamp (or MovieLens/recbole headers)",
    )
    parser.add_argument(
        "--protocol",
        choices=(*PROTOCOLS, "ranking"),
        default="prequential",
        help="evaluation protocol (default: prequential)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="B",
        help="events per minibatch of predict/learn (default: 256; ranking: 1)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"ladder rungs to run (default: all: {' '.join(LADDER)}; "
        f"ranking: {' '.join(RANK_RUNGS)})",
    )
    ranking_cli.add_arguments(parser)
    parser.add_argument(
        "--transform",
        choices=TRANSFORMS,
        default="identity",
        help="scale the Gaussian lives on: identity (ratings) or log1p "
        "(minutes watched); metrics are on this scale (default: identity)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="use only the first N events in time order (quick runs)",
    )
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=0.8,
        help="holdout only: share of events (by time) learned (default: 0.8)",
    )
    parser.add_argument("--seed", type=int, default=0, help="model seed (default: 0)")
    parser.add_argument(
        "--global-mean-prior",
        type=float,
        default=0.0,
        metavar="B0",
        help="prior mean of the global mean b0 on the transformed scale: what every "
        "rung predicts before it has learned anything, e.g. 3 (the midpoint) "
        "for 1-5 star ratings (default: 0)",
    )
    parser.add_argument(
        "--truth",
        type=Path,
        default=None,
        metavar="SIM.truth.npz",
        help="a simulated stream's truth (written by `hpmf simulate`): adds the "
        "'oracle' rung, which knows the true video factors, prior and noise and "
        "learns only the users; needs --transform log1p",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="OUT",
        help="write the report here: {protocol, batch_size, n_events, models: "
        "{name: {rmse, mae, nll, coverage90, rmse_new, rmse_lt5, rmse_lt20, "
        "events_per_s}}}",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="OUT.png",
        help="write a PNG: rolling RMSE over the stream, and RMSE / predictive "
        "spread by the user's number of earlier events",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default: 1; the model's tensors are small, "
        "and extra threads mostly add synchronisation, badly so on a busy CPU)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A fixed-width table of the metrics, one row per model."""
    cols = ["rmse", "mae", "nll", "coverage90", "rmse_new", "rmse_lt5", "rmse_lt20", "events_per_s"]
    head = f"{'model':<12}" + "".join(f"{c:>13}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, m in results.items():
        cells = []
        for c in cols:
            x = m.get(c, math.nan)
            if not math.isfinite(x):
                cells.append(f"{'-':>13}")
            elif c == "events_per_s":
                cells.append(f"{x:>13.0f}")
            else:
                cells.append(f"{x:>13.4f}")
        lines.append(f"{name:<12}" + "".join(cells))
    return "\n".join(lines)


def plot(results: dict[str, StreamResult], out: Path, title: str) -> None:
    """Two panels: rolling RMSE over the stream; RMSE and spread vs. user history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90)
    n = max(len(r) for r in results.values())
    window = max(200, n // 40)
    for k, (name, res) in enumerate(results.items()):
        color = f"C{k}"
        x, y = rolling_rmse(res, window)
        ax1.plot(x, y, color=color, lw=1.2, label=name)
        bins = by_history(res)
        xs = range(len(bins))
        ax2.plot(xs, [b["rmse"] for b in bins], "o-", color=color)
        ax2.plot(xs, [b["spread"] for b in bins], "s--", color=color, alpha=0.7, ms=4)
    ys = [
        np.asarray(line.get_ydata())[np.asarray(line.get_xdata()) >= 2 * window]
        for line in ax1.get_lines()
    ]
    ys = [y for y in ys if len(y)]
    if ys:  # the first minibatch (no globals yet) would squash the rest of the curve
        top = float(np.quantile(np.concatenate(ys), 0.995))
        ax1.set_ylim(top=top * 1.05)
    ax1.set_xlabel("events into the stream")
    ax1.set_ylabel(f"RMSE (rolling, {window} events)")
    ax1.set_title("Prediction error over the stream")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    any_res = next(iter(results.values()))
    labels = []
    for b in by_history(any_res):
        lo, hi = int(b["lo"]), int(b["hi"])
        labels.append(f"{lo}" if hi == lo + 1 else (f"{lo}+" if hi > 10**9 else f"{lo}-{hi - 1}"))
    ax2.set_xticks(range(len(labels)), labels)
    ax2.set_xlabel("the user's earlier events")
    ax2.set_ylabel("RMSE  /  predictive sd")
    ax2.set_title("Cold start: error and predictive spread")
    ax2.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    styles = [
        Line2D([], [], color="k", marker="o", label="RMSE"),
        Line2D(
            [],
            [],
            color="k",
            ls="--",
            marker="s",
            ms=4,
            alpha=0.7,
            label="sqrt(mean predictive var)",
        ),
    ]
    ax2.legend(handles=styles, fontsize=8, title="colours as left", title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from streamer.files.events_file import EventsFileError, read_events_head

    if args.protocol == "ranking":
        return ranking_cli.run(args)
    if args.batch_size is None:
        args.batch_size = 256
    if args.models is None:
        args.models = list(LADDER)
    bad = [m for m in args.models if m not in LADDER]
    if bad:
        print(
            f"hpmf evaluate: unknown model(s) {', '.join(bad)}; choose from: {', '.join(LADDER)}",
            file=sys.stderr,
        )
        return 2

    try:
        events = read_events_head(args.events, args.limit)
    except (OSError, EventsFileError) as exc:
        print(f"hpmf evaluate: {exc}", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print("hpmf evaluate: --batch-size must be >= 1", file=sys.stderr)
        return 2
    truth = None
    if args.truth is not None:
        if args.protocol != "prequential":
            print("hpmf evaluate: --truth (the oracle rung) is prequential only", file=sys.stderr)
            return 2
        if args.transform != "log1p":
            print(
                "hpmf evaluate: --truth needs --transform log1p (the simulator draws log1p(minutes))",
                file=sys.stderr,
            )
            return 2
        try:
            with np.load(args.truth, allow_pickle=False) as f:
                truth = {k: f[k] for k in f.files}
        except (OSError, ValueError) as exc:
            print(f"hpmf evaluate: {args.truth}: not a truth file: {exc}", file=sys.stderr)
            return 2
    torch.set_num_threads(max(1, args.threads))
    warm_up()
    users, videos = events.user_ids.tolist(), events.video_ids.tolist()
    scores: dict[str, dict[str, float]] = {}
    streams: dict[str, StreamResult] = {}
    failed = []
    for name in args.models:
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(
                total=len(events),
                desc=f"{name:<12}",
                unit="ev",
                file=sys.stderr,
                mininterval=1.0,
                leave=True,
            )
        try:
            model = _new_model(name, args)
            res = run_stream(
                model,
                users,
                videos,
                events.values,
                batch_size=args.batch_size,
                protocol=args.protocol,
                train_fraction=args.train_fraction,
                progress=None if bar is None else bar.update,
            )
        except (RuntimeError, ValueError, IndexError) as exc:
            failed.append(name)
            print(
                f"hpmf evaluate: model {name!r} failed: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            traceback.print_exc(limit=-3, file=sys.stderr)
            scores[name] = {k: math.nan for k in ("rmse",)}
            continue
        finally:
            if bar is not None:
                bar.close()
        scores[name] = metrics(res)
        streams[name] = res
    if truth is not None:
        res = oracle_stream(
            users, videos, forward(args.transform, events.values), truth, batch_size=args.batch_size
        )
        scores["oracle"] = metrics(res)
        streams["oracle"] = res
    print(
        f"{args.protocol}, batch size {args.batch_size}, {len(events)} events from {args.events}"
        f" (transform {args.transform})"
    )
    print(format_table(scores))
    if failed:
        print(f"failed (metrics null in the JSON): {', '.join(failed)}")
    if args.json is not None:
        rep = report(scores, args.protocol, args.batch_size, len(events))
        args.json.write_text(json.dumps(rep, indent=2) + "\n")
        print(f"report written to {args.json}")
    if args.plot is not None and streams:
        title = (
            f"{args.events.name}: {args.protocol}, minibatch {args.batch_size}, "
            f"{len(events)} events"
        )
        plot(streams, args.plot, title)
        print(f"plot written to {args.plot}")
    return 1 if failed else 0


def _new_model(name: str, args: argparse.Namespace) -> OnlineHPMF:
    return OnlineHPMF(
        ladder_config(
            name, transform=args.transform, seed=args.seed, global_mean_prior=args.global_mean_prior
        )
    )
