"""``hpmf evaluate EVENTS --protocol ranking``: the ranking ladder on an events file.

    hpmf evaluate .data/ml-100k.inter --protocol ranking --every 40 --warmup 20000 \\
        --global-mean-prior 3 --json rank.json

See :mod:`streamer.evaluation.ranking_eval` for the protocol and :mod:`model.ranking` for the
metrics. The arguments shared with the other protocols (``--batch-size``,
``--models``, ``--transform``, ``--limit``, ``--seed``, ``--global-mean-prior``,
``--json``, ``--threads``, ``--quiet``) are defined by :mod:`streamer.cli.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from streamer.evaluation.ranking_eval import (
    DEV_RUNGS,
    RANK_METRICS,
    RANK_RUNGS,
    make_rankers,
    ranking_report,
    run_ranking,
)

STRATEGIES = ("mean", "ucb", "thompson")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ranking protocol's own options."""
    g = parser.add_argument_group("ranking protocol")
    g.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="K",
        help="ranking: score every K-th event (default: 1)",
    )
    g.add_argument(
        "--warmup",
        type=int,
        default=0,
        metavar="N",
        help="ranking: learn the first N events unscored (default: 0)",
    )
    g.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="mean",
        help="ranking: how the model rungs rank, as recommend's --strategy (default: mean)",
    )


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    head = f"{'model':<20}" + "".join(f"{c:>17}" for c in RANK_METRICS)
    lines = [head, "-" * len(head)]
    for name, m in metrics.items():
        cells = "".join(
            f"{m[c]:>17.4f}" if math.isfinite(m[c]) else f"{'-':>17}" for c in RANK_METRICS
        )
        lines.append(f"{name:<20}" + cells)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from model.evaluate import warm_up
    from streamer.files.events_file import EventsFileError, read_events_head

    batch_size = 1 if args.batch_size is None else args.batch_size
    names = list(RANK_RUNGS) if args.models is None else list(args.models)
    bad = [m for m in names if m not in RANK_RUNGS + DEV_RUNGS]
    if bad:
        print(
            f"hpmf evaluate: unknown ranking rung(s) {', '.join(bad)}; choose from: "
            f"{', '.join(RANK_RUNGS)}",
            file=sys.stderr,
        )
        return 2
    if batch_size < 1 or args.every < 1 or args.warmup < 0:
        print(
            "hpmf evaluate: --batch-size and --every must be >= 1, --warmup >= 0", file=sys.stderr
        )
        return 2
    try:
        events = read_events_head(args.events, args.limit)
    except (OSError, EventsFileError) as exc:
        print(f"hpmf evaluate: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    warm_up()
    catalogue: dict[str, int] = {}
    rankers = make_rankers(
        names,
        catalogue,
        transform=args.transform,
        seed=args.seed,
        global_mean_prior=args.global_mean_prior,
        strategy=args.strategy,
    )
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(events), desc="ranking", unit="ev", file=sys.stderr, mininterval=1.0)
    try:
        result = run_ranking(
            events.user_ids.tolist(),
            events.video_ids.tolist(),
            events.values,
            rankers,
            catalogue,
            batch_size=batch_size,
            every=args.every,
            warmup=args.warmup,
            progress=None if bar is None else bar.update,
        )
    finally:
        if bar is not None:
            bar.close()
    print(
        f"ranking, batch size {batch_size}, every {args.every} after {args.warmup}: "
        f"{result.n_scored} scored events of {len(events)} from {args.events}, "
        f"{result.n_catalogue} videos (model rungs by {args.strategy})"
    )
    print(format_table(result.metrics()))
    if args.json is not None:
        args.json.write_text(json.dumps(ranking_report(result), indent=2) + "\n")
        print(f"report written to {args.json}")
    return 0
