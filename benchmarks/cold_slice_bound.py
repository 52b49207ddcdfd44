"""How low can MovieLens 100K's cold slice go? Bounds for ``rmse_lt5``.

    python -m benchmarks.cold_slice_bound [--dims 0 5 10] [--ridge 10]

``rmse_lt5`` (issue #12's target: <= 0.995) is the RMSE over the 4,715 events
whose user had fewer than 5 earlier events, each predicted before it is
learned. This script asks what a model that *knows every video from the future*
would score there, so the target can be weighed against what the data allows:

1. **Videos from the future.** The global mean, video biases and (for
   ``dims`` > 0) video taste factors are fitted by alternating ridge
   regression on every event *outside* the cold slice, the 95,285 others,
   including all that happen later. Each user then starts from a Gaussian
   prior over ``[bias, taste]`` (the mean and covariance of the fitted users)
   and is learned online, event by event, by the conjugate Gaussian update
   against those fixed videos, exactly as the Bayes oracle of the simulator
   does. Each cold event is predicted before its own update, and its rating
   never enters the video fit.
2. **Fully online biases.** The user and video biases are both learned
   event by event from the past only (shrunk running means), around the
   global mean of the file.

The first is a leak (of every later rating of each video); the second is a
plain online bias model. The target sits between them.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.movielens import movielens_100k
from streamer.files.events_file import read_events

COLD = 5  # rmse_lt5: users with fewer than this many earlier events


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users, videos (dense indices), ratings in time order, and the earlier-event count."""
    ev = read_events(movielens_100k())
    order = np.argsort(ev.timestamps, kind="stable")
    users = np.unique(ev.user_ids[order], return_inverse=True)[1]
    videos = np.unique(ev.video_ids[order], return_inverse=True)[1]
    ratings = np.asarray(ev.values, dtype=float)[order]
    seen = np.zeros(users.max() + 1, dtype=int)
    n_prior = np.empty(len(users), dtype=int)
    for k, u in enumerate(users):
        n_prior[k] = seen[u]
        seen[u] += 1
    return users, videos, ratings, n_prior


def fit_videos(u, v, r, n_users, n_videos, dims, ridge, passes=15):
    """Alternating ridge fit of mu + b_u + b_v + p_u . q_v, and the residual variance."""
    mu = r.mean()
    rng = np.random.default_rng(0)
    bu, bv = np.zeros(n_users), np.zeros(n_videos)
    P, Q = rng.normal(0, 0.1, (n_users, dims)), rng.normal(0, 0.1, (n_videos, dims))
    by_user = [np.flatnonzero(u == a) for a in range(n_users)]
    by_video = [np.flatnonzero(v == a) for a in range(n_videos)]
    for _ in range(passes):
        taste = np.sum(P[u] * Q[v], axis=1)
        bv = np.bincount(v, r - mu - bu[u] - taste, n_videos) / (np.bincount(v, None, n_videos) + 5)
        bu = np.bincount(u, r - mu - bv[v] - taste, n_users) / (np.bincount(u, None, n_users) + 5)
        if dims:
            res = r - mu - bu[u] - bv[v]
            for A, B, rows, other in ((P, Q, by_user, v), (Q, P, by_video, u)):
                for a, idx in enumerate(rows):
                    if len(idx):
                        X = B[other[idx]]
                        A[a] = np.linalg.solve(X.T @ X + ridge * np.eye(dims), X.T @ res[idx])
    sigma2 = float(np.mean((r - mu - bu[u] - bv[v] - np.sum(P[u] * Q[v], axis=1)) ** 2))
    return mu, bu, bv, P, Q, sigma2


def videos_from_the_future(u, v, r, cold, dims, ridge) -> tuple[float, float]:
    """Cold-slice RMSE of users learned online against videos fitted on every other event."""
    n_users, n_videos = u.max() + 1, v.max() + 1
    keep = ~cold
    mu, bu, bv, P, Q, sigma2 = fit_videos(u[keep], v[keep], r[keep], n_users, n_videos, dims, ridge)
    W = np.column_stack([bu, P])
    prior_prec = np.linalg.inv(np.atleast_2d(np.cov(W.T)) + 1e-6 * np.eye(dims + 1))
    prec = np.repeat(prior_prec[None], n_users, axis=0)
    shift = np.repeat((prior_prec @ W.mean(axis=0))[None], n_users, axis=0)
    err = []
    for k in np.flatnonzero(cold):
        a, x = u[k], np.concatenate([[1.0], Q[v[k]]])
        target = r[k] - mu - bv[v[k]]
        err.append(target - x @ np.linalg.solve(prec[a], shift[a]))
        prec[a] += np.outer(x, x) / sigma2
        shift[a] += x * target / sigma2
    return float(np.sqrt(np.mean(np.square(err)))), float(np.sqrt(sigma2))


def online_biases(u, v, r, cold, shrink_user=5.0, shrink_video=5.0) -> tuple[float, float]:
    """Cold-slice and overall RMSE of user and video biases learned from the past only."""
    mu = r.mean()
    su, cu = np.zeros(u.max() + 1), np.zeros(u.max() + 1)
    sv, cv = np.zeros(v.max() + 1), np.zeros(v.max() + 1)
    err = np.empty(len(r))
    for k in range(len(r)):
        a, b = u[k], v[k]
        bu, bv = su[a] / (cu[a] + shrink_user), sv[b] / (cv[b] + shrink_video)
        err[k] = r[k] - mu - bu - bv
        su[a] += r[k] - mu - bv
        cu[a] += 1
        sv[b] += r[k] - mu - bu
        cv[b] += 1
    return float(np.sqrt(np.mean(err[cold] ** 2))), float(np.sqrt(np.mean(err**2)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dims", type=int, nargs="+", default=[0, 5, 10], help="taste dimensions to try"
    )
    parser.add_argument("--ridge", type=float, default=10.0, help="ridge of the taste factors' fit")
    args = parser.parse_args(argv)
    u, v, r, n_prior = load()
    cold = n_prior < COLD
    print(
        f"MovieLens 100K: {len(r)} events, cold slice (< {COLD} earlier events of the user): {cold.sum()}"
    )
    slice_rmse, overall = online_biases(u, v, r, cold)
    print(
        f"fully online biases (past only):                    rmse_lt5 {slice_rmse:.4f} (all events {overall:.4f})"
    )
    for dims in args.dims:
        slice_rmse, sigma = videos_from_the_future(u, v, r, cold, dims, args.ridge)
        print(
            f"videos fitted on all other events, {dims:2d} taste dims: rmse_lt5 {slice_rmse:.4f} "
            f"(noise sd {sigma:.3f}; users online, Bayes update)"
        )


if __name__ == "__main__":
    main()
