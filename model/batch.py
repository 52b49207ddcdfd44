"""A minibatch of watch events, as the model sees it: who watched what, how much."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batch:
    """Events in stream order. ``values`` are raw (minutes or ratings), untransformed.

    >>> b = Batch.of(["u1", "u2"], ["v1", "v1"], [3.0, 5.0])
    >>> len(b), b.users()
    (2, ['u1', 'u2'])
    >>> Batch.of(["u1"], ["v1"], [float("nan")])
    Traceback (most recent call last):
    ...
    ValueError: batch values must be finite; event 0 has nan
    """

    user_ids: tuple[str, ...]
    video_ids: tuple[str, ...]
    values: np.ndarray

    @staticmethod
    def of(
        user_ids: Sequence[str | int],
        video_ids: Sequence[str | int],
        values: Sequence[float] | np.ndarray,
        max_value: float = float("inf"),
    ) -> Batch:
        vals = event_columns(user_ids, video_ids, values, "batch")
        bad = np.flatnonzero((vals < 0) | (vals > max_value))
        if bad.size:
            raise ValueError(
                f"batch values must lie in [0, {max_value}]; event {bad[0]} has {vals[bad[0]]}"
            )
        return Batch(tuple(map(str, user_ids)), tuple(map(str, video_ids)), vals)

    def __len__(self) -> int:
        return len(self.values)

    def users(self) -> list[str]:
        """Distinct users in first-seen order."""
        return list(dict.fromkeys(self.user_ids))


def event_columns(
    user_ids: Sequence[object],
    video_ids: Sequence[object],
    values: Sequence[float] | np.ndarray,
    what: str,
) -> np.ndarray:
    """The values as a float64 vector, after checking that the three columns
    line up and every value is finite; ``what`` names them in the errors."""
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim != 1:
        raise ValueError(f"{what} values must be one-dimensional, got shape {vals.shape}")
    if not len(user_ids) == len(video_ids) == len(vals):
        raise ValueError(
            f"{what} columns differ in length: {len(user_ids)} users, "
            f"{len(video_ids)} videos, {len(vals)} values"
        )
    bad = np.flatnonzero(~np.isfinite(vals))
    if bad.size:
        raise ValueError(f"{what} values must be finite; event {bad[0]} has {vals[bad[0]]}")
    return vals
