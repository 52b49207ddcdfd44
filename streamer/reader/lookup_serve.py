"""The lookup's last step: a user's posterior and the served model turned into
predictions and a ranked list (numpy only; :class:`streamer.reader.lookup.Lookup`
reads the records and calls these)."""

from __future__ import annotations

import numpy as np

from model.transform import to_original_units
from streamer.reader.lookup_math import ServingModel, UserMoments, predictive, top_k
from streamer.reader.lookup_rank import served_scores
from streamer.reader.lookup_results import (
    Predictions,
    Recommendation,
    Recommendations,
    UserPosterior,
)


def predictions(post: UserPosterior, model: ServingModel, vids: list[str]) -> Predictions:
    """Predictive mean and std of ``post``'s value for each of ``vids``, in original units
    (NaN for a video the model does not know)."""
    rows = np.array([model.index.get(v, -1) for v in vids], dtype=np.int64)
    known = rows >= 0
    user = UserMoments.of(post.mean, post.cov, model.record.biases)
    m_y = np.full(len(vids), np.nan)
    s_y = np.full(len(vids), np.nan)
    if known.any():
        m, epi = predictive(model, user, rows[known])
        m_y[known], s_y[known] = m, np.sqrt(epi + model.noise_var)
    mean, std = to_original_units(model.record.transform, m_y, s_y)
    return Predictions(post, vids, mean, std, known, m_y, s_y)


def recommendations(
    post: UserPosterior,
    model: ServingModel,
    k: int,
    strategy: str,
    exclude_watched: bool,
    rng: np.random.Generator,
    ucb_beta: float,
) -> Recommendations:
    """The top ``k`` videos for ``post`` under ``strategy`` (see ``Lookup.recommend``)."""
    rec = model.record
    rows: list[int] = []
    if exclude_watched and post.history:
        rows = [model.index[v] for v, _, _ in post.history if v in model.index]
    scores, user = served_scores(
        model,
        post.mean,
        post.cov,
        post.choice_mean,
        post.choice_cov,
        strategy,
        rng,
        ucb_beta,
        exclude=rows,
    )
    best = top_k(scores, k)
    m_best, epi_best = predictive(model, user, best)  # exact float64 for what is shown
    mean, std = to_original_units(rec.transform, m_best, np.sqrt(epi_best + model.noise_var))
    if model.choice is not None:  # expected minutes if shown, already in original units
        shown = scores[best]
    elif strategy == "mean":
        shown = mean
    else:  # the ranked model-scale value, mapped through the (monotone) inverse transform
        shown = to_original_units(rec.transform, scores[best], np.zeros(best.shape[0]))[0]
    items = [
        Recommendation(str(model.ids[r]), float(s), float(m), float(d))
        for r, s, m, d in zip(best, shown, mean, std, strict=True)
    ]
    return Recommendations(post, strategy, items)
