"""pair_weights: the (targets x sources) sum of entry weights, dense or sparse,
gives the same products as adding every entry's weighted moments one by one."""

from __future__ import annotations

import pytest
import torch

import model.weighted_sums as ws


@pytest.mark.parametrize("dense_limit", [ws.DENSE_LIMIT, 0], ids=["dense", "sparse"])
def test_products_equal_the_entry_by_entry_sum(
    monkeypatch: pytest.MonkeyPatch, dense_limit: int
) -> None:
    monkeypatch.setattr(ws, "DENSE_LIMIT", dense_limit)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 40, (3000,), generator=g)
    source = torch.randint(0, 200, (3000,), generator=g)
    weight = torch.randn(3000, generator=g, dtype=torch.float64)
    moments = torch.randn(200, 9, generator=g, dtype=torch.float64)
    want = torch.zeros(40, 9, dtype=torch.float64).index_add_(
        0, target, weight[:, None] * moments[source]
    )
    w = ws.pair_weights(target, source, weight, 40, 200)
    assert w.is_sparse == (dense_limit == 0)
    torch.testing.assert_close(w @ moments, want)
