"""Batch fit: the classic SVI workflow, several passes (epochs) over a fixed data set.

Each epoch replays the whole stream, in order, minibatch by minibatch, through
the same :meth:`OnlineHPMF.learn` the service uses. User histories are rebuilt
from scratch every epoch (a history sums a user's minutes per video, so folding
the same event twice would double it); the globals carry over, so each epoch
refines the video posteriors and the hyper-parameters.

Video evidence decays as exp(-dt / N_eff). Each epoch adds every user's
evidence once more (with ``refresh_video_evidence`` the model replaces a user's
earlier contribution within the epoch, so one contribution per user and epoch
remains). With N_eff equal to the number of events N in the file, after many
epochs a contribution made a events before the end of an epoch carries total
weight sum_k exp(-(a + kN)/N) = exp(-a/N) / (1 - e^-1), which averages to
exactly 1 over the epoch: the steady state weighs the data set about once, as
batch SVI on N events should. :func:`batch_config` sets that N_eff.

>>> from model.config import HPMFConfig
>>> m = OnlineHPMF(batch_config(HPMFConfig(n_factors=2), n_events=4))
>>> hist = fit(m, ["a", "a", "b", "b"], ["x", "y", "x", "y"], np.array([4.0, 2, 3, 1]), epochs=2, batch_size=2)
>>> len(hist), m.n_seen, m.config.effective_data_size
(2, 8, 4.0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF
from model.posterior import UserState
from model.transform import forward


def batch_config(config: HPMFConfig, n_events: int) -> HPMFConfig:
    """``config`` with N_eff = ``n_events`` (see module docstring)."""
    if n_events < 1:
        raise ValueError(f"n_events must be >= 1, got {n_events}")
    return dataclasses.replace(config, effective_data_size=float(n_events))


def fit(
    model: OnlineHPMF,
    user_ids: Sequence[str],
    video_ids: Sequence[str],
    values: np.ndarray,
    epochs: int = 5,
    batch_size: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Learn ``epochs`` passes over the events (in the given order).

    Returns, per epoch, the RMSE of the predictions made just before each
    minibatch was learned (transformed scale): in epoch 1 that is the
    prequential error; later epochs score data the globals have seen (a
    training error, to watch convergence). ``progress(n)`` after each minibatch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    vals = np.asarray(values, dtype=np.float64)
    if not len(user_ids) == len(video_ids) == len(vals):
        raise ValueError(
            f"columns differ in length: {len(user_ids)} users, {len(video_ids)} videos, "
            f"{len(vals)} values"
        )
    users = [str(u) for u in user_ids]
    videos = [str(v) for v in video_ids]
    target = forward(model.config.transform, vals)
    history: list[float] = []
    for _ in range(epochs):
        states: dict[str, UserState] = {}
        sq = 0.0
        for start in range(0, len(vals), batch_size):
            stop = min(start + batch_size, len(vals))
            bu, bv = users[start:stop], videos[start:stop]
            mean, _ = model.predict([states.get(u) for u in bu], bv)
            sq += float(np.sum(np.square(target[start:stop] - mean)))
            states.update(model.learn(Batch.of(bu, bv, vals[start:stop]), states))
            if progress is not None:
                progress(stop - start)
        history.append(math.sqrt(sq / len(vals)) if len(vals) else math.nan)
    return history
