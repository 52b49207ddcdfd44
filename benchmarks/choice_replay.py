"""Exploration replay with the choice component (``lookup.v2_regret_*``; part of
``python -m benchmarks.run lookup``): what ``recommend`` serves since issue #13,
expected minutes if shown = P(start) x E[minutes | start], against a population
whose starts follow taste.

Truth (seeded): minutes as in :func:`benchmarks.lookup_bench.replay` (log1p scale
b0 + u.v + b + c + noise, minutes = expm1 of it clipped at 0); choice affinity
g_ij = e_j + beta a_i.z_j / sqrt(K) (a popularity offset e_j and a taste term).
A user *browsing* starts an unwatched video j with probability proportional to
exp(g_ij) (a softmax choice, like ``hpmf simulate --choice-strength``); a user
*shown* video j starts it with probability sigmoid(g_ij - g0) (the softmax
between j and not watching, an outside option of weight exp(g0)), and then
watches E[minutes | start]_ij on average. So the value of showing j is
V_ij = sigmoid(g_ij - g0) x E[minutes | start]_ij.

Each round every user first starts one video by browsing (not scored: the
taste evidence that arrives whatever is recommended), then is shown one
recommendation through the full path (``Lookup.recommend_many`` over version 2
records the learners wrote) and starts it or not. Regret of a round = the best
V_ij among the user's unwatched videos minus V of the shown one, in minutes;
reported per user, summed over the rounds (``_last10``: the last 10 rounds).
``hit_rate``: shown video in the user's true top 10 by V. The learners see
what the service sees: the started videos and their minutes (no impressions).
Baseline ``popularity``: the unwatched video with the most starts so far times
its shrunk average minutes (non-personalised expected minutes).

``browsing=False`` (keys ``lookup.v2_nobrowse_*``): no browsing after the two
seed starts, so every later start comes from a recommendation (the classic
bandit protocol: what the policy does not show, the model never learns).
"""

from __future__ import annotations

import math
import time
import uuid

import numpy as np

from benchmarks.env import REDIS_URL
from benchmarks.lookup_bench import (
    REPLAY_WARMUP_EVENTS,
    THOMPSON_DRAWS,
    average_runs,
    delete_prefix,
    recommended_picks,
    replay_minutes_model,
    replay_plan,
    score_picks,
)
from streamer.reader.lookup import Lookup
from streamer.reader.redis_record import (
    global_record_from_snapshot,
    queue_user_record,
    user_record_from_state,
    with_choice,
    write_global_record,
)
from streamer.service.connections import redis_client


def _expected_minutes(m: np.ndarray, sigma: float) -> np.ndarray:
    """E[expm1(max(X, 0))] for X ~ N(m, sigma^2): e^(m + s^2/2) Phi((m + s^2)/s) - Phi(m/s)."""
    phi = np.vectorize(lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0))))
    return np.exp(m + sigma**2 / 2) * phi((m + sigma**2) / sigma) - phi(m / sigma)


