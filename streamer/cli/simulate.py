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


#: (flag, SimConfig field, help) of every simulator setting the command exposes;
#: the flag's type is the field's, its default the field's default.
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--days", "days", "days of traffic"),
    ("--users-per-day", "users_per_day", "new users arriving per day"),
    ("--videos", "n_videos", "catalogue size"),
    ("--factors", "n_factors", "true number of taste factors K"),
    ("--heavy-fraction", "heavy_fraction", "share of heavy watchers"),
    ("--light-views", "light_mean_views", "mean views of a light user, geometric"),
    ("--heavy-views", "heavy_mean_views", "mean views of a heavy watcher"),
    ("--zipf", "zipf_exponent", "popularity exponent a, P(rank k) ~ k^-a"),
    ("--sigma", "sigma", "noise sd on the log1p(minutes) scale"),
    ("--seed", "seed", "random seed"),
    (
        "--choice-strength",
        "choice_strength",
        "how much taste drives which videos a user starts: P(start j) ~ "
        "popularity_j x exp(BETA x u_i.v_j / sd); 0 = popularity alone (the demo uses 2)",
    ),
)


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
        help="a documented regime, replacing the defaults of the settings it names "
        "(flags given on the command line still win); churn60: "
        + ", ".join(f"{k}={v}" for k, v in PRESETS["churn60"].items()),
    )
    for flag, field, help_text in OPTIONS:
        default = getattr(_D, field)
        parser.add_argument(
            flag,
            dest=field,
            type=type(default),
            default=None,
            metavar="BETA" if field == "choice_strength" else flag[2:].upper().replace("-", "_"),
            help=f"{help_text} (default: {default})",
        )


def run(args: argparse.Namespace) -> int:
    # A flag given on the command line wins over the preset, which wins over the defaults.
    preset = PRESETS[args.preset] if args.preset is not None else {}
    given = {}
    for _, field, _ in OPTIONS:
        value = getattr(args, field)
        if value is None:
            value = type(getattr(_D, field))(preset.get(field, getattr(_D, field)))
        given[field] = value
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
