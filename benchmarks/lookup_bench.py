"""Reader benchmarks against the real local Redis (``python -m benchmarks.run lookup``).

1. Latency. 10,000 videos, D = 11 (k = 10 plus a bias), 1,000 users with
   20-video histories, written with the streamer's codec under a unique prefix
   (deleted afterwards). Timed interleaved, per call, same random user key:
   a bare redis-py ``HGETALL`` versus ``Lookup.user_posterior`` (HGETALL +
   decode + the pointer check every 1000 ms, the default), and
   ``Lookup.recommend(k=10)`` over all 10,000 videos with the cache warm,
   in wall time and in the calling thread's CPU time (``*_cpu_*``); then the
   same over version 2 records (the choice component; ``lookup.v2_*``).
   ``python -m benchmarks.lookup_bench --latency-only [N]`` prints just these.

2. Exploration replay. A synthetic population drawn from the model (true user
   and video factors, Gaussian noise on the log1p scale, minutes = expm1). Every
   round each user is shown one video chosen through the full path: OnlineHPMF
   learns the round's watches, the globals and user records are written to
   Redis with the codec, and ``Lookup.recommend_many`` reads them back. Regret
   of a recommendation = best true expected log1p(minutes) among the user's
   unwatched videos minus that of the recommended one; reported per user,
   summed over the rounds, for mean, UCB and Thompson against a
   non-personalised popularity baseline (best shrunk average of the observed
   minutes); ``regret_last10`` sums the last 10 rounds only (after learning).
   ``hit_rate`` = share of recommendations in the user's true top 10.
   The minutes model's replay warm-up is :data:`REPLAY_WARMUP_EVENTS` (not the
   service's 10,000, more than the replay's events), and Thompson's figures
   are averages over :data:`THOMPSON_DRAWS` draw seeds (``*_se``: the
   standard error of its regret).

3. The same with the choice component (``lookup.v2_regret_*``):
   :mod:`benchmarks.choice_replay`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import redis

from benchmarks.env import REDIS_URL
from streamer.reader.lookup import Lookup
from streamer.reader.redis_record import (
    GlobalRecord,
    UserRecord,
    global_record_from_snapshot,
    queue_user_record,
    user_record_from_state,
    write_global_record,
)
from streamer.service.connections import redis_client

if TYPE_CHECKING:
    from model.online import OnlineHPMF


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key under ``prefix`` (a replay's records), 500 per DEL."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


def score_picks(
    picks: list[int],
    watched: np.ndarray,
    value: np.ndarray,
    top10: np.ndarray,
    regret: np.ndarray,
    late: np.ndarray | None,
) -> int:
    """One round of a replay: add each user's regret (the best ``value`` among
    their unwatched videos minus that of the pick) to ``regret``, and to
    ``late`` when given (the last rounds); returns how many picks were in the
    user's true top 10."""
    hits = 0
    for i, j in enumerate(picks):
        assert not watched[i, j], "a watched video was recommended"
        best = np.max(np.where(watched[i], -np.inf, value[i]))
        regret[i] += best - value[i, j]
        if late is not None:
            late[i] += best - value[i, j]
        hits += int(j in top10[i])
    return hits


# The minutes model's replay warm-up in the two replays. The service default
# (HPMFConfig.replay_warmup_events = 10,000, sized for a stream) exceeds the
# replays themselves (~6,400 events here, ~9,500 in the choice replay), so its
# replay sweeps, which are what teach the video factors taste, never ran and
# the minutes model stayed taste-free (u.v sd across videos 0.001 / 0.007 /
# 0.085 at rounds 5 / 15 / 29 in the choice replay against the truth's 0.79).
# 1,000 events is the seed watches plus the first 2-3 rounds.
REPLAY_WARMUP_EVENTS = 1000
# Thompson draws its scores at random: one run's regret moves by ~150 minutes
# with its draw seed alone (choice replay seed 0: 3493..3866), so the replays
# report the average over this many draw seeds (and its standard error, *_se).
THOMPSON_DRAWS = 8
DRAW_SEED_STEP = 1000  # draw d of round r uses seed r + d x this


def replay_plan(strategies: Sequence[str], thompson_draws: int) -> list[tuple[str, int]]:
    """A replay's (strategy, draw) runs: one for each deterministic strategy,
    ``thompson_draws`` for Thompson (its draw seeds, :data:`DRAW_SEED_STEP`)."""
    return [(s, d) for s in strategies for d in range(thompson_draws if s == "thompson" else 1)]


