"""The demo's last step: how well did what ``recommend`` serves from Redis
match the simulator's truth, next to "most popular"?

For each scored user (those with at least ``min_events`` events, the heaviest
first, at most ``max_users``) the *true best* videos are the ``k`` unwatched
ones with the highest true expected minutes if shown,

    P_true(start) x E_true[minutes | start],

P_true from :meth:`model.simulate.Truth.choice_probabilities` (taste times
popularity, what the simulator drew the starts from) and E_true[minutes] =
exp(m + sigma^2 / 2) - 1 of the true log1p-minutes model. Two figures per
ranker, averaged over the users:

* ``overlap@k``: the share of the served top k that is in the true top k;
* ``value share``: the true expected minutes of the served k over those of
  the true best k (1 = as good as knowing the truth).

``popularity`` serves every user the most-started videos of the whole stream
they have not watched. The served lists come through the reader library
(``Lookup.recommend_many``, the ``mean`` strategy, watched videos excluded):
what another service gets.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.simulate import Truth
from streamer.reader.lookup import Lookup


def load_truth(path: Path) -> Truth:
    """The truth ``hpmf simulate`` saved beside the events (``OUT.truth.npz``)."""
    with np.load(path) as z:
        return Truth(**{name: (z[name] if z[name].ndim else z[name].item()) for name in z.files})


def watched_by_user(events: Path, max_minutes: float = 1440.0) -> dict[str, list[str]]:
    """Each user's watched videos, in stream order (the events file's), as
    the service applied them: an event above the service's minutes cap
    (``HPMF_MAX_MINUTES``, default 1440; the simulator draws a few) was
    dead-lettered, so the service does not know it was watched."""
    out: dict[str, list[str]] = {}
    with events.open() as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)
        for r in rows:
            if float(r[2]) <= max_minutes:
                out.setdefault(r[0], []).append(r[1])
    return out


@dataclass
class TruthReport:
    users: list[str]
    k: int
    overlap: dict[str, float]  # ranker -> mean overlap@k with the true best k
    value_share: dict[str, float]  # ranker -> mean share of the true best k's expected minutes
    distinct_lists: dict[str, int]  # ranker -> distinct top-k lists among the users
    served: dict[str, list[str]]  # user -> served top k
    true_best: dict[str, list[str]]  # user -> true best k
    pair: tuple[str, str]  # two scored users whose true tastes differ most
    pair_cosine: float


def served_vs_truth(
    events: Path,
    truth_path: Path,
    redis_url: str,
    prefix: str,
    k: int = 5,
    min_events: int = 3,
    max_users: int = 400,
) -> TruthReport:
    truth = load_truth(truth_path)
    watched = watched_by_user(events)
    starts = Counter(v for vids in watched.values() for v in vids)
    users = sorted(
        (u for u, v in watched.items() if len(v) >= min_events), key=lambda u: (-len(watched[u]), u)
    )
    users = users[:max_users]
    if not users:
        raise ValueError(f"no user with {min_events} or more events in {events}")
    urow = {str(u): i for i, u in enumerate(truth.user_ids.tolist())}
    vids = [str(v) for v in truth.video_ids.tolist()]
    vrow = {v: j for j, v in enumerate(vids)}
    rows = np.array([urow[u] for u in users])
    p_start = truth.choice_probabilities(rows)  # (users, videos)
    all_v = np.arange(len(vids))
    m = truth.mean(np.repeat(rows, len(vids)), np.tile(all_v, len(rows))).reshape(
        len(rows), len(vids)
    )
    value = p_start * np.expm1(m + 0.5 * truth.sigma**2)
    pop_order = [v for v, _ in starts.most_common()] + [v for v in vids if v not in starts]

    lookup = Lookup.from_url(redis_url, prefix)
    recs = lookup.recommend_many(users, k=k, strategy="mean")
    served = {u: r.video_ids for u, r in zip(users, recs, strict=True)}
    lists: dict[str, dict[str, list[str]]] = {"hpmf (recommend)": served, "popularity": {}}
    true_best: dict[str, list[str]] = {}
    for i, u in enumerate(users):
        seen = set(watched[u])
        val = value[i].copy()
        val[[vrow[v] for v in seen if v in vrow]] = -np.inf
        true_best[u] = [vids[j] for j in np.argsort(-val, kind="stable")[:k]]
        lists["popularity"][u] = [v for v in pop_order if v not in seen][:k]

    overlap, share, distinct = {}, {}, {}
    for name, by_user in lists.items():
        ov, sh = [], []
        for i, u in enumerate(users):
            best = true_best[u]
            got = by_user[u]
            ov.append(len(set(got) & set(best)) / k)
            best_val = value[i, [vrow[v] for v in best]].sum()
            got_val = value[i, [vrow[v] for v in got if v in vrow]].sum()
            sh.append(got_val / best_val if best_val > 0 else 0.0)
        overlap[name], share[name] = float(np.mean(ov)), float(np.mean(sh))
        distinct[name] = len({tuple(by_user[u]) for u in users})

    # Two of the heaviest scored users whose true tastes differ most.
    heavy = rows[: min(30, len(rows))]
    taste = truth.U[heavy]
    norm = taste / np.maximum(np.linalg.norm(taste, axis=1, keepdims=True), 1e-12)
    cos = norm @ norm.T
    a, b = np.unravel_index(np.argmin(cos), cos.shape)
    return TruthReport(
        users=users,
        k=k,
        overlap=overlap,
        value_share=share,
        distinct_lists=distinct,
        served=served,
        true_best=true_best,
        pair=(users[int(a)], users[int(b)]),
        pair_cosine=float(cos[a, b]),
    )


def render(rep: TruthReport, watched_counts: dict[str, int]) -> str:
    """The report as the demo prints it."""
    k = rep.k
    lines = [
        f"served top {k} vs the simulator's truth, {len(rep.users)} users with >= 3 events "
        f"(true best = the {k} unwatched videos with the highest true P(start) x E[minutes | start])",
        f"  {'ranker':<18} {'overlap@' + str(k):>10} {'value share':>12} {'distinct lists':>15}",
    ]
    for name in rep.overlap:
        lines.append(
            f"  {name:<18} {rep.overlap[name]:>10.3f} {rep.value_share[name]:>12.3f} "
            f"{rep.distinct_lists[name]:>15d}"
        )
    a, b = rep.pair
    lines.append(
        f"two users whose true tastes differ (cosine {rep.pair_cosine:+.2f} between their true taste vectors):"
    )
    for u in (a, b):
        lines.append(f"  {u} ({watched_counts[u]} events) served: {' '.join(rep.served[u])}")
        lines.append(
            f"  {u:>{len(u)}} {'':>{len(str(watched_counts[u])) + 9}} true best: {' '.join(rep.true_best[u])}"
        )
    common = len(set(rep.served[a]) & set(rep.served[b]))
    lines.append(f"  their served lists share {common} of {k} videos")
    return "\n".join(lines)
