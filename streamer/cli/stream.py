"""``hpmf stream``: run the streaming service.

Every setting of :class:`streamer.service.settings.StreamSettings` is an environment
variable ``HPMF_<NAME>`` and a flag ``--<name>`` (flags win). The effective
settings are logged at start, secrets masked.

    hpmf stream --topic watch-events --redis-prefix hpmf --metrics-port 9108
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping

from pydantic import ValidationError

from streamer.service.settings import StreamSettings


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for name, f in StreamSettings.model_fields.items():
        kind = f.annotation
        conv = {int: int, float: float, bool: _bool}.get(kind, str)  # type: ignore[call-overload]
        doc = (f.description or "").strip()
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=conv,
            default=None,
            help=f"{doc} (env HPMF_{name.upper()}; default {f.default!r})"
            if doc
            else f"env HPMF_{name.upper()}; default {f.default!r}",
        )


def stream_argv(python: str, settings: Mapping[str, object]) -> list[str]:
    """The command line that starts ``hpmf stream`` under ``python`` with these
    settings, one ``--flag value`` per :class:`StreamSettings` field (booleans as
    true/false). Tests, benchmarks and the demo start workers with it, so a
    renamed setting fails here by name instead of as an argparse error in a
    child process.

    >>> stream_argv("py", {"topic": "t", "metrics_port": 0, "replay_background": False})
    ['py', '-m', 'streamer.cli', 'stream', '--topic', 't', '--metrics-port', '0', '--replay-background', 'false']
    >>> stream_argv("py", {"topik": "t"})
    Traceback (most recent call last):
    ...
    ValueError: not a setting of hpmf stream: topik
    """
    unknown = sorted(set(settings) - set(StreamSettings.model_fields))
    if unknown:
        raise ValueError(f"not a setting of hpmf stream: {', '.join(unknown)}")
    argv = [python, "-m", "streamer.cli", "stream"]
    for name, value in settings.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        argv += [f"--{name.replace('_', '-')}", text]
    return argv


def settings_from_args(args: argparse.Namespace) -> StreamSettings:
    given = {
        k: v for k, v in vars(args).items() if k in StreamSettings.model_fields and v is not None
    }
    return StreamSettings(**given)


def run(args: argparse.Namespace) -> int:
    from streamer.service.stream_logging import setup_logging

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        # Each error's location and message, never its input: a URL may hold a password.
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        print(f"hpmf stream: invalid settings: {errors}", file=sys.stderr)
        return 2
    except (
        ValueError
    ) as exc:  # an unusable HPMF_SECRETS_DIR (no input to leak: the message names the path)
        print(f"hpmf stream: invalid settings: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    log = logging.getLogger("streamer.stream")
    log.info("starting hpmf stream", extra={"settings": settings.describe()})
    print(
        json.dumps({"hpmf_stream_settings": settings.describe()}, default=str),
        file=sys.stderr,
        flush=True,
    )

    from streamer.service.worker import Worker  # imports torch: only when the service runs

    return Worker(settings).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hpmf stream")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
