"""``hpmf fit``: batch-fit the model on an events file and write a checkpoint.

    hpmf fit .data/ml-100k.inter --out ml100k.ckpt --epochs 5

The classic SVI workflow (:mod:`model.batch_fit`): several passes of
minibatched ``OnlineHPMF.learn`` over the whole file, in timestamp order, with
the effective data size N_eff set to the file's event count (override with
``--effective-data-size``). The checkpoint holds only globals (videos and
hyper-parameters); the streaming service can warm-start from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from model.batch_fit import batch_config, fit
from model.config import HPMFConfig
from model.online import OnlineHPMF
from model.transform import TRANSFORMS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "events", type=Path, help="events file (CSV/TSV: user_id, video_id, value, timestamp)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="CKPT", help="checkpoint file to write"
    )
    parser.add_argument("--epochs", type=int, default=5, help="passes over the file (default: 5)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1024,
        metavar="B",
        help="events per minibatch (default: 1024)",
    )
    parser.add_argument(
        "--transform",
        choices=TRANSFORMS,
        default="identity",
        help="identity (ratings) or log1p (minutes watched) (default: identity)",
    )
    parser.add_argument(
        "--factors",
        type=int,
        default=None,
        metavar="K",
        help=f"taste dimensions (default: HPMFConfig's, {HPMFConfig().n_factors})",
    )
    parser.add_argument(
        "--effective-data-size",
        type=float,
        default=None,
        metavar="N_EFF",
        help="video-evidence forgetting horizon and SVI data size (default: the "
        "number of events in the file, so that many epochs weigh each event once)",
    )
    parser.add_argument("--seed", type=int, default=0, help="model seed (default: 0)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default: 1; the model's tensors are small, "
        "and extra threads mostly add synchronisation, badly so on a busy CPU)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _saver():  # noqa: ANN202 - returns a callable(model, path)
    """OnlineHPMF.save if the model has it, else model.checkpoint.save_checkpoint."""
    if hasattr(OnlineHPMF, "save"):
        return lambda model, path: model.save(path)
    from model.checkpoint import save_checkpoint

    return save_checkpoint


def run(args: argparse.Namespace) -> int:
    from streamer.files.events_file import EventsFileError, read_events

    if args.epochs < 1 or args.batch_size < 1:
        print("hpmf fit: --epochs and --batch-size must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    save = _saver()  # fail before fitting, not after, if checkpoints are unavailable
    try:
        events = read_events(args.events)
    except (OSError, EventsFileError) as exc:
        print(f"hpmf fit: {exc}", file=sys.stderr)
        return 2
    if len(events) == 0:
        print(f"hpmf fit: {args.events}: no events", file=sys.stderr)
        return 2
    cfg = HPMFConfig(transform=args.transform, seed=args.seed)
    if args.factors is not None:
        cfg = dataclasses.replace(cfg, n_factors=args.factors)
    cfg = batch_config(cfg, len(events))
    if args.effective_data_size is not None:
        cfg = dataclasses.replace(cfg, effective_data_size=args.effective_data_size)
    model = OnlineHPMF(cfg)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.epochs * len(events), unit="ev", file=sys.stderr, mininterval=1.0)
    t0 = time.perf_counter()
    try:
        history = fit(
            model,
            events.user_ids.tolist(),
            events.video_ids.tolist(),
            events.values,
            epochs=args.epochs,
            batch_size=args.batch_size,
            progress=None if bar is None else bar.update,
        )
    except ValueError as exc:
        print(f"hpmf fit: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    secs = time.perf_counter() - t0
    for k, rmse in enumerate(history, 1):
        kind = "prequential" if k == 1 else "training"
        print(f"epoch {k}: RMSE {rmse:.4f} ({kind}, before each minibatch was learned)")
    save(model, args.out)
    print(
        f"{len(events)} events x {args.epochs} epochs in {secs:.1f} s; {model.n_videos} videos, "
        f"b0 {model.global_mean:.3f}, sigma {model.sigma:.3f}, N_eff {cfg.effective_data_size:g} "
        f"-> {args.out}"
    )
    return 0
