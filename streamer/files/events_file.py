"""Read and write watch-events files: one event per line, CSV or TSV.

Columns (matched by header name, any order; extra columns are ignored):

    user_id    who watched        also: user, user_id:token
    video_id   what was watched   also: item_id, item, movie_id, video (recbole ``:token`` suffixes ok)
    value      minutes / rating   also: rating, minutes, watch_minutes (``:float`` suffix ok)
    timestamp  when (a number)    also: time, ts (``:float`` suffix ok)

So the simulator's output (``user_id video_id value timestamp``) and MovieLens as
recbole ships it (``user_id:token item_id:token rating:float timestamp:float``)
both load. The delimiter (tab, comma or semicolon) is sniffed from the header.
A file without a header is read if its first line already looks like data and has
exactly these four columns in this order.

Events come back sorted by timestamp (stable, so ties keep file order).

>>> import tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "e.csv")
>>> _ = open(p, "w").write("user_id,video_id,value,timestamp\\nu1,v1,3.5,20\\nu2,v1,1,10\\n")
>>> ev = read_events(p)
>>> ev.user_ids.tolist(), ev.values.tolist(), len(ev)
(['u2', 'u1'], [1.0, 3.5], 2)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CANONICAL = ("user_id", "video_id", "value", "timestamp")
ALIASES: dict[str, tuple[str, ...]] = {
    "user_id": ("user_id", "user", "userid"),
    "video_id": ("video_id", "item_id", "item", "movie_id", "video", "videoid", "itemid"),
    "value": ("value", "rating", "minutes", "watch_minutes", "watched_minutes"),
    "timestamp": ("timestamp", "time", "ts"),
}


class EventsFileError(ValueError):
    """A malformed events file; the message names the file and the line."""


@dataclass(frozen=True)
class Events:
    """Watch events in timestamp order (parallel arrays)."""

    user_ids: np.ndarray  # (N,) str
    video_ids: np.ndarray  # (N,) str
    values: np.ndarray  # (N,) float64, raw units
    timestamps: np.ndarray  # (N,) float64

    def __len__(self) -> int:
        return len(self.values)

    def head(self, n: int) -> Events:
        """The first ``n`` events (in time order)."""
        return Events(self.user_ids[:n], self.video_ids[:n], self.values[:n], self.timestamps[:n])


def _normalise(name: str) -> str:
    """``'item_id:token'`` -> ``'item_id'``; case and surrounding space ignored."""
    return name.strip().lower().split(":", 1)[0].strip()


def _column_positions(header: Sequence[str]) -> dict[str, int] | None:
    """Position of each canonical column in ``header``, or None if none matched."""
    names = [_normalise(h) for h in header]
    found: dict[str, int] = {}
    for canon, aliases in ALIASES.items():
        for alias in aliases:
            if alias in names:
                found[canon] = names.index(alias)
                break
    return found or None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sniff_delimiter(first_line: str) -> str:
    try:
        return csv.Sniffer().sniff(first_line, delimiters="\t,;").delimiter
    except csv.Error:
        return "\t" if "\t" in first_line else ","


def read_events_head(path: str | Path, limit: int | None = None) -> Events:
    """:func:`read_events`, the first ``limit`` events in time order (all if
    None); a file with no events is an :class:`EventsFileError` too."""
    events = read_events(path)
    if limit is not None:
        events = events.head(limit)
    if len(events) == 0:
        raise EventsFileError(f"{path}: no events")
    return events


def read_events(path: str | Path) -> Events:
    """Read an events file (see module docstring), sorted by timestamp.

    Raises :class:`EventsFileError` naming the file and line for a missing column,
    a short row, or a value/timestamp that is not a finite number.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        first = fh.readline()
        if not first.strip():
            raise EventsFileError(f"{path}: the file is empty")
        delim = _sniff_delimiter(first)
        header = next(csv.reader([first], delimiter=delim))
        pos = _column_positions(header)
        start_line = 2
        if pos is None:
            if len(header) == 4 and _is_number(header[2]) and _is_number(header[3]):
                pos = {c: k for k, c in enumerate(CANONICAL)}
                fh.seek(0)
                start_line = 1
            else:
                raise EventsFileError(
                    f"{path}:1: no recognised header; expected columns "
                    f"{', '.join(CANONICAL)} (or user_id:token item_id:token rating:float "
                    f"timestamp:float), got {header!r}"
                )
        missing = [c for c in CANONICAL if c not in pos]
        if missing:
            raise EventsFileError(
                f"{path}:1: missing column(s) {', '.join(missing)} in header {header!r}; "
                f"accepted names: " + "; ".join(f"{c}: {'/'.join(a)}" for c, a in ALIASES.items())
            )
        iu, iv, ix, it = (pos[c] for c in CANONICAL)
        need = max(iu, iv, ix, it) + 1
        users: list[str] = []
        videos: list[str] = []
        values: list[float] = []
        stamps: list[float] = []
        for lineno, row in enumerate(csv.reader(fh, delimiter=delim), start=start_line):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < need:
                raise EventsFileError(
                    f"{path}:{lineno}: expected at least {need} columns, got {len(row)}: {row!r}"
                )
            users.append(row[iu].strip())
            videos.append(row[iv].strip())
            values.append(_number(row[ix], "value", path, lineno))
            stamps.append(_number(row[it], "timestamp", path, lineno))
    vals = np.asarray(values, dtype=np.float64)
    ts = np.asarray(stamps, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    return Events(
        np.asarray(users, dtype=str)[order],
        np.asarray(videos, dtype=str)[order],
        vals[order],
        ts[order],
    )


def _number(text: str, column: str, path: Path, lineno: int) -> float:
    try:
        x = float(text)
    except ValueError:
        raise EventsFileError(f"{path}:{lineno}: {column} {text!r} is not a number") from None
    if not math.isfinite(x):
        raise EventsFileError(f"{path}:{lineno}: {column} {text!r} is not finite")
    return x


def write_events(
    path: str | Path,
    user_ids: Sequence[str] | np.ndarray,
    video_ids: Sequence[str] | np.ndarray,
    values: np.ndarray,
    timestamps: np.ndarray,
) -> None:
    """Write a TSV events file with the canonical header (``user_id video_id value timestamp``)."""
    n = len(values)
    if not len(user_ids) == len(video_ids) == len(timestamps) == n:
        raise ValueError("write_events: columns differ in length")
    with Path(path).open("w", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(CANONICAL) + "\n")
        for u, v, x, t in zip(user_ids, video_ids, values, timestamps, strict=True):
            fh.write(f"{u}\t{v}\t{float(x):.4f}\t{float(t):.3f}\n")
