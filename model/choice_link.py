"""The P(start) link of the choice component, learned from the stream.

``recommend`` reads P(start) as a softmax choice model over the user's unwatched
videos, P(j) = exp(lambda s_j) / sum_k exp(lambda s_k), s the choice score
(:func:`streamer.reader.lookup_math.start_probability`). lambda is fixed at 20
unless a global record carries a learned one. :class:`ChoiceLink` learns it by
maximum likelihood of the observed starts, online and prequentially: each start
is scored with the user's served choice vector from *before* the event (the
posterior mean plus the session term, against the learner's current videos)
over the videos the user had not started, and only then learned. The
likelihood is kept on a log-spaced grid of lambda values with exponential
forgetting (half-life :attr:`ChoiceLink.half_life` events), so the estimate
follows the stream and nothing is tuned by hand; the served lambda is the grid
maximum refined by a parabola in log lambda.

Why a learned lambda (docs/ranking.md): the softmax log-likelihood of the
starts peaks near lambda 4-5 (MovieLens 100K, the taste simulator), far from
20, so with 20 the served expected minutes are not probabilities times
minutes (a heavy watcher's top 5 read 702, 1, 0, 0, 0) and Thompson's choice
draws are magnified. The learned link is off by default
(``ChoiceConfig.learn_sharpness``): with it the simulator's hit@10 of
expected minutes falls below 1.5x popularity (the issue's target), see
docs/ranking.md for every figure.

>>> rng = np.random.default_rng(0)
>>> link = ChoiceLink(min_events=50)
>>> for _ in range(400):  # starts drawn from a softmax with lambda 6
...     s = rng.normal(0.0, 0.3, 200)
...     p = np.exp(6 * s - (6 * s).max())
...     link.observe(s, int(rng.choice(200, p=p / p.sum())))
>>> 4.5 < link.sharpness() < 8.0
True
>>> ChoiceLink().sharpness() is None  # fewer than min_events starts seen
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from model.choice import ChoiceModel
    from model.choice_config import ChoiceConfig

GRID = np.exp(np.linspace(np.log(0.5), np.log(64.0), 43))
"""The lambda values whose log-likelihood is tracked (ratio ~1.12 between neighbours)."""


@dataclass
class ChoiceLink:
    """Online maximum likelihood of lambda (see the module docstring)."""

    half_life: float = 20_000.0
    """Starts after which an observation's weight halves (the choice learner's N_eff)."""
    min_events: int = 200
    """Starts seen before :meth:`sharpness` returns an estimate (None before)."""
    loglik: np.ndarray = field(default_factory=lambda: np.zeros(GRID.shape[0]))
    weight: float = 0.0  # the decayed number of starts observed
    seen: int = 0

    def observe(self, scores: np.ndarray, chosen: int) -> None:
        """One start: ``scores`` are the candidates' s (the user's unwatched
        videos, from before the start), ``chosen`` the index of the started one."""
        s = np.asarray(scores, dtype=np.float64)
        if s.shape[0] < 2 or not np.isfinite(s).all():
            return
        x = s - s.max()
        logits = GRID[:, None] * x[None, :]
        top = logits.max(axis=1)
        lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        decay = 0.5 ** (1.0 / self.half_life)
        self.loglik = decay * self.loglik + (GRID * x[chosen] - lse)
        self.weight = decay * self.weight + 1.0
        self.seen += 1

    def sharpness(self) -> float | None:
        """The maximum-likelihood lambda, or None before ``min_events`` starts."""
        if self.seen < self.min_events:
            return None
        k = int(np.argmax(self.loglik))
        if k == 0 or k == GRID.shape[0] - 1:
            return float(GRID[k])
        y0, y1, y2 = self.loglik[k - 1 : k + 2]
        den = y0 - 2.0 * y1 + y2
        step = 0.0 if den >= 0 else 0.5 * (y0 - y2) / den  # vertex of the parabola, in grid steps
        h = float(np.log(GRID[1] / GRID[0]))
        return float(np.exp(np.log(GRID[k]) + float(np.clip(step, -0.5, 0.5)) * h))

    def mean_loglik(self) -> float:
        """The decayed average log-likelihood per start at the current estimate
        (a diagnostic; nan before any start)."""
        if self.weight <= 0:
            return float("nan")
        return float(self.loglik.max() / self.weight)


def new_link(config: ChoiceConfig) -> ChoiceLink | None:
    """The link a :class:`~model.choice.ChoiceModel` with ``config`` learns (None:
    the fixed lambda), forgetting at the choice learner's rate N_eff."""
    return ChoiceLink(config.effective_data_size) if config.learn_sharpness else None


def observe_start(model: ChoiceModel, user: str, history: Sequence[str], video: str) -> None:
    """Feed ``model.link`` the start of ``video`` by ``user`` before the learner
    learns it: the user's served vector from before (their previous posterior,
    or the pooled prior, plus the session term over ``history``, the videos
    they had started) against the current videos, over the videos not in
    ``history``. A start of a video with no start in the learner's window (a
    new one, which ``recommend`` could not have shown yet) and a rewatch are
    skipped."""
    link = model.link
    row = model.video_index.get(video)
    # The learner's own state, read before its step (same package as model.choice):
    # a video without a start in the window has a zero shift (its last slot gets
    # w0 + alpha > 0 per start); _users holds each window user's latest posterior,
    # from before this event (re-solved against newer videos at a sweep).
    if link is None or row is None or (user, row) in model._pairs or not model._shift[row].any():
        return
    old = model._users.get(user)
    mean = model.prior_state()[0] if old is None else old[0]
    ey = model.served_means([history], mean[None])[0]
    ey[-1] = 1.0
    s = model.video_mean() @ ey
    keep = np.ones(s.shape[0], dtype=bool)
    keep[[model.video_index[v] for v in history if v in model.video_index]] = False
    link.observe(s[keep], int(keep[:row].sum()))
