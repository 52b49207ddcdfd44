"""The prequential ranking protocol: does the list ``recommend`` serves hold the
video the user actually watched next?

    hpmf evaluate .data/ml-100k.inter --protocol ranking --every 40 --warmup 20000 --json rank.json

The stream is replayed in time order, minibatch by minibatch (default 1: learn
after every event). At every ``every``-th event from position ``warmup`` on, with
the states from before that event's minibatch, every video seen so far that the
user has not watched yet is ranked by each rung, and the rank of the video the
user did watch is recorded (:mod:`model.ranking` has the metrics). Events whose
video was never seen before (no ranker can name it) or that the user had
already watched are not scored.

The model rungs (``biases``, ``pmf``, ``hpmf``) are scored through the code
``recommend`` runs: the learner's globals are published as a
:class:`~streamer.reader.redis_record.GlobalRecord`, loaded into a
:class:`~streamer.reader.lookup_math.ServingModel`, and ranked by
:func:`~streamer.reader.lookup_rank.served_scores` (which ranks through
:func:`~streamer.reader.lookup_rank.rank_scores`, with the user's watched
videos excluded and P(start) normalised over the rest, as ``recommend`` does)
and :func:`~streamer.reader.lookup_math.top_k`.
This lives in ``streamer/`` because that serving code does; the model it drives
and the metrics are in ``model/``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from model.batch import Batch
from model.choice import ChoiceConfig, ChoiceModel, ChoiceState, pad_user
from model.evaluate import ladder_config
from model.online import OnlineHPMF
from model.posterior import UserState
from model.ranking import Cooccurrence, DecayedPopularity, K, Popularity, Tally, rank_of
from streamer.reader.lookup_math import ServingModel, top_k
from streamer.reader.lookup_rank import served_scores
from streamer.reader.redis_record import GlobalRecord, global_record_from_snapshot, with_choice

RANK_RUNGS: tuple[str, ...] = (
    "popularity",
    "decayed_popularity",
    "cooccurrence",
    "biases",
    "pmf",
    "hpmf",
)
"""The rungs of the ranking ladder, named as the JSON report names them. ``biases``
and ``pmf`` are minutes models alone (ranked by E[minutes | start]); ``hpmf`` is
what ``recommend`` serves: the minutes model with the choice component
(:mod:`model.choice`), ranked by P(start) x E[minutes | start]."""

DEV_RUNGS: tuple[str, ...] = ("hpmf_minutes", "choice", "hpmf_shared")
"""Development rungs (``--models`` accepts them): the minutes model alone (what
``recommend`` served before the choice component), P(start) alone, and hpmf
whose choice component uses the minutes model's user factors (shared)."""

RANK_METRICS: tuple[str, ...] = ("hit10", "ndcg10", "mrr", "catalogue_share")


class Ranker(Protocol):
    def scores(self, user: str, history: Sequence[int], n_videos: int) -> np.ndarray:
        """One score per catalogue row 0..n_videos-1 (higher is better)."""
        ...

    def learn(
        self,
        users: list[str],
        videos: list[str],
        values: np.ndarray,
        rows: list[int],
        histories: list[Sequence[int]],
    ) -> None:
        """Learn a minibatch; ``histories[k]`` is event k's user's earlier rows."""
        ...


class BaselineRanker:
    """A :mod:`model.ranking` baseline learned event by event."""

    def __init__(self, base: Popularity | Cooccurrence) -> None:
        self.base = base

    def scores(self, user: str, history: Sequence[int], n_videos: int) -> np.ndarray:
        return np.array(self.base.scores(history, n_videos), dtype=np.float64)

    def learn(
        self,
        users: list[str],
        videos: list[str],
        values: np.ndarray,
        rows: list[int],
        histories: list[Sequence[int]],
    ) -> None:
        for row, hist in zip(rows, histories, strict=True):
            self.base.observe(hist, row)


