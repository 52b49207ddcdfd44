"""``hpmf simulate``: write a synthetic AVOD watch stream drawn from the model itself.

    hpmf simulate sim.tsv --days 7 --seed 1

writes ``sim.tsv`` (``user_id video_id value timestamp``, value = minutes
watched, in timestamp order) and ``sim.truth.npz`` beside it with the true
parameters (user_ids, video_ids, U, V, user_bias, video_bias, popularity, b0,
sigma, mu_u, s_u, mu_v, s_v, biases, choice_strength, affinity_sd), so that recovery and coverage of the true
factors can be checked. See :mod:`model.simulate` for the generative story.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from model.simulate import PRESETS, SimConfig, simulate
from streamer.files.events_file import write_events

_D = SimConfig()


def truth_path(out: Path) -> Path:
    """``sim.tsv`` -> ``sim.truth.npz``."""
    return out.with_name(out.stem + ".truth.npz")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "out",
        type=Path,
        metavar="OUT.tsv",
        help="events file to write; the truth goes to OUT.truth.npz",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a documented regime; churn60: "
        + ", ".join(f"{k}={v}" for k, v in PRESETS["churn60"].items()),
    )
    parser.add_argument(
        "--days", type=int, default=_D.days, help=f"days of traffic (default: {_D.days})"
    )
    parser.add_argument(
        "--users-per-day",
        type=int,
        default=_D.users_per_day,
        help=f"new users arriving per day (default: {_D.users_per_day})",
    )
    parser.add_argument(
        "--videos", type=int, default=_D.n_videos, help=f"catalogue size (default: {_D.n_videos})"
    )
    parser.add_argument(
        "--factors",
        type=int,
        default=_D.n_factors,
        help=f"true number of taste factors K (default: {_D.n_factors})",
    )
    parser.add_argument(
        "--heavy-fraction",
        type=float,
        default=_D.heavy_fraction,
        help=f"share of heavy watchers (default: {_D.heavy_fraction})",
    )
    parser.add_argument(
        "--light-views",
        type=float,
        default=_D.light_mean_views,
        help=f"mean views of a light user, geometric (default: {_D.light_mean_views})",
    )
    parser.add_argument(
        "--heavy-views",
        type=float,
        default=_D.heavy_mean_views,
        help=f"mean views of a heavy watcher (default: {_D.heavy_mean_views})",
    )
    parser.add_argument(
        "--zipf",
        type=float,
        default=_D.zipf_exponent,
        help=f"popularity exponent a, P(rank k) ~ k^-a (default: {_D.zipf_exponent})",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=_D.sigma,
        help=f"noise sd on the log1p(minutes) scale (default: {_D.sigma})",
    )
    parser.add_argument(
        "--seed", type=int, default=_D.seed, help=f"random seed (default: {_D.seed})"
    )
    parser.add_argument(
        "--choice-strength",
        type=float,
        default=_D.choice_strength,
        metavar="BETA",
        help="how much taste drives which videos a user starts: P(start j) ~ "
        "popularity_j x exp(BETA x u_i.v_j / sd); 0 = popularity alone "
        f"(default: {_D.choice_strength}; the demo uses 2)",
    )


def run(args: argparse.Namespace) -> int:
    given = dict(
        days=args.days,
        users_per_day=args.users_per_day,
        n_videos=args.videos,
        n_factors=args.factors,
        heavy_fraction=args.heavy_fraction,
        light_mean_views=args.light_views,
        heavy_mean_views=args.heavy_views,
        zipf_exponent=args.zipf,
        sigma=args.sigma,
        seed=args.seed,
        choice_strength=args.choice_strength,
    )
    if args.preset is not None:
        # The preset replaces the defaults only: a flag set on the command line wins.
        for key, value in PRESETS[args.preset].items():
            if given[key] == getattr(_D, key):
                given[key] = type(getattr(_D, key))(value)
    try:
        cfg = SimConfig(**given)  # type: ignore[arg-type]
    except ValueError as exc:
        print(f"hpmf simulate: {exc}", file=sys.stderr)
        return 2
    sim = simulate(cfg)
    write_events(args.out, sim.user_ids, sim.video_ids, sim.values, sim.timestamps)
    tpath = truth_path(args.out)
    np.savez_compressed(tpath, **sim.truth.to_arrays())
    print(
        f"{len(sim)} events, {len(sim.truth.user_ids)} users, {len(sim.truth.video_ids)} videos, "
        f"density {100 * sim.density():.2f}%, median {np.median(sim.values):.1f} min -> {args.out}; "
        f"truth -> {tpath}"
    )
    return 0
