"""The loss of an SVI step on the hyper-parameters, the model's trace compiled once.

Pyro's ``Trace_ELBO`` runs :func:`model.hpmf_model.hpmf_model` and its guide
in Python at every step: tracing them, building the distributions and summing
the sites' log-densities costs several times the arithmetic of a step on a
few hundred events. ``pyro.infer.JitTrace_ELBO`` traces them once with
``torch.jit.trace`` and replays the recorded graph afterwards. A traced graph
has fixed shapes, so the step's users, videos and events are padded to
``svi_max_events`` rows, masked out (:class:`model.hpmf_model.SVIData`); the
plates' scales are inputs of the graph, not constants. The model's random
draws (the guide's samples of the factors) then come from differently shaped
draws than uncompiled, so the steps are not bit-identical to
``Trace_ELBO``'s, the same in distribution (tests/test_model_svi_loss.py).

One compiled trace per configuration per process (the hyper-parameters and
the data are inputs; the configuration is baked in).
"""

from __future__ import annotations

import json
import warnings

import pyro
import torch

from model.config import HPMFConfig
from model.hpmf_model import Hypers, SVIData, hpmf_guide, hpmf_model

MAX_PADDING = 4096
"""Above this many rows (``svi_max_events``) padding costs more than it saves:
the step runs uncompiled."""

_COMPILED: dict[str, tuple[pyro.infer.JitTrace_ELBO, HPMFConfig]] = {}
_N_HYPERS = len(Hypers.__dataclass_fields__)


def svi_padding(cfg: HPMFConfig) -> int | None:
    """Rows to pad a step's data to, None when the step runs uncompiled."""
    if not cfg.svi_compiled or cfg.dim == 0 or cfg.svi_max_events > MAX_PADDING:
        return None
    return cfg.svi_max_events


def svi_loss(data: SVIData, cfg: HPMFConfig, hp: Hypers) -> torch.Tensor:
    """The (differentiable) negative ELBO of :func:`hpmf_model` and
    :func:`hpmf_guide` on ``data``: compiled when ``data`` is padded to
    :func:`svi_padding` rows, by ``Trace_ELBO`` otherwise."""
    rows = svi_padding(cfg)
    if rows is None or len(data.target) != rows:
        return pyro.infer.Trace_ELBO().differentiable_loss(hpmf_model, hpmf_guide, data, cfg, hp)
    key = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    if key not in _COMPILED:
        _COMPILED[key] = (pyro.infer.JitTrace_ELBO(ignore_jit_warnings=True), cfg)
    elbo = _COMPILED[key][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's, on the first call
        loss, surrogate = elbo.loss_and_surrogate_loss(
            _model, _guide, *hp.leaves(), *data.tensors(), key=key
        )
    # Not JitTrace_ELBO.differentiable_loss: its value, loss + (surrogate -
    # surrogate.detach()), keeps the loss's own graph too, and the gradients
    # of this fully reparameterised model come out twice Trace_ELBO's.
    return loss.detach() + (surrogate - surrogate.detach())


def _unflatten(tensors: tuple[torch.Tensor, ...], key: str) -> tuple[SVIData, HPMFConfig, Hypers]:
    cfg = _COMPILED[key][1]
    return SVIData(*tensors[_N_HYPERS:]), cfg, Hypers(*tensors[:_N_HYPERS])


def _model(*tensors: torch.Tensor, key: str) -> None:
    hpmf_model(*_unflatten(tensors, key))


def _guide(*tensors: torch.Tensor, key: str) -> None:
    hpmf_guide(*_unflatten(tensors, key))