def replay_minutes_model(k: int, seed: int, warmup_events: int) -> OnlineHPMF:
    """The minutes model a replay learns with: the service's defaults but a
    warm-up that fits the replay (:data:`REPLAY_WARMUP_EVENTS`)."""
    from model.config import HPMFConfig
    from model.online import OnlineHPMF

    return OnlineHPMF(
        HPMFConfig(
            n_factors=k,
            transform="log1p",
            seed=seed,
            svi_min_events=200,
            replay_warmup_events=warmup_events,
        )
    )


def recommended_picks(
    lk: Lookup, users: list[str], index: dict[str, int], strategy: str, r: int, draw: int
) -> list[int]:
    """Each user's top recommendation in round ``r`` as a video row; Thompson's
    draw ``draw`` uses seed r + DRAW_SEED_STEP x draw."""
    recs = lk.recommend_many(
        users,
        k=1,
        strategy=strategy,  # type: ignore[arg-type]
        seed=r + DRAW_SEED_STEP * draw,
    )
    return [index[x.items[0].video_id] for x in recs]


def average_runs(
    out: dict[str, float], runs: dict[str, list[tuple[float, float, float]]], key: str
) -> None:
    """Write each strategy's (regret, regret_last10, hit_rate) to ``out``
    under ``key``; a strategy run more than once (Thompson's draw seeds) gets
    the averages and ``regret_se``, the standard error of its mean regret."""
    for strategy, rows in runs.items():
        a = np.asarray(rows)
        out[f"{key}regret_{strategy}"] = float(a[:, 0].mean())
        out[f"{key}regret_last10_{strategy}"] = float(a[:, 1].mean())
        out[f"{key}hit_rate_{strategy}"] = float(a[:, 2].mean())
        if len(a) > 1:
            out[f"{key}regret_{strategy}_se"] = float(a[:, 0].std(ddof=1) / np.sqrt(len(a)))


def _ms(samples_ns: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(samples_ns) / 1e6, q))


# ---------------------------------------------------------------- latency
def synthetic_globals(n_videos: int, k: int, rng: np.random.Generator) -> GlobalRecord:
    d = k + 1
    a = rng.normal(0, 0.1, size=(n_videos, d, d))
    cov = a @ a.transpose(0, 2, 1) + 0.01 * np.eye(d)  # SPD
    return GlobalRecord(
        version=1,
        dim=d,
        n_factors=k,
        biases=True,
        transform="log1p",
        b0=3.0,
        sigma=0.5,
        prior_mean=np.zeros(d),
        prior_cov=0.25 * np.eye(d),
        video_ids=[f"video-{j}" for j in range(n_videos)],
        video_mean=rng.normal(0, 0.5, size=(n_videos, d)),
        video_cov=cov,
        video_scale=np.sqrt(np.diagonal(cov, axis1=1, axis2=2)),
        updated_ms=int(time.time() * 1000),
    )


def with_synthetic_choice(g: GlobalRecord, rng: np.random.Generator) -> GlobalRecord:
    """``g`` as a version 2 record with a random choice component of g's size."""
    import dataclasses

    v, d = g.n_videos, g.dim
    a = rng.normal(0, 0.05, size=(v, d, d))
    return dataclasses.replace(
        g,
        choice_prior_mean=np.zeros(d),
        choice_prior_cov=np.diag([0.09] * (d - 1) + [0.0]),
        choice_video_mean=rng.normal(0, 0.3, size=(v, d)),
        choice_video_cov=a @ a.transpose(0, 2, 1),
    )


