"""How much RMSE minibatching alone costs in prequential evaluation.

A user of MovieLens 100K rates many films within minutes, so with minibatches
of 256 events in timestamp order most predictions of a user's first burst are
made before anything of that user has been learned. This measures that cost on
the simplest model, damped user/video biases (no factors, no tuning), at
minibatch 1 and 256, in one run:

    mu = mean of values learned so far (3.0, the middle of the stars, before any)
    c_j = sum_(past events of j) (r - mu) / (n_j + 5)
    b_i = sum_(past events of i) (r - mu - c_j) / (n_i + 5)

It then bounds what any model can reach at minibatch B on this stream. An
event whose user has nothing learned before its minibatch can only be
predicted from the video (the user's state is the prior, the same for all
such users); the mean of that event's video over exactly those events, fitted
on them (a cheating oracle), is the least squared error any such prediction
can have. With a fraction f of events in that slice at oracle RMSE r0, a
total RMSE T needs the other events at sqrt((T^2 - f r0^2) / (1 - f)); River's
BiasedMF at minibatch 1 (which learns every event before the next, strictly
more than a minibatch-B model knows) shows what those events cost in practice.

    python -m benchmarks.batching_floor
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from benchmarks.movielens import movielens_100k
from model.evaluate import earlier_events
from streamer.files.events_file import read_events


def damped_biases_errors(
    rows: list[tuple[str, str, float]], batch: int, damping: float = 5.0, prior_mean: float = 3.0
) -> np.ndarray:
    """Prediction errors of damped biases, prequential at minibatch ``batch``;
    ``prior_mean`` is predicted before anything is learned (as hpmf's b0 prior
    in benchmarks.model_bench)."""
    su: dict[str, float] = defaultdict(float)
    nu: dict[str, int] = defaultdict(int)
    sv: dict[str, float] = defaultdict(float)
    nv: dict[str, int] = defaultdict(int)
    total, n = 0.0, 0
    err = []
    for s in range(0, len(rows), batch):
        b = rows[s : s + batch]
        mu = total / n if n else prior_mean
        for u, v, r in b:  # predict the whole minibatch first ...
            cv = sv[v] / (nv[v] + damping)
            bu = su[u] / (nu[u] + damping)
            err.append(mu + cv + bu - r)
        for _, _, r in b:  # ... then learn it
            total += r
            n += 1
        mu = total / n
        for _, v, r in b:
            sv[v] += r - mu
            nv[v] += 1
        for u, v, r in b:
            su[u] += r - mu - sv[v] / (nv[v] + damping)
            nu[u] += 1
    return np.asarray(err)


def cold_slice_floor(
    users: np.ndarray, videos: np.ndarray, values: np.ndarray, batch: int
) -> tuple[np.ndarray, float]:
    """(mask of events whose user has nothing learned before their minibatch,
    RMSE of the in-slice per-video oracle on them)."""
    seen: set[str] = set()
    new = np.zeros(len(values), dtype=bool)
    for s in range(0, len(values), batch):
        stop = min(s + batch, len(values))
        new[s:stop] = [u not in seen for u in users[s:stop].tolist()]
        seen.update(users[s:stop].tolist())
    _, inv = np.unique(videos[new], return_inverse=True)
    oracle = np.bincount(inv, values[new]) / np.bincount(inv)
    return new, float(np.sqrt(np.mean((values[new] - oracle[inv]) ** 2)))


def river_errors(users: np.ndarray, videos: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Squared errors of River BiasedMF at minibatch 1 (as benchmarks.model_bench)."""
    from river import optim, reco

    model = reco.BiasedMF(
        n_factors=10,
        bias_optimizer=optim.SGD(0.025),
        latent_optimizer=optim.SGD(0.025),
        l2_bias=0.1,
        l2_latent=0.1,
        latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73),
    )
    out = np.empty(len(values))
    for k, (u, v, y) in enumerate(
        zip(users.tolist(), videos.tolist(), values.tolist(), strict=True)
    ):
        out[k] = (y - model.predict_one(user=u, item=v)) ** 2
        model.learn_one(user=u, item=v, y=y)
    return out


def main(target: float = 0.940) -> None:
    ev = read_events(movielens_100k())
    users, videos, values = ev.user_ids, ev.video_ids, ev.values
    rows = list(zip(users.tolist(), videos.tolist(), values.tolist(), strict=True))
    river_sq = river_errors(users, videos, values)
    print(f"River BiasedMF, minibatch 1: RMSE {np.sqrt(river_sq.mean()):.4f}")
    lt5 = earlier_events(users.tolist()) < 5
    for batch in (1, 256, 1024):
        err = damped_biases_errors(rows, batch)
        rmse = float(np.sqrt(np.mean(err**2)))
        rmse_lt5 = float(np.sqrt(np.mean(err[lt5] ** 2)))
        new, r0 = cold_slice_floor(users, videos, values, batch)
        f = float(new.mean())
        need = np.sqrt(max(target**2 - f * r0**2, 0.0) / (1 - f))
        river_rest = float(np.sqrt(river_sq[~new].mean()))
        print(
            f"minibatch {batch:5d}: damped biases RMSE {rmse:.4f} (before a user's 5th event {rmse_lt5:.4f}); "
            f"{f:6.1%} of events have a user with "
            f"nothing learned before their minibatch, per-video oracle on them {r0:.4f}; "
            f"RMSE {target} overall needs the other events at <= {need:.4f} "
            f"(River BiasedMF at minibatch 1 on them: {river_rest:.4f})"
        )


if __name__ == "__main__":
    main()
