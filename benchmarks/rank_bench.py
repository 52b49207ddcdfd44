"""Ranking suite (issue #13): does ``recommend`` beat "most popular"?

    python -m benchmarks.run rank

Figures (prequential ranking, minibatch 1, :mod:`streamer.evaluation.ranking_eval`):

    rank.hpmf_hit10, rank.hpmf_ndcg10          MovieLens 100K, every 40th event after 20,000
    rank.popularity_hit10, rank.decayed_popularity_hit10, rank.cooccurrence_hit10
    rank.popularity_ndcg10, rank.n_scored
    rank.sim_hpmf_hit10, rank.sim_choice_hit10, rank.sim_popularity_hit10, rank.sim_hit10_ratio
                                               the taste-driven simulator (:data:`SIM`)

The MovieLens part replays 100,000 events through the minutes model and the
choice component after every event: about 10 minutes on an idle core.
``implicit``'s ALS and BPR (:mod:`benchmarks.implicit_peers`, retrained every
2,000 events) run beside them as development-only peers when the package is
installed (``rank.implicit_als_hit10``, ...); without it they are skipped with a
message.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from benchmarks.implicit_peers import SKIP_MESSAGE, implicit_rankers
from benchmarks.movielens import movielens_100k
from model.evaluate import warm_up
from model.simulate import SimConfig, simulate
from streamer.evaluation.ranking_eval import make_rankers, run_ranking
from streamer.files.events_file import read_events

ML_RUNGS = ("popularity", "decayed_popularity", "cooccurrence", "hpmf")
SIM = SimConfig(days=7, users_per_day=1000, heavy_fraction=0.3, heavy_mean_views=30.0, choice_strength=3.0,
                seed=11)  # fmt: skip
"""The taste simulator of the suite: taste drives what is started (choice strength 3),
and enough users come back (30% heavy watchers, 30 views on average over days)
that there is taste to learn: on events scored after a user's 3rd, ranking by the
true choice probabilities reaches hit@10 0.64 where popularity reaches 0.23 (3 days)."""
SIM_EVERY, SIM_WARMUP = 5, 4000
PEER_RETRAIN_EVERY = 2000
"""implicit's ALS/BPR peers are retrained from scratch every this many events."""
SIM_RUNGS = ("popularity", "decayed_popularity", "cooccurrence", "choice", "hpmf")


def ranking_figures(
    users: list[str], videos: list[str], values: np.ndarray, names: tuple[str, ...], every: int,
    warmup: int, peers: bool = False, **kw: Any,
) -> tuple[int, dict[str, dict[str, float]]]:  # fmt: skip
    """``peers``: add implicit's ALS/BPR (development only; skipped with a message
    when the package is not installed)."""
    cat: dict[str, int] = {}
    rankers: dict[str, Any] = dict(make_rankers(names, cat, **kw))
    if peers:
        extra = implicit_rankers(PEER_RETRAIN_EVERY)
        if not extra:
            print(f"   {SKIP_MESSAGE}", flush=True)
        rankers.update(extra)
    res = run_ranking(users, videos, values, rankers, cat, every=every, warmup=warmup)
    return res.n_scored, res.metrics()


def simulated() -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    sim = simulate(SIM)
    n, m = ranking_figures(sim.user_ids.tolist(), sim.video_ids.tolist(), sim.values,
                           SIM_RUNGS, SIM_EVERY, SIM_WARMUP, transform="log1p")  # fmt: skip
    out = {"rank.sim_n_scored": float(n)}
    for name in SIM_RUNGS:
        out[f"rank.sim_{name}_hit10"] = m[name]["hit10"]
        out[f"rank.sim_{name}_ndcg10"] = m[name]["ndcg10"]
    out["rank.sim_hit10_ratio"] = out["rank.sim_hpmf_hit10"] / out["rank.sim_popularity_hit10"]
    return out


def movielens() -> dict[str, float]:
    ev = read_events(movielens_100k())
    n, m = ranking_figures(ev.user_ids.tolist(), ev.video_ids.tolist(), ev.values, ML_RUNGS, 40, 20_000,
                           peers=True, global_mean_prior=3.0)  # fmt: skip
    out = {"rank.n_scored": float(n)}
    for name in (*ML_RUNGS, *(p for p in ("implicit_als", "implicit_bpr") if p in m)):
        out[f"rank.{name}_hit10"] = m[name]["hit10"]
        out[f"rank.{name}_ndcg10"] = m[name]["ndcg10"]
    return out


def run() -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    warm_up()
    # The two parts are independent single-threaded replays: the simulator's in
    # a child process beside MovieLens, so the suite takes the longer of the two.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        sim = pool.submit(simulated)
        out = movielens()
        out.update(sim.result())
    print(f"   simulator: hpmf hit@10 {out['rank.sim_hpmf_hit10']:.4f} vs popularity "
          f"{out['rank.sim_popularity_hit10']:.4f}", flush=True)  # fmt: skip
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
