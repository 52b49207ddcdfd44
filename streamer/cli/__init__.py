"""The ``hpmf`` command: one entry point, a subcommand per job.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so
``hpmf lookup`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "stream": (
        "streamer.cli.stream",
        "run the streaming service: Kafka watch events in, posteriors in Redis out",
    ),
    "replay": (
        "streamer.cli.replay",
        "produce an events file into Kafka, keyed by user, at a given rate",
    ),
    "lookup": (
        "streamer.cli.lookup",
        "print a user's posterior, predictions and recommendations from Redis",
    ),
    "evaluate": (
        "streamer.cli.evaluate",
        "evaluate the model ladder on an events file (prequential or holdout)",
    ),
    "simulate": (
        "streamer.cli.simulate",
        "write a synthetic AVOD watch stream drawn from the model itself",
    ),
    "fit": (
        "streamer.cli.fit",
        "batch-fit the model on an events file and write a checkpoint (warm start)",
    ),
    "topics": ("streamer.cli.topics", "create the Kafka topics the service uses"),
    "rebuild": (
        "streamer.cli.rebuild",
        "rebuild Redis from Kafka (after Redis lost its data): users replayed, globals from the durable checkpoint",
    ),
    "forget": (
        "streamer.cli.forget",
        "delete users' records and keep a replay of the topic from bringing them back",
    ),
}


def version() -> str:
    """``hpmf <package version>``, with the git commit when run from a checkout
    (``-dirty`` if tracked files changed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        text = f"hpmf {dist_version('hpmf-streamer')}"
    except PackageNotFoundError:
        text = "hpmf (package not installed)"
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            git = ["git", "-C", str(root)]
            sha = subprocess.run(
                [*git, "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
                timeout=5,
            ).stdout.strip()
            dirty = subprocess.run(
                [*git, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                check=True,
                timeout=5,
            ).stdout.strip()
            text += f" (git {sha}{'-dirty' if dirty else ''})"
        except (OSError, subprocess.SubprocessError):
            pass
    return text


class _VersionAction(argparse.Action):
    """``--version``: works out the text only when asked (git is a subprocess)."""

    def __init__(
        self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: object
    ) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="print the version (and git commit) and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version())
        parser.exit()


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpmf",
        description=(
            "Streaming Hierarchical Probabilistic Matrix Factorization: watch events from "
            "Kafka update Bayesian user posteriors that other services read from Redis."
        ),
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == chosen:  # only the chosen subcommand's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Set before torch is imported: the model's per-minibatch tensors are tiny,
    # and intra-op threads cost more in contention than they save (measured 5x
    # slower minibatches with 2 threads on a 2-core machine).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
