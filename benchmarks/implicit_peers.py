"""``implicit``'s ALS and BPR as development-only peers of the ranking suite.

Not a dependency of the project: with ``implicit`` installed (``pip install
implicit`` into a development environment) :func:`implicit_rankers` returns
them, otherwise an empty dict and :data:`SKIP_MESSAGE`. Each is retrained from
scratch on every (user, video) pair seen so far every ``retrain_every`` events
(binary confidence, a rewatch counts once) and scores with its factors from the
last training; ALS folds each user's current history in at scoring time
(``recalculate_user``, closed form), BPR cannot, so a user it was not trained
on gets the training's popularity. Row indices are the ranking protocol's
catalogue rows (:func:`streamer.evaluation.ranking_eval.run_ranking`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SKIP_MESSAGE = "implicit's ALS/BPR peers skipped: the 'implicit' package is not installed (pip install implicit)"


def available() -> bool:
    try:
        import implicit  # noqa: F401
    except ImportError:
        return False
    return True


class ImplicitRanker:
    """One ``implicit`` model retrained every ``retrain_every`` events."""

    def __init__(self, kind: str, retrain_every: int = 2000, factors: int = 32, iterations: int = 15,
                 seed: int = 0) -> None:  # fmt: skip
        self.kind, self.retrain_every = kind, retrain_every
        self.factors, self.iterations, self.seed = factors, iterations, seed
        self.users: dict[str, int] = {}
        self.pairs: set[tuple[int, int]] = set()
        self.n_rows = 0
        self.since = 0
        self.model: Any = None
        self.trained_users: dict[str, int] = {}
        self.pop = np.zeros(0)

    def _matrix(self, n_users: int, n_items: int) -> Any:
        from scipy.sparse import csr_matrix

        u = np.fromiter((p[0] for p in self.pairs), dtype=np.int32, count=len(self.pairs))
        i = np.fromiter((p[1] for p in self.pairs), dtype=np.int32, count=len(self.pairs))
        return csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=(n_users, n_items))

    def _train(self) -> None:
        from implicit.als import AlternatingLeastSquares
        from implicit.bpr import BayesianPersonalizedRanking

        n_users, n_items = len(self.users), self.n_rows
        if self.kind == "als":
            self.model = AlternatingLeastSquares(factors=self.factors, iterations=self.iterations,
                                                 random_state=self.seed, use_gpu=False)  # fmt: skip
        else:
            self.model = BayesianPersonalizedRanking(factors=self.factors, iterations=100,
                                                     random_state=self.seed, use_gpu=False)  # fmt: skip
        m = self._matrix(n_users, n_items)
        self.model.fit(m, show_progress=False)
        self.trained_users = dict(self.users)
        self.pop = np.asarray(m.sum(axis=0)).ravel()

    def scores(self, user: str, history: Sequence[int], n_videos: int) -> np.ndarray:
        out = np.full(n_videos, -np.inf)
        if self.model is None:
            return out
        items = np.asarray(self.model.item_factors)
        n = min(items.shape[0], n_videos)
        if self.kind == "als" and history:
            from scipy.sparse import csr_matrix

            h = np.array([r for r in history if r < items.shape[0]], dtype=np.int32)
            if h.size:
                row = csr_matrix((np.ones(h.size, dtype=np.float32), (np.zeros(h.size, dtype=np.int32), h)),
                                 shape=(1, items.shape[0]))  # fmt: skip
                uf = np.asarray(self.model.recalculate_user(0, row)).ravel()
                out[:n] = items[:n] @ uf
                return out
        if user in self.trained_users:
            uf = np.asarray(self.model.user_factors)[self.trained_users[user]]
            out[:n] = items[:n] @ uf
        else:
            out[:n] = self.pop[:n]
        return out

    def learn(self, users: list[str], videos: list[str], values: np.ndarray, rows: list[int],
              histories: list[Sequence[int]]) -> None:  # fmt: skip
        for u, r in zip(users, rows, strict=True):
            self.pairs.add((self.users.setdefault(u, len(self.users)), r))
            self.n_rows = max(self.n_rows, r + 1)
        self.since += len(users)
        if self.since >= self.retrain_every:
            self.since = 0
            self._train()


def implicit_rankers(retrain_every: int = 2000) -> dict[str, ImplicitRanker]:
    """``implicit_als`` and ``implicit_bpr``, or {} when ``implicit`` is not installed."""
    if not available():
        return {}
    import threadpoolctl

    threadpoolctl.threadpool_limits(1, "blas")
    return {
        "implicit_als": ImplicitRanker("als", retrain_every),
        "implicit_bpr": ImplicitRanker("bpr", retrain_every),
    }
