"""What the reader library returns: per-user results with a :class:`Status`,
and the typed per-call errors (docs/lookup.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np

from streamer.reader.redis_record import RecordError

Strategy = Literal["mean", "thompson", "ucb"]
STRATEGIES: tuple[str, ...] = ("mean", "thompson", "ucb")


# ---------------------------------------------------------------- outcomes
class Status(StrEnum):
    """What the reader found for one user."""

    OK = "ok"
    """The user's record was read; the posterior is theirs."""
    NEW_USER = "new_user"
    """No record (new, or churned and expired): the pooled prior."""
    CORRUPT_RECORD = "corrupt_record"
    """The record could not be decoded (or its D differs from the model's): pooled prior."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """The record has a schema version this reader does not know: pooled prior."""


class ReaderError(Exception):
    """A whole call could not be answered. Catch this for every case below."""


class NoGlobalsError(ReaderError):
    """No global record is published under the prefix yet (the service has not started)."""


class GlobalsUnreadableError(ReaderError):
    """The current global record is corrupt or of another schema version, and no
    good one is cached. ``cause`` is the :class:`~streamer.reader.redis_record.RecordError`."""

    def __init__(self, message: str, cause: RecordError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class StoreUnavailableError(ReaderError):
    """Redis could not be reached or refused the command (the cause is chained)."""


@dataclass(frozen=True)
class UserPosterior:
    """q(x) = N(mean, cov) of one user, x = [u_1..u_k, b], and where it came from."""

    user_id: str
    status: Status
    mean: np.ndarray
    cov: np.ndarray
    n_events: int
    model_version: int  # the global version results are scored against
    user_version: int | None  # the gv the user's record was computed against (None: prior)
    version_lag: int  # model_version - user_version (0 for the prior)
    stale: bool  # |version_lag| > the reader's max_version_lag
    updated_ms: int | None = None
    event_ms: int | None = None
    history: list[tuple[str, float, int]] = field(default_factory=list)
    error: str | None = None
    choice_mean: np.ndarray | None = None  # q(a_i) of a version 2 record (None: the choice prior)
    choice_cov: np.ndarray | None = None

    @property
    def is_prior(self) -> bool:
        """True when this is the pooled prior, not the user's own posterior."""
        return self.status is not Status.OK


@dataclass(frozen=True)
class Predictions:
    """Predictive mean and std per video, in original units (e.g. minutes).

    ``known[i]`` is False for a video the global record does not hold; its
    entries are NaN (the v1 record carries no video prior to fall back on).
    """

    posterior: UserPosterior
    video_ids: list[str]
    mean: np.ndarray
    std: np.ndarray
    known: np.ndarray  # bool
    model_mean: np.ndarray  # on the model scale (after the transform)
    model_std: np.ndarray


@dataclass(frozen=True)
class Recommendation:
    video_id: str
    score: float  # what was ranked, in original units (see Lookup.recommend)
    mean: float  # predictive mean, original units
    std: float  # predictive std, original units


@dataclass(frozen=True)
class Recommendations:
    posterior: UserPosterior
    strategy: str
    items: list[Recommendation]

    @property
    def video_ids(self) -> list[str]:
        return [r.video_id for r in self.items]
