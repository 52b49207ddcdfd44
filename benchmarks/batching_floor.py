"""How much RMSE minibatching alone costs in prequential evaluation.

A user of MovieLens 100K rates many films within minutes, so with minibatches
of 256 events in timestamp order most predictions of a user's first burst are
made before anything of that user has been learned. This measures that cost on
the simplest model, damped user/video biases (no factors, no tuning), at
minibatch 1 and 256, in one run:

    mu = mean of values learned so far
    c_j = sum_(past events of j) (r - mu) / (n_j + 5)
    b_i = sum_(past events of i) (r - mu - c_j) / (n_i + 5)

    python -m benchmarks.batching_floor
"""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np

from benchmarks.movielens import movielens_100k


def damped_biases_rmse(rows: list[tuple[str, str, float]], batch: int, damping: float = 5.0) -> float:
    su: dict[str, float] = defaultdict(float)
    nu: dict[str, int] = defaultdict(int)
    sv: dict[str, float] = defaultdict(float)
    nv: dict[str, int] = defaultdict(int)
    total, n = 0.0, 0
    err = []
    for s in range(0, len(rows), batch):
        b = rows[s : s + batch]
        mu = total / n if n else 3.5
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
    return float(np.sqrt(np.mean(np.square(err))))


def main() -> None:
    with movielens_100k().open() as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)
        raw = sorted(reader, key=lambda r: float(r[3]))
    rows = [(r[0], r[1], float(r[2])) for r in raw]
    for batch in (1, 256, 1024):
        print(f"damped biases, prequential MovieLens 100K, minibatch {batch:5d}: RMSE {damped_biases_rmse(rows, batch):.4f}")


if __name__ == "__main__":
    main()