def replay_choice(
    n_users: int = 200,
    n_videos: int = 150,
    k: int = 3,
    rounds: int = 30,
    beta: float = 2.0,
    g0: float = 1.5,
    seed: int = 0,
    strategies: tuple[str, ...] = ("popularity", "mean", "ucb", "thompson"),
    browsing: bool = True,
    warmup_events: int = REPLAY_WARMUP_EVENTS,
    thompson_draws: int = THOMPSON_DRAWS,
) -> dict[str, float]:
    """``warmup_events``: the minutes model's replay warm-up (the service's
    10,000 exceeds this replay's ~9,500 events: see
    :data:`benchmarks.lookup_bench.REPLAY_WARMUP_EVENTS`); ``thompson_draws``:
    Thompson's regret is the average over this many draw seeds (``*_se``: its
    standard error)."""
    from model.batch import Batch
    from model.choice import ChoiceConfig, ChoiceModel, ChoiceState
    from model.posterior import UserState

    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in range(n_users)]
    videos = [f"v{j}" for j in range(n_videos)]
    index = {v: j for j, v in enumerate(videos)}
    tu, tb = rng.normal(0, 0.7, (n_users, k)), rng.normal(0, 0.3, n_users)
    tv, tc = rng.normal(0, 0.7, (n_videos, k)), rng.normal(0, 0.5, n_videos)
    b0, sigma = 3.0, 0.5
    log_mean = b0 + tu @ tv.T + tb[:, None] + tc[None, :]
    ta, tz, te = (
        rng.normal(0, 1, (n_users, k)),
        rng.normal(0, 1, (n_videos, k)),
        rng.normal(0, 1, n_videos),
    )
    g = te[None, :] + beta * (ta @ tz.T) / math.sqrt(k)
    value = _expected_minutes(log_mean, sigma) / (1.0 + np.exp(-(g - g0)))  # V_ij
    top10 = np.argsort(-value, axis=1)[:, :10]
    # Shared by all strategies: the browsing draws' uniforms, the start coins, the noise.
    u_browse = rng.random((rounds + 1, 2, n_users))
    u_start = rng.random((rounds + 1, n_users))
    noise = rng.normal(0, sigma, (rounds + 1, 2, n_users))

    key = "lookup.v2_" if browsing else "lookup.v2_nobrowse_"
    client = redis_client(url=REDIS_URL)
    out: dict[str, float] = {}
    runs: dict[str, list[tuple[float, float, float]]] = {}
    plan = replay_plan(strategies, thompson_draws)
    try:
        for strategy, draw in plan:
            prefix = f"bench-creplay-{uuid.uuid4().hex[:8]}"
            model = replay_minutes_model(k, seed, warmup_events)
            choice = ChoiceModel(ChoiceConfig(n_factors=k, sweep_every=500))
            lk = Lookup(client, prefix, refresh_interval_ms=0)
            states: dict[str, UserState] = {}
            cstates: dict[str, ChoiceState] = {}
            watched = np.zeros((n_users, n_videos), dtype=bool)
            starts, sums = np.zeros(n_videos), np.zeros(n_videos)

            def browse(r: int, s: int, _w: np.ndarray = watched) -> list[tuple[int, int, float]]:
                ev = []
                for i in range(n_users):
                    p = np.where(_w[i], 0.0, np.exp(g[i] - g[i].max()))
                    j = int(np.searchsorted(np.cumsum(p), u_browse[r, s, i] * p.sum()))
                    ev.append((i, min(j, n_videos - 1), float(noise[r, s, i])))
                return ev

            def learn(
                events: list[tuple[int, int, float]],
                r: int,
                _m=model,
                _c=choice,
                _p=prefix,
                _s=states,
                _cs=cstates,
                _w=watched,
                _n=starts,
                _sum=sums,
            ) -> None:  # noqa: E501
                vals = [float(np.expm1(max(log_mean[i, j] + e, 0.0))) for i, j, e in events]
                batch = Batch.of(
                    [users[i] for i, _, _ in events], [videos[j] for _, j, _ in events], vals
                )
                _s.update(_m.learn(batch, _s))
                for (i, j, _), v in zip(events, vals, strict=True):
                    _cs[users[i]] = _c.learn_event(users[i], videos[j], _cs.get(users[i]))
                    _w[i, j] = True
                    _n[j] += 1
                    _sum[j] += v
                now = int(time.time() * 1000)
                rec = with_choice(global_record_from_snapshot(_m.export_globals(), now), _c)
                write_global_record(client, _p, rec, ttl_s=600)
                pipe = client.pipeline(transaction=True)
                for i in sorted({i for i, _, _ in events}):
                    uid = users[i]
                    ur = user_record_from_state(
                        _s[uid], updated_ms=now, event_ms=now, partition=0, offset=r
                    )
                    cst = _cs[uid]
                    assert cst.mean is not None and cst.cov is not None
                    ur.choice_mean = _c.served_means([cst.history], cst.mean[None])[0]
                    ur.choice_cov = _c.served_cov(cst.cov)  # as the worker writes it
                    queue_user_record(pipe, _p, uid, ur, ttl_s=600)
                pipe.execute()

            learn(browse(0, 0), 0)
            learn(browse(0, 1), 0)
            regret, late = np.zeros(n_users), np.zeros(n_users)
            hits = 0
            for r in range(1, rounds + 1):
                if browsing:
                    learn(browse(r, 0), r)
                if strategy == "popularity":
                    avg = (sums + 5 * sums.sum() / max(starts.sum(), 1)) / (starts + 5)
                    pop = (starts + 1) * avg
                    picks = [
                        int(np.argmax(np.where(watched[i], -np.inf, pop))) for i in range(n_users)
                    ]
                else:
                    picks = recommended_picks(lk, users, index, strategy, r, draw)
                hits += score_picks(
                    picks, watched, value, top10, regret, late if r > rounds - 10 else None
                )
                shown = [
                    (i, j, float(noise[r, 1, i]))
                    for i, j in enumerate(picks)
                    if u_start[r, i] < 1.0 / (1.0 + math.exp(-(g[i, j] - g0)))
                ]
                if shown:
                    learn(shown, r)
            runs.setdefault(strategy, []).append(
                (float(regret.mean()), float(late.mean()), hits / (n_users * rounds))
            )
            delete_prefix(client, prefix)
    finally:
        client.close()
    average_runs(out, runs, key)
    return out


if __name__ == "__main__":
    for key, val in (replay_choice() | replay_choice(browsing=False)).items():
        print(f"{key:<40} {val:.4g}")