def latency(
    iterations: int = 5000, n_videos: int = 10_000, k: int = 10, choice: bool = False
) -> dict[str, float]:
    """``choice``: a version 2 record (the choice component on top; keys ``lookup.v2_*``)."""
    client = redis_client(url=REDIS_URL)
    prefix = f"bench-lookup-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    try:
        g = synthetic_globals(n_videos, k, rng)
        if choice:
            g = with_synthetic_choice(g, rng)
        write_global_record(client, prefix, g, ttl_s=600)
        users = [f"user-{i}" for i in range(1000)]
        pipe = client.pipeline(transaction=False)
        d = k + 1
        for i, uid in enumerate(users):
            a = rng.normal(0, 0.1, size=(d, d))
            hist = [
                (f"video-{j}", 10.0, n + 1)
                for n, j in enumerate(rng.choice(n_videos, 20, replace=False))
            ]
            rec = UserRecord(
                rng.normal(0, 0.5, d),
                a @ a.T + 0.01 * np.eye(d),
                20,
                int(time.time() * 1000),
                int(time.time() * 1000),
                1,
                0,
                i,
                hist,
            )
            if choice:
                c = np.zeros((d, d))
                c[:-1, :-1] = 0.01 * np.eye(d - 1)
                rec.choice_mean, rec.choice_cov = np.r_[rng.normal(0, 0.3, d - 1), 0.0], c
            queue_user_record(pipe, prefix, uid, rec, ttl_s=600)
        pipe.execute()

        lk = Lookup(client, prefix)  # default refresh_interval_ms=1000
        keys = [f"{prefix}:u:{{{u}}}" for u in users]
        picks = rng.integers(0, len(users), size=iterations)
        for i in range(200):  # warm up connection, cache, numpy
            client.hgetall(keys[i])
            lk.user_posterior(users[i])
            lk.recommend(users[i], k=10)
        bare, post = [], []
        clock = time.perf_counter_ns
        for i in picks:
            t0 = clock()
            client.hgetall(keys[i])
            t1 = clock()
            lk.user_posterior(users[i])
            t2 = clock()
            bare.append(t1 - t0)
            post.append(t2 - t1)
        pre = "lookup.v2_" if choice else "lookup."
        out = {
            "lookup.bare_get_p50_ms": _ms(bare, 50),
            "lookup.bare_get_p99_ms": _ms(bare, 99),
            "lookup.user_posterior_p50_ms": _ms(post, 50),
            "lookup.user_posterior_p99_ms": _ms(post, 99),
        }
        out["lookup.posterior_vs_bare_ratio"] = (
            out["lookup.user_posterior_p99_ms"] / out["lookup.bare_get_p99_ms"]
        )
        cpu_clock = time.thread_time_ns
        for strategy in ("mean", "ucb", "thompson"):
            samples, cpu = [], []
            for n, i in enumerate(picks):
                c0, t0 = cpu_clock(), clock()
                r = lk.recommend(users[i], k=10, strategy=strategy, seed=n)  # type: ignore[arg-type]
                samples.append(clock() - t0)
                cpu.append(cpu_clock() - c0)
                assert len(r.items) == 10
            suffix = "" if strategy == "mean" else f"_{strategy}"
            out[f"{pre}recommend{suffix}_p50_ms"] = _ms(samples, 50)
            out[f"{pre}recommend{suffix}_p99_ms"] = _ms(samples, 99)
            # The calling thread's CPU time of the same calls (the Redis round
            # trip's wait and time descheduled excluded): on a shared machine
            # the wall p99 is mostly the scheduler's; this is what the code costs.
            out[f"{pre}recommend{suffix}_cpu_p50_ms"] = _ms(cpu, 50)
            out[f"{pre}recommend{suffix}_cpu_p99_ms"] = _ms(cpu, 99)
        if choice:  # only the recommend figures differ from the version 1 run
            return {key: val for key, val in out.items() if key.startswith(pre)}
        return out
    finally:
        delete_prefix(client, prefix)
        client.close()


