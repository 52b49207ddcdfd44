"""Values derived from the hyper-parameters, computed once per change of them.

The online steps read the noise and the pooled priors several times per
minibatch (predict, the local step, the video refresh, new videos), each a
few small torch ops on the same leaves. :func:`derived` keeps the last value
per name with the leaves it was computed from and their version counters
(torch bumps ``_version`` on every in-place change: Adam's step, ``fill_``,
``copy_``), and recomputes only when a leaf was replaced or changed.

>>> import torch
>>> class Owner: pass
>>> o, leaf = Owner(), torch.tensor([1.0])
>>> calls = []
>>> def twice():
...     calls.append(1)
...     return leaf * 2
>>> float(derived(o, "x", (leaf,), twice)), float(derived(o, "x", (leaf,), twice)), len(calls)
(2.0, 2.0, 1)
>>> _ = leaf.fill_(3.0)
>>> float(derived(o, "x", (leaf,), twice)), len(calls)
(6.0, 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")

CACHE_ATTR = "_derived_cache"


def derived(owner: Any, name: str, leaves: tuple[torch.Tensor, ...], compute: Callable[[], T]) -> T:
    """``compute()``, or its last result for ``name`` on ``owner`` if every
    leaf is the same tensor at the same version as then. The result is shared:
    callers must not modify it in place."""
    cache: dict[str, tuple[tuple[torch.Tensor, ...], tuple[int, ...], Any]] = (
        owner.__dict__.setdefault(CACHE_ATTR, {})
    )
    versions = tuple(t._version for t in leaves)
    hit = cache.get(name)
    if (
        hit is not None
        and hit[1] == versions
        and len(hit[0]) == len(leaves)
        and all(a is b for a, b in zip(hit[0], leaves, strict=True))
    ):
        return hit[2]
    value = compute()
    cache[name] = (leaves, versions, value)
    return value
