"""``hpmf lookup USER``: a user's posterior, predictions and recommendations from Redis.

For people by default, ``--json`` for machines. Reads through
:class:`streamer.reader.lookup.Lookup` (numpy + redis only: no torch import).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

EPILOG = """\
examples:
  hpmf lookup 42
  hpmf lookup 42 --k 5 --strategy thompson --seed 7
  hpmf lookup 42 --predict v17,v23 --json

strategies (ranked on the model scale, shown in original units, e.g. minutes):
  mean      highest predictive mean
  ucb       mean + beta * epistemic std (optimism about what is not yet known)
  thompson  one draw from the user's and the videos' posteriors (exploration)

exit status: 0 answered (also for a new user, who gets the pooled prior),
1 the model is not published / unreadable or Redis is unreachable, 2 bad usage.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("user", help="the user id, as the events carry it")
    parser.add_argument(
        "--k", type=int, default=10, help="how many videos to recommend (default 10)"
    )
    parser.add_argument(
        "--strategy",
        choices=("mean", "ucb", "thompson"),
        default="mean",
        help="how to rank videos (default mean)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the thompson draw")
    parser.add_argument("--ucb-beta", type=float, default=2.0, help="beta of ucb (default 2)")
    parser.add_argument(
        "--include-watched",
        action="store_true",
        help="also recommend videos in the user's stored history",
    )
    parser.add_argument(
        "--predict",
        default="",
        metavar="V1,V2,...",
        help="also print the prediction for these comma-separated video ids",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("HPMF_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis to read (env HPMF_REDIS_URL; default %(default)s)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        default=os.environ.get("HPMF_REDIS_CLUSTER", "").lower() in ("1", "true", "yes", "on"),
        help="--redis-url names a node of a Redis Cluster (env HPMF_REDIS_CLUSTER)",
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("HPMF_REDIS_PREFIX", "hpmf"),
        help="key prefix the service writes under (env HPMF_REDIS_PREFIX; default %(default)s)",
    )
    parser.add_argument(
        "--max-version-lag",
        type=int,
        default=1000,
        help="flag the posterior stale beyond this many global versions (default 1000)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000.0))


def _num(x: float) -> float | None:
    """JSON has no NaN: unknown values become null."""
    return None if not np.isfinite(x) else float(x)


def report(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``run`` prints, as a JSON-ready dict (raises ReaderError)."""
    from streamer.reader.lookup import Lookup
    from streamer.service.connections import redis_client
    from streamer.service.settings import StreamSettings

    # The ACL user, password and TLS files of HPMF_REDIS_* apply here too.
    settings = StreamSettings(redis_cluster=args.redis_cluster)
    lk = Lookup(
        redis_client(settings, url=args.redis_url),
        args.prefix,
        max_version_lag=args.max_version_lag,
        refresh_interval_ms=0,
        ucb_beta=args.ucb_beta,
        cluster=args.redis_cluster,
    )
    recs = lk.recommend(
        args.user,
        k=args.k,
        strategy=args.strategy,
        exclude_watched=not args.include_watched,
        seed=args.seed,
    )
    post = recs.posterior
    model = lk.model()
    rec = model.record
    out: dict[str, Any] = {
        "user": post.user_id,
        "status": post.status.value,
        "is_prior": post.is_prior,
        "error": post.error,
        "n_events": post.n_events,
        "model_version": post.model_version,
        "user_version": post.user_version,
        "version_lag": post.version_lag,
        "stale": post.stale,
        "updated_ms": post.updated_ms,
        "event_ms": post.event_ms,
        "transform": rec.transform,
        "biases": rec.biases,
        "n_videos": rec.n_videos,
        "mean": post.mean.tolist(),
        "std": np.sqrt(np.clip(np.diag(post.cov), 0, None)).tolist(),
        "watched": [v for v, _, _ in post.history],
        "strategy": recs.strategy,
        # a version 2 global record: ranked by expected minutes if shown (score)
        "choice": lk.model().choice is not None,
        "recommendations": [
            {"video_id": r.video_id, "score": r.score, "mean": r.mean, "std": r.std}
            for r in recs.items
        ],
    }
    vids = [v for v in args.predict.split(",") if v]
    if vids:
        pred = lk.predict(args.user, vids)
        out["predictions"] = [
            {"video_id": v, "known": bool(k), "mean": _num(m), "std": _num(s)}
            for v, k, m, s in zip(vids, pred.known, pred.mean, pred.std, strict=True)
        ]
    return out


def render(out: dict[str, Any], seed: int | None) -> str:
    """The human-readable page."""
    unit = "minutes" if out["transform"] == "log1p" else "value"
    lines = [f"user {out['user']}"]
    if out["status"] == "ok":
        lines.append(
            f"  posterior: from {out['n_events']} events, computed against global model "
            f"v{out['user_version']}; scored with v{out['model_version']} "
            f"(lag {out['version_lag']}{', STALE' if out['stale'] else ''})"
        )
        lines.append(f"  last event {_when(out['event_ms'])}, written {_when(out['updated_ms'])}")
    elif out["status"] == "new_user":
        lines.append(
            f"  no record (new or churned user): pooled prior of model v{out['model_version']}"
        )
    else:
        lines.append(f"  record unusable ({out['status']}): pooled prior served. {out['error']}")
    mean, std = out["mean"], out["std"]
    taste = mean[:-1] if out["biases"] else mean
    spread = std[:-1] if out["biases"] else std
    lines.append(
        "  taste  " + " ".join(f"{m:+.2f}±{s:.2f}" for m, s in zip(taste, spread, strict=True))
    )
    if out["biases"]:
        lines.append(f"  bias   {mean[-1]:+.3f} ± {std[-1]:.3f} (model scale: {out['transform']})")
    if out["watched"]:
        shown = ", ".join(out["watched"][-8:])
        more = f" (+{len(out['watched']) - 8} older)" if len(out["watched"]) > 8 else ""
        lines.append(f"  watched {len(out['watched'])}: {shown}{more}")
    how = out["strategy"] + (
        f", seed {seed}" if out["strategy"] == "thompson" and seed is not None else ""
    )
    width = max((len(r["video_id"]) for r in out["recommendations"]), default=8)
    if out.get("choice"):  # the choice component: P(start) x E[minutes | start] is what was ranked
        lines.append(
            f"top {len(out['recommendations'])} of {out['n_videos']} videos by {how}, "
            f"expected {unit} if shown (P(start) x {unit} if started):"
        )
        for i, r in enumerate(out["recommendations"], 1):
            lines.append(
                f"  {i:>3}. {r['video_id']:<{width}}  {r['score']:8.1f}   "
                f"(if started {r['mean']:.1f} ± {r['std']:.1f})"
            )
    else:
        lines.append(
            f"top {len(out['recommendations'])} of {out['n_videos']} videos by {how}, predicted {unit}:"
        )
    for i, r in enumerate(out["recommendations"] if not out.get("choice") else [], 1):
        score = (
            "" if out["strategy"] == "mean" else f"   ({out['strategy']} score {r['score']:.1f})"
        )
        lines.append(
            f"  {i:>3}. {r['video_id']:<{width}}  {r['mean']:8.1f} ± {r['std']:.1f}{score}"
        )
    for p in out.get("predictions", []):
        if p["known"]:
            lines.append(f"  predict {p['video_id']}: {p['mean']:.1f} ± {p['std']:.1f} {unit}")
        else:
            lines.append(
                f"  predict {p['video_id']}: unknown video (not in model v{out['model_version']})"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from streamer.reader.lookup import ReaderError

    if args.k < 0:
        print("hpmf lookup: --k must be >= 0", file=sys.stderr)
        return 2
    try:
        out = report(args)
    except ReaderError as exc:
        print(f"hpmf lookup: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out) if args.json else render(out, args.seed))
    return 0
