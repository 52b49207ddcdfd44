"""The user prior the service serves with, apart from the one the sweeps learn with.

The replay sweeps need wide user taste scales (prior scale 0.5) to teach the
videos taste (docs/evaluation.md, "Taste"); a user known from a handful of
events, though, is served better from a narrower taste prior: on MovieLens 100K
at minibatch 1 the predictive spread of users with 0-1 earlier events was
1.10-1.14 against an RMSE of 1.00-1.04, and their first ratings moved the taste
further than it carries to the next video. ``HPMFConfig.serving_taste_scale``
sets the taste dims' prior sd of the served posteriors (the local step and new
users); the bias scale stays the learned one.

Off by default: at 0.25 the cold slice (``rmse_lt5``) went 1.0069 -> 1.0039
but the users with 50+ events 0.9081 -> 0.9118 and the RMSE 0.9324 -> 0.9335
(MovieLens 100K, minibatch 1; docs/evaluation.md, "The cold slice"): the
videos' taste was fitted against users with scale 0.5, so a narrower served
prior shrinks what heavy users' taste explains.

>>> import torch
>>> serving_scales(torch.tensor([0.5, 0.5, 0.25]), 0.125, n_factors=2).tolist()
[0.125, 0.125, 0.25]
"""

from __future__ import annotations

import torch


def serving_scales(scale: torch.Tensor, taste_scale: float, n_factors: int) -> torch.Tensor:
    """``scale`` with its first ``n_factors`` (taste) entries set to ``taste_scale``."""
    out = scale.clone()
    out[:n_factors] = taste_scale
    return out
