"""The ranking protocol: metric math (hand-computed), the replay's rules, the
baselines, the choice component's closed forms, and ``hpmf evaluate --protocol ranking``."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from model.choice import ChoiceConfig, ChoiceModel, user_step
from model.ranking import (
    Cooccurrence,
    DecayedPopularity,
    Popularity,
    Tally,
    rank_of,
    ranking_metrics,
)
from streamer.cli import evaluate as evaluate_cli
from streamer.evaluation.ranking_eval import RANK_RUNGS, make_rankers, ranking_report, run_ranking
from streamer.files.events_file import write_events
from streamer.reader.lookup_math import top_k


# ---------------------------------------------------------------- metric math
def test_metrics_by_hand() -> None:
    # ranks 1, 2, 4, 10, 11: hits 4 of 5; NDCG terms 1, 1/log2(3), 1/log2(5), 1/log2(11), 0
    m = ranking_metrics(np.array([1, 2, 4, 10, 11]))
    assert m["hit10"] == pytest.approx(0.8)
    assert m["ndcg10"] == pytest.approx(
        (1 + 1 / math.log2(3) + 1 / math.log2(5) + 1 / math.log2(11)) / 5
    )
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 10 + 1 / 11) / 5)
    assert ranking_metrics(np.array([11, 50]))["hit10"] == 0.0
    assert math.isnan(ranking_metrics(np.array([], dtype=int))["hit10"])
    with pytest.raises(ValueError, match="1-based"):
        ranking_metrics(np.array([0]))


def test_rank_breaks_ties_as_top_k_does() -> None:
    s = np.array([1.0, 3.0, 3.0, 2.0, -np.inf, 3.0])
    order = top_k(s, 6).tolist()
    assert order == [1, 2, 5, 3, 0]
    for pos, row in enumerate(order, start=1):
        assert rank_of(s, row) == pos
    assert rank_of(s, 4) == 6  # a non-finite score ranks last


def test_catalogue_share_counts_distinct_shown_videos() -> None:
    t = Tally()
    t.add(3, [0, 1, 2])
    t.add(20, [2, 3, 4])
    m = t.metrics(10)
    assert m["catalogue_share"] == 0.5
    assert m["hit10"] == 0.5 and m["mrr"] == pytest.approx((1 / 3 + 1 / 20) / 2)


# ---------------------------------------------------------------- baselines
def test_popularity_and_decayed_popularity() -> None:
    p, d = Popularity(), DecayedPopularity(half_life=2.0)
    for row in [0, 0, 1]:
        p.observe([], row)
        d.observe([], row)
    assert p.scores([], 3).tolist() == [2.0, 1.0, 0.0]
    # weights of the events at ages 2, 1, 0 (half-life 2): 0.5, 2^-0.5, 1
    assert d.scores([], 3) == pytest.approx([0.5 + 2**-0.5, 1.0, 0.0])


def test_cooccurrence_scores_neighbours_of_recent_history() -> None:
    c = Cooccurrence(recent=1, pop_weight=0.0)
    # user A: 0 then 1; user B: 0 then 2; user C: 3 then 2
    for hist, row in [([], 0), ([0], 1), ([], 0), ([0], 2), ([], 3), ([3], 2)]:
        c.observe(hist, row)
    s = c.scores([3, 0], 4)  # only the last video (0) counts with recent=1
    assert s == pytest.approx([0.0, 1 / math.sqrt(2), 1 / 2, 0.0])


# ---------------------------------------------------------------- the replay
class Spy:
    """Scores: the number of events it has learned, at every video; records calls."""

    def __init__(self) -> None:
        self.learned = 0
        self.calls: list[tuple[str, tuple[int, ...], int, int]] = []

    def scores(self, user: str, history: Sequence[int], n_videos: int) -> np.ndarray:
        self.calls.append((user, tuple(history), n_videos, self.learned))
        return -np.arange(n_videos, dtype=np.float64)  # row 0 best

    def learn(self, users: list[str], videos: list[str], values: np.ndarray, rows: list[int],
              histories: list[Sequence[int]]) -> None:  # fmt: skip
        self.learned += len(users)


def test_replay_scores_every_kth_event_after_warmup_with_earlier_states() -> None:
    users = ["a", "b", "a", "b", "a", "c", "a", "b"]
    videos = ["x", "y", "y", "x", "z", "x", "x", "z"]
    spy = Spy()
    cat: dict[str, int] = {}
    res = run_ranking(users, videos, np.ones(8), {"spy": spy}, cat, every=2, warmup=3)
    # positions 3, 5, 7 are due: (b, x) scored; (c, x) scored; (b, z) scored. Position 6 (a, x)
    # would be a rewatch but is not due.
    assert res.n_scored == 3
    assert [c[0] for c in spy.calls] == ["b", "c", "b"]
    assert [c[3] for c in spy.calls] == [3, 5, 7]  # learned exactly the events before
    assert spy.calls[0][1] == (cat["y"],)  # b's history before position 3
    # b at 3 watched x (row 0): rank 1 since y (row 1) is excluded
    assert res.tallies["spy"].ranks[0] == 1
    assert res.n_catalogue == 3


def test_replay_skips_unseen_videos_and_rewatches() -> None:
    spy = Spy()
    res = run_ranking(["a", "a", "b", "a"], ["x", "y", "z", "x"], np.ones(4), {"s": spy}, {})
    # pos 0: x unseen; pos 1: y unseen; pos 2: z unseen; pos 3: a rewatches x
    assert res.n_scored == 0 and spy.calls == []


def test_replay_minibatch_uses_states_from_before_the_batch() -> None:
    spy = Spy()
    run_ranking(
        ["a", "b", "c", "d"], ["x", "x", "x", "x"], np.ones(4), {"s": spy}, {}, batch_size=2
    )
    assert [c[3] for c in spy.calls] == [2, 2]  # events 2 and 3 both scored after learning 0-1


# ---------------------------------------------------------------- choice component
def test_user_step_matches_dense_weighted_least_squares() -> None:
    rng = np.random.default_rng(0)
    k, n_videos = 3, 12
    q = rng.normal(size=(n_videos, k + 1))
    watched = np.array([1, 4, 7])
    conf_w = np.array([5.0, 3.0, 9.0])
    w0, prior_var = 0.5, np.full(k, 0.7)
    mean, cov = user_step(q[watched], np.zeros((3, k + 1, k + 1)), conf_w, q.T @ q, np.zeros(k),
                          prior_var, w0)  # fmt: skip
    # the same posterior from the full (all videos) weighted least squares
    c = np.full(n_videos, w0)
    c[watched] = conf_w
    p = np.zeros(n_videos)
    p[watched] = 1.0
    z, e = q[:, :k], q[:, k]
    prec = np.diag(1 / prior_var) + (z * c[:, None]).T @ z
    want = np.linalg.solve(prec, (z * c[:, None]).T @ (p - e))
    assert mean == pytest.approx(want)
    assert cov == pytest.approx(np.linalg.inv(prec))


def test_choice_model_learns_who_starts_what() -> None:
    # two groups of users with disjoint catalogues: after learning, a user of
    # group A scores A's unwatched videos above B's.
    rng = np.random.default_rng(1)
    m = ChoiceModel(ChoiceConfig(n_factors=2, sweep_every=50, prior_scale=0.5))
    states: dict = {}
    for _ in range(800):
        g = int(rng.integers(2))
        u = f"{'AB'[g]}{rng.integers(30)}"
        v = f"{'AB'[g]}v{rng.integers(8)}"
        states[u] = m.learn_event(u, v, states.get(u))
    m.sweep()
    hits = 0
    for u, st in states.items():
        s = m.score_all(st)
        own = np.array([vid[0] == u[0] for vid in m.video_ids])
        hits += s[own].mean() > s[~own].mean()
    assert hits == len(states)


# ---------------------------------------------------------------- the CLI
def _args(events: Path, out: Path, **kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    argv = [str(events), "--protocol", "ranking", "--json", str(out), "--quiet"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", *(v if isinstance(v, list) else [str(v)])]
    return parser.parse_args(argv)


def test_cli_writes_the_ranking_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    n = 250
    users = [f"u{x}" for x in rng.integers(40, size=n)]
    videos = [f"v{x}" for x in rng.zipf(1.5, size=n) % 30]
    events = tmp_path / "e.tsv"
    write_events(events, users, videos, rng.uniform(1, 5, n), np.arange(n, dtype=float))
    out = tmp_path / "r.json"
    assert evaluate_cli.run(_args(events, out, every=4, warmup=60)) == 0
    rep = json.loads(out.read_text())
    assert set(rep) == {"protocol", "n_scored", "models"}
    assert rep["protocol"] == "ranking" and rep["n_scored"] > 10
    assert list(rep["models"]) == list(RANK_RUNGS)
    for m in rep["models"].values():
        assert set(m) == {"hit10", "ndcg10", "mrr", "catalogue_share"}
        assert 0.0 <= m["ndcg10"] <= m["hit10"] <= 1.0 and 0.0 < m["catalogue_share"] <= 1.0
    assert "hit10" in capsys.readouterr().out


def test_cli_rejects_unknown_rungs_and_bad_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "e.tsv"
    write_events(events, ["a"], ["x"], np.ones(1), np.zeros(1))
    assert evaluate_cli.run(_args(events, tmp_path / "o.json", models=["svd"])) == 2
    assert "unknown ranking rung" in capsys.readouterr().err
    assert evaluate_cli.run(_args(events, tmp_path / "o.json", every=0)) == 2
    assert not (tmp_path / "o.json").exists()


def test_report_shape_matches_the_issue() -> None:
    cat: dict[str, int] = {}
    rk = make_rankers(["popularity"], cat)
    res = run_ranking(["a", "b"], ["x", "x"], np.ones(2), rk, cat)
    rep = ranking_report(res)
    assert rep == {"protocol": "ranking", "n_scored": 1,
                   "models": {"popularity": {"hit10": 1.0, "ndcg10": 1.0, "mrr": 1.0, "catalogue_share": 1.0}}}  # fmt: skip


def test_implicit_peers_are_skipped_with_a_message_without_the_package() -> None:
    from benchmarks.implicit_peers import SKIP_MESSAGE, available, implicit_rankers

    peers = implicit_rankers(50)
    if not available():
        assert peers == {} and "implicit" in SKIP_MESSAGE
        return
    assert set(peers) == {"implicit_als", "implicit_bpr"}
    als = peers["implicit_als"]
    for k in range(60):  # two groups of users, each starting its own two videos
        als.learn([f"u{k}"], ["a"], np.zeros(1), [2 * (k % 2)], [()])
        als.learn([f"u{k}"], ["b"], np.zeros(1), [2 * (k % 2) + 1], [(2 * (k % 2),)])
    s = als.scores("new", [0], 4)
    assert s.shape == (4,) and s[1] > s[3]