class ModelRanker:
    """An :class:`OnlineHPMF` scored the way ``recommend`` scores it."""

    def __init__(
        self,
        model: OnlineHPMF,
        catalogue: dict[str, int],
        strategy: str = "mean",
        ucb_beta: float = 2.0,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.catalogue = catalogue
        self.strategy = strategy
        self.ucb_beta = ucb_beta
        self.rng = np.random.default_rng(seed)
        self.states: dict[str, UserState] = {}
        self._serving: ServingModel | None = None
        self._rows = np.zeros(0, dtype=np.int64)  # serving row -> catalogue row
        self._serving_row = np.zeros(0, dtype=np.int64)  # catalogue row -> serving row, or -1

    def serving(self) -> ServingModel:
        """The learner's current globals as a reader would load them."""
        if self._serving is None or self._serving.version != self.model.version:
            self._serve(global_record_from_snapshot(self.model.export_globals(), 0))
        assert self._serving is not None
        return self._serving

    def _serve(self, rec: GlobalRecord) -> None:
        self._serving = ServingModel.from_record(rec)
        self._rows = np.fromiter(
            (self.catalogue[v] for v in rec.video_ids), dtype=np.int64, count=rec.n_videos
        )
        self._serving_row = np.full(len(self.catalogue), -1, dtype=np.int64)
        self._serving_row[self._rows] = np.arange(rec.n_videos)

    def choice_posterior(self, user: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The user's served choice mean and covariance (none: the minutes model alone)."""
        return None, None

    def scores(self, user: str, history: Sequence[int], n_videos: int) -> np.ndarray:
        """The served scores, through the code ``recommend`` runs
        (:func:`~streamer.reader.lookup_rank.served_scores`): the user's watched
        videos excluded there, so P(start) is normalised over the same candidates."""
        sm = self.serving()
        rec = sm.record
        st = self.states.get(user)
        mean, cov = (
            (rec.prior_mean, rec.prior_cov) if st is None or st.mean is None else (st.mean, st.cov)
        )
        seen = self._serving_row[[h for h in history if h < self._serving_row.shape[0]]]
        cm, cc = self.choice_posterior(user)
        s, _ = served_scores(
            sm, mean, cov, cm, cc, self.strategy, self.rng, self.ucb_beta, seen[seen >= 0]
        )
        out = np.full(n_videos, -np.inf)
        out[self._rows] = s
        return out

    def learn(
        self,
        users: list[str],
        videos: list[str],
        values: np.ndarray,
        rows: list[int],
        histories: list[Sequence[int]],
    ) -> None:
        self.states.update(self.model.learn(Batch.of(users, videos, values), self.states))


class ChoiceRanker(ModelRanker):
    """The minutes model with the choice component: expected minutes if shown
    (``minutes=False``: P(start) alone, a development rung)."""

    def __init__(
        self,
        model: OnlineHPMF,
        choice: ChoiceModel,
        catalogue: dict[str, int],
        strategy: str = "mean",
        ucb_beta: float = 2.0,
        seed: int = 0,
        minutes: bool = True,
    ) -> None:
        super().__init__(model, catalogue, strategy, ucb_beta, seed)
        self.choice = choice
        self.minutes = minutes
        self.choice_states: dict[str, ChoiceState] = {}
        self._c_version: tuple[int, int] | None = None

    def serving(self) -> ServingModel:
        """The learner's globals and the choice component as one version 2 record."""
        version = (self.model.version, self.choice.version)
        if self._serving is None or self._c_version != version:
            if self.minutes:
                rec = global_record_from_snapshot(self.model.export_globals(), 0)
            else:  # P(start) alone: a flat minutes model over the choice component's videos
                v, z = self.choice.n_videos, np.zeros
                rec = GlobalRecord(
                    0, 1, 0, True, "identity", 1.0, 1.0, z(1), z((1, 1)),
                    list(self.choice.video_ids), z((v, 1)), z((v, 1, 1)), z((v, 1)), 0,
                )  # fmt: skip
            self._serve(with_choice(rec, self.choice))
            self._c_version = version
        assert self._serving is not None
        return self._serving

    def choice_posterior(self, user: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        cst = self.choice_states.get(user)
        if cst is None:
            return None, None
        mean = self.choice.served_means([cst.history], cst.mean[None])[0]
        return mean, self.choice.served_cov(cst.cov)  # as served

    def learn(
        self,
        users: list[str],
        videos: list[str],
        values: np.ndarray,
        rows: list[int],
        histories: list[Sequence[int]],
    ) -> None:
        if self.minutes:
            super().learn(users, videos, values, rows, histories)
        for u, v in zip(users, videos, strict=True):
            st = self.choice.local_step(u, v, self.choice_states.get(u))
            if not self.choice.config.own_user_factors:  # shared: [u_i, 0] of the minutes model
                ms = self.states[u]
                assert ms.mean is not None and ms.cov is not None
                st.mean, st.cov = pad_user(ms.mean[:-1], ms.cov[:-1, :-1])
            self.choice_states[u] = st
        for u, v in zip(users, videos, strict=True):
            self.choice.global_step(u, v, self.choice_states[u])


@dataclass
class RankingResult:
    n_scored: int
    n_catalogue: int
    tallies: dict[str, Tally]
    seconds: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, dict[str, float]]:
        return {name: t.metrics(self.n_catalogue) for name, t in self.tallies.items()}


def run_ranking(
    user_ids: Sequence[str],
    video_ids: Sequence[str],
    values: np.ndarray,
    rankers: dict[str, Ranker],
    catalogue: dict[str, int],
    batch_size: int = 1,
    every: int = 1,
    warmup: int = 0,
    k: int = K,
    progress: Callable[[int], None] | None = None,
) -> RankingResult:
    """Replay the stream and score every ranker (see the module docstring).

    ``catalogue`` (video id -> row, rows in order of first appearance) is filled
    in place; the rankers that map ids to rows share it.
    """
    if batch_size < 1 or every < 1 or warmup < 0:
        raise ValueError("batch_size >= 1, every >= 1 and warmup >= 0 are required")
    users = [str(u) for u in user_ids]
    videos = [str(v) for v in video_ids]
    vals = np.asarray(values, dtype=np.float64)
    n = len(users)
    if len(videos) != n or vals.shape != (n,):
        raise ValueError(
            f"{n} users, {len(videos)} videos and {vals.shape} values differ in length"
        )
    watched: dict[str, list[int]] = {}
    watched_set: dict[str, set[int]] = {}
    tallies = {name: Tally() for name in rankers}
    seconds = dict.fromkeys(rankers, 0.0)
    n_scored = 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        first = max(start, warmup)
        first += (-(first - warmup)) % every
        for p in range(first, stop, every):
            u, row = users[p], catalogue.get(videos[p])
            seen = watched_set.get(u, set())
            if row is None or row in seen:
                continue
            hist = watched.get(u, [])
            n_scored += 1
            nv = len(catalogue)
            for name, r in rankers.items():
                t0 = time.perf_counter()
                s = r.scores(u, hist, nv)
                s = np.where(np.isnan(s), -np.inf, s)
                if hist:
                    s[hist] = -np.inf  # exclude what the user has watched, as recommend does
                tallies[name].add(rank_of(s, row), top_k(s, k).tolist())
                seconds[name] += time.perf_counter() - t0
        bu, bv = users[start:stop], videos[start:stop]
        for v in bv:
            if v not in catalogue:
                catalogue[v] = len(catalogue)
        rows = [catalogue[v] for v in bv]
        hists: list[Sequence[int]] = []
        for u, row in zip(bu, rows, strict=True):
            h = watched.setdefault(u, [])
            hists.append(tuple(h))
            if row not in watched_set.setdefault(u, set()):
                h.append(row)
                watched_set[u].add(row)
        for name, r in rankers.items():
            t0 = time.perf_counter()
            r.learn(bu, bv, vals[start:stop], rows, hists)
            seconds[name] += time.perf_counter() - t0
        if progress is not None:
            progress(stop - start)
    return RankingResult(n_scored, len(catalogue), tallies, seconds)


def make_rankers(
    names: Sequence[str],
    catalogue: dict[str, int],
    *,
    transform: str = "identity",
    seed: int = 0,
    global_mean_prior: float = 0.0,
    strategy: str = "mean",
    decay_half_life: float = 1000.0,
    cooc_recent: int = 10,
    cooc_pop_weight: float = 0.1,
    choice_config: ChoiceConfig | None = None,
    **overrides: Any,
) -> dict[str, Ranker]:
    """The named rungs of :data:`RANK_RUNGS`, fresh."""
    out: dict[str, Ranker] = {}
    for name in names:
        if name == "popularity":
            out[name] = BaselineRanker(Popularity())
        elif name == "decayed_popularity":
            out[name] = BaselineRanker(DecayedPopularity(decay_half_life))
        elif name == "cooccurrence":
            out[name] = BaselineRanker(Cooccurrence(cooc_recent, cooc_pop_weight))
        elif name in ("biases", "pmf", "hpmf_minutes"):  # hpmf_minutes: the minutes model alone
            cfg = ladder_config(
                name.removesuffix("_minutes"),
                transform=transform,
                seed=seed,
                global_mean_prior=global_mean_prior,
                **overrides,
            )
            out[name] = ModelRanker(OnlineHPMF(cfg), catalogue, strategy, seed=seed)
        elif name in ("hpmf", "choice", "hpmf_shared"):  # choice, hpmf_shared: development rungs
            cfg = ladder_config(
                "hpmf",
                transform=transform,
                seed=seed,
                global_mean_prior=global_mean_prior,
                **overrides,
            )
            ccfg = choice_config or ChoiceConfig()
            if name == "hpmf_shared":  # the choice component on the minutes model's user factors
                ccfg = dataclasses.replace(ccfg, own_user_factors=False, n_factors=cfg.n_factors)
            out[name] = ChoiceRanker(
                OnlineHPMF(cfg),
                ChoiceModel(ccfg),
                catalogue,
                strategy,
                seed=seed,
                minutes=name != "choice",
            )
        else:
            raise ValueError(f"unknown ranking rung {name!r}; choose from: {', '.join(RANK_RUNGS)}")
    return out


def ranking_report(result: RankingResult) -> dict[str, Any]:
    """``{"protocol": "ranking", "n_scored", "models": {name: {hit10, ndcg10, mrr,
    catalogue_share}}}``, NaN as null."""

    def clean(x: float) -> float | None:
        return None if not math.isfinite(x) else float(x)

    return {
        "protocol": "ranking",
        "n_scored": int(result.n_scored),
        "models": {
            name: {key: clean(m[key]) for key in RANK_METRICS}
            for name, m in result.metrics().items()
        },
    }
