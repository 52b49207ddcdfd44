"""The choice component's catalogue eviction: when the minutes model's cap
evicts videos, the learner drops them here too, so the two components'
catalogues stay the same and memory stays bounded."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from model.choice import ChoiceModel


def retain_videos(model: ChoiceModel, video_ids: Sequence[str]) -> int:
    """Forget every video of ``model`` not in ``video_ids``, with their window
    pairs; rebuild the Gram matrix from the rows kept. Returns how many were
    forgotten (:meth:`model.choice.ChoiceModel.retain`).

    >>> from model.choice import ChoiceConfig, ChoiceModel
    >>> m = ChoiceModel(ChoiceConfig(n_factors=2))
    >>> for v in "abc":
    ...     _ = m.learn_event("ann", v, None)
    >>> m.retain(["a", "c", "zzz"]), m.video_ids, sorted(r for _, r in m._pairs)
    (1, ['a', 'c'], [0, 1])
    """
    wanted = set(video_ids)
    keep = np.array([r for r, v in enumerate(model.video_ids) if v in wanted], dtype=np.int64)
    n = model.n_videos
    if keep.shape[0] == n:
        return 0
    remap = np.full(n, -1, dtype=np.int64)
    remap[keep] = np.arange(keep.shape[0])
    cap = max(64, keep.shape[0])
    for name in ("_mean", "_cov", "_prec", "_shift"):
        old = getattr(model, name)
        new = np.zeros((cap, *old.shape[1:]))
        new[: keep.shape[0]] = old[keep]
        setattr(model, name, new)
    model.video_ids = [model.video_ids[r] for r in keep.tolist()]
    model.video_index = {v: k for k, v in enumerate(model.video_ids)}
    m, c = model._mean[: keep.shape[0]], model._cov[: keep.shape[0]]
    model.gram = (c + m[:, :, None] * m[:, None, :]).sum(0)
    model._pairs = OrderedDict(
        ((u, int(remap[r])), t) for (u, r), t in model._pairs.items() if remap[r] >= 0
    )
    return n - keep.shape[0]