# ---------------------------------------------------------------- exploration replay
def replay(
    n_users: int = 200,
    n_videos: int = 100,
    k: int = 3,
    rounds: int = 30,
    seed: int = 0,
    warmup_events: int = REPLAY_WARMUP_EVENTS,
    thompson_draws: int = THOMPSON_DRAWS,
) -> dict[str, float]:
    from model.batch import Batch

    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in range(n_users)]
    videos = [f"v{j}" for j in range(n_videos)]
    # truth: x = [u, b], w = [v, c]; value = b0 + u.v + b + c + noise
    tu, tb = rng.normal(0, 0.7, (n_users, k)), rng.normal(0, 0.3, n_users)
    tv, tc = rng.normal(0, 0.7, (n_videos, k)), rng.normal(0, 0.5, n_videos)
    b0, sigma = 3.0, 0.5
    true_mean = b0 + tu @ tv.T + tb[:, None] + tc[None, :]  # (users, videos)
    top10 = np.argsort(-true_mean, axis=1)[:, :10]
    first = [rng.choice(n_videos, 2, replace=False) for _ in range(n_users)]  # seed watches
    noise = rng.normal(0, sigma, (rounds + 1, n_users, n_videos))  # shared by all strategies

    client = redis_client(url=REDIS_URL)
    out: dict[str, float] = {}
    runs: dict[str, list[tuple[float, float, float]]] = {}
    index = {v: j for j, v in enumerate(videos)}
    plan = replay_plan(("popularity", "mean", "ucb", "thompson"), thompson_draws)
    try:
        for strategy, draw in plan:
            prefix = f"bench-replay-{uuid.uuid4().hex[:8]}"
            model = replay_minutes_model(k, seed, warmup_events)
            lk = Lookup(client, prefix, refresh_interval_ms=0)
            states: dict = {}
            watched = np.zeros((n_users, n_videos), dtype=bool)
            sums, counts = np.zeros(n_videos), np.zeros(n_videos)

            def learn(
                pairs: list[tuple[int, int]],
                r: int,
                _m=model,
                _s=states,
                _p=prefix,
                _w=watched,
                _sum=sums,
                _cnt=counts,
            ) -> None:
                # minutes watched: the model-scale draw through expm1 (clipped at 0 minutes)
                vals = [
                    float(np.expm1(max(true_mean[i, j] + noise[r, i, j], 0.0))) for i, j in pairs
                ]
                batch = Batch.of([users[i] for i, _ in pairs], [videos[j] for _, j in pairs], vals)
                _s.update(_m.learn(batch, _s))
                for (i, j), v in zip(pairs, vals, strict=True):
                    _w[i, j] = True
                    _sum[j] += v
                    _cnt[j] += 1
                now = int(time.time() * 1000)
                snap = _m.export_globals()
                write_global_record(client, _p, global_record_from_snapshot(snap, now), ttl_s=600)
                pipe = client.pipeline(transaction=True)
                for i in {i for i, _ in pairs}:
                    rec = user_record_from_state(
                        _s[users[i]], updated_ms=now, event_ms=now, partition=0, offset=r
                    )
                    queue_user_record(pipe, _p, users[i], rec, ttl_s=600)
                pipe.execute()

            learn([(i, int(j)) for i in range(n_users) for j in first[i]], 0)
            regret = np.zeros(n_users)
            late = np.zeros(n_users)  # regret of the last 10 rounds: after learning
            hits = 0
            for r in range(1, rounds + 1):
                if strategy == "popularity":
                    shrunk = (sums + 5 * b0) / (counts + 5)  # shrink unseen videos to b0
                    picks = [
                        int(np.argmax(np.where(watched[i], -np.inf, shrunk)))
                        for i in range(n_users)
                    ]
                else:
                    picks = recommended_picks(lk, users, index, strategy, r, draw)
                hits += score_picks(
                    picks, watched, true_mean, top10, regret, late if r > rounds - 10 else None
                )
                learn(list(enumerate(picks)), r)
            runs.setdefault(strategy, []).append(
                (float(regret.mean()), float(late.mean()), hits / (n_users * rounds))
            )
            delete_prefix(client, prefix)
    finally:
        client.close()
    average_runs(out, runs, "lookup.")
    return out


def run() -> dict[str, float]:
    from benchmarks.choice_replay import replay_choice

    out = latency()
    out.update(latency(choice=True))
    out.update(replay())
    out.update(replay_choice())  # lookup.v2_regret_*: with the choice component
    out.update(replay_choice(browsing=False))  # lookup.v2_nobrowse_regret_*
    return out


if __name__ == "__main__":
    import sys

    if "--latency-only" in sys.argv:
        n = int(sys.argv[-1]) if sys.argv[-1].isdigit() else 5000
        results = latency(n) | latency(n, choice=True)
        target = results["lookup.v2_recommend_p99_ms"]
        print(
            f"v2 recommend p99 over 10,000 videos: {target:.2f} ms wall "
            f"({results['lookup.v2_recommend_cpu_p99_ms']:.2f} ms CPU); target <= 5 ms: "
            f"{'met' if target <= 5 else 'missed'}; load average {os.getloadavg()[0]:.1f}"
        )
    else:
        results = run()
    for key, value in results.items():
        print(f"{key:<40} {value:.4g}")
