"""Ranking evaluation: the metrics and the non-model baselines, pure numpy.

The question a ranking asks is not "how long will this user watch video j?"
but "which video will they start next?". The prequential ranking protocol
(:mod:`streamer.evaluation.ranking_eval` drives it) replays a stream in time order and, at
a scored event (user i watched video t), ranks every video seen so far that i
has not watched yet, with the states from before that event, and records the
*rank* of t. From the ranks r_1..r_N of N scored events:

    hit@10    = (1/N) sum_n [r_n <= 10]
    NDCG@10   = (1/N) sum_n [r_n <= 10] / log2(r_n + 1)     (one relevant item: IDCG = 1)
    MRR       = (1/N) sum_n 1 / r_n
    catalogue_share = |union of the top-10 lists shown| / |videos in the catalogue|

Ties are broken the way :func:`streamer.reader.lookup_math.top_k` breaks them
(stable: the lower catalogue row first), so a rank here is the position the
video would have in the list ``recommend`` serves.

>>> s = np.array([0.5, 0.9, 0.5, 0.1])
>>> rank_of(s, 2), rank_of(s, 1), rank_of(s, 0)
(3, 1, 2)
>>> m = ranking_metrics(np.array([1, 3, 20]))
>>> round(m["hit10"], 4), round(m["ndcg10"], 4), round(m["mrr"], 4)
(0.6667, 0.5, 0.4611)

Baselines (each learns event by event, as a model would):

* :class:`Popularity`: all-time view counts.
* :class:`DecayedPopularity`: view counts decayed by exp(-1/tau) per event.
* :class:`Cooccurrence`: item-item co-occurrence (users who watched both),
  cosine-normalised, summed over the user's ``recent`` last videos, plus
  ``pop_weight`` x popularity / max popularity (so a user with no history gets
  the popular list, and ties break by popularity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

K = 10


def rank_of(scores: np.ndarray, target: int) -> int:
    """1-based position of ``target`` when ``scores`` are sorted descending, ties
    broken by the lower index first (as :func:`streamer.reader.lookup_math.top_k`).
    A non-finite target score ranks last (``len(scores)``)."""
    s = scores[target]
    if not np.isfinite(s):
        return int(scores.shape[0])
    return int(np.count_nonzero(scores > s) + np.count_nonzero(scores[:target] == s) + 1)


def ranking_metrics(ranks: np.ndarray, k: int = K) -> dict[str, float]:
    """hit@k, NDCG@k and MRR of 1-based ranks (see the module docstring).

    >>> ranking_metrics(np.array([1]))
    {'hit10': 1.0, 'ndcg10': 1.0, 'mrr': 1.0}
    >>> ranking_metrics(np.array([2, 11]))["ndcg10"] == 0.5 / math.log2(3)
    True
    """
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        return {f"hit{k}": math.nan, f"ndcg{k}": math.nan, "mrr": math.nan}
    if (r < 1).any():
        raise ValueError("ranks are 1-based")
    hit = r <= k
    return {
        f"hit{k}": float(hit.mean()),
        f"ndcg{k}": float(np.where(hit, 1.0 / np.log2(r + 1.0), 0.0).mean()),
        "mrr": float((1.0 / r).mean()),
    }


class Tally:
    """Ranks and shown lists of one ranker over a run."""

    def __init__(self) -> None:
        self.ranks: list[int] = []
        self.shown: set[int] = set()

    def add(self, rank: int, top: Sequence[int]) -> None:
        self.ranks.append(int(rank))
        self.shown.update(int(r) for r in top)

    def metrics(self, n_catalogue: int, k: int = K) -> dict[str, float]:
        """:func:`ranking_metrics` plus ``catalogue_share`` over ``n_catalogue`` videos.

        >>> t = Tally(); t.add(1, [0, 1]); t.add(12, [1, 2])
        >>> t.metrics(6)
        {'hit10': 0.5, 'ndcg10': 0.5, 'mrr': 0.5416666666666666, 'catalogue_share': 0.5}
        """
        out = ranking_metrics(np.array(self.ranks, dtype=np.int64), k)
        out["catalogue_share"] = len(self.shown) / n_catalogue if n_catalogue else math.nan
        return out


class Popularity:
    """All-time view counts (a rewatch counts again)."""

    def __init__(self) -> None:
        self.count = np.zeros(64)

    def _ensure(self, row: int) -> None:
        while row >= self.count.shape[0]:
            self.count = np.concatenate([self.count, np.zeros_like(self.count)])

    def observe(self, history: Sequence[int], row: int) -> None:
        """User with earlier videos ``history`` (oldest first) watched ``row``."""
        self._ensure(row)
        self.count[row] += 1.0

    def scores(self, history: Sequence[int], n_videos: int) -> np.ndarray:
        self._ensure(n_videos)
        return self.count[:n_videos].copy()


class DecayedPopularity(Popularity):
    """View counts in which an event's weight halves every ``half_life`` events.

    Kept as count_j * exp(t / tau) with a rescale now and then, so an event
    costs O(1) instead of decaying every count.

    >>> p = DecayedPopularity(half_life=1.0)
    >>> p.observe([], 0); p.observe([], 1); p.observe([], 1)
    >>> [round(x, 6) for x in p.scores([], 2).tolist()]
    [0.25, 1.5]
    """

    def __init__(self, half_life: float = 1000.0) -> None:
        super().__init__()
        self.rate = math.log(2.0) / half_life
        self.t = 0  # events seen
        self.base = 0  # the clock the stored weights are relative to

    def observe(self, history: Sequence[int], row: int) -> None:
        self._ensure(row)
        if (self.t - self.base) * self.rate > 50.0:  # keep exp() finite
            self.count *= math.exp(-(self.t - self.base) * self.rate)
            self.base = self.t
        self.t += 1
        self.count[row] += math.exp((self.t - self.base) * self.rate)

    def scores(self, history: Sequence[int], n_videos: int) -> np.ndarray:
        self._ensure(n_videos)
        return self.count[:n_videos] * math.exp(-(self.t - self.base) * self.rate)


class Cooccurrence:
    """Item-item co-occurrence neighbours (see the module docstring).

    cos(a, b) = C_ab / sqrt(n_a n_b), C_ab = number of users who watched both,
    n_a = number of users who watched a.

    >>> c = Cooccurrence(recent=10, pop_weight=0.0)
    >>> for h, v in [([], 0), ([0], 1), ([], 0), ([0], 2), ([0, 2], 1)]:
    ...     c.observe(h, v)
    >>> [round(x, 3) for x in c.scores([0], 3).tolist()]
    [0.0, 1.0, 0.707]
    """

    def __init__(self, recent: int = 10, pop_weight: float = 0.1) -> None:
        self.recent = recent
        self.pop_weight = pop_weight
        self.cap = 64
        self.co = np.zeros((self.cap, self.cap))
        self.n = np.zeros(self.cap)

    def _ensure(self, row: int) -> None:
        if row < self.cap:
            return
        cap = self.cap
        while row >= cap:
            cap *= 2
        co = np.zeros((cap, cap))
        co[: self.cap, : self.cap] = self.co
        self.co, self.n = co, np.concatenate([self.n, np.zeros(cap - self.cap)])
        self.cap = cap

    def observe(self, history: Sequence[int], row: int) -> None:
        self._ensure(row)
        if row in history:  # a rewatch adds no new pair
            return
        self.n[row] += 1.0
        if history:
            h = np.fromiter(history, dtype=np.int64, count=len(history))
            self.co[row, h] += 1.0
            self.co[h, row] += 1.0

    def scores(self, history: Sequence[int], n_videos: int) -> np.ndarray:
        self._ensure(n_videos)
        n = self.n[:n_videos]
        top = float(n.max()) if n_videos else 0.0
        out = self.pop_weight * (n / top if top > 0 else n)
        recent = list(dict.fromkeys(reversed(history)))[: self.recent]
        if recent:
            h = np.array(recent, dtype=np.int64)
            norm = np.sqrt(np.maximum(np.outer(self.n[h], n), 1.0))
            out = out + (self.co[h, :n_videos] / norm).sum(0)
        return out
