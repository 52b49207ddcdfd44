"""A minimal Adam for the handful of hyper-parameter leaves.

torch.optim.Adam would do the same arithmetic, but constructing it imports
torch's compiler stack (measured 4-7 s on first use here) and each step pays
for generality the few small tensors of the hyper-parameters do not need.

>>> import torch
>>> x = torch.tensor([3.0], requires_grad=True)
>>> opt = Adam([x], lr=0.1)
>>> for _ in range(200):
...     opt.zero_grad(); (x ** 2).sum().backward(); opt.step()
>>> abs(x.item()) < 0.05
True
"""

from __future__ import annotations

from typing import Any

import torch


class Adam:
    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        live = [k for k, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        ps = [self.params[k] for k in live]
        gs = [self.params[k].grad for k in live]
        ms = [self.m[k] for k in live]
        vs = [self.v[k] for k in live]
        # Per leaf: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
        # p -= lr (m / c1) / (sqrt(v / c2) + eps). The _foreach_ ops run the
        # same kernels leaf by leaf (the same numbers) in one call per op.
        torch._foreach_mul_(ms, b1)
        torch._foreach_add_(ms, gs, alpha=1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
        num = torch._foreach_mul(torch._foreach_div(ms, c1), self.lr)
        den = torch._foreach_add(torch._foreach_sqrt(torch._foreach_div(vs, c2)), self.eps)
        torch._foreach_sub_(ps, torch._foreach_div(num, den))

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "m": [m.clone() for m in self.m], "v": [v.clone() for v in self.v]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if len(sd["m"]) != len(self.params):
            raise ValueError(
                f"optimizer state has {len(sd['m'])} leaves, expected {len(self.params)}"
            )
        self.t = int(sd["t"])
        self.m = [m.clone() for m in sd["m"]]
        self.v = [v.clone() for v in sd["v"]]
