"""Save and load the learner's global state: a versioned, safe checkpoint.

The file is a ``torch.save`` archive of plain tensors, numbers, strings and
lists only, read back with ``torch.load(weights_only=True)`` so loading a
checkpoint can never run code. It carries a schema name and version; a file of
another schema or version is refused with a clear error.

>>> import io
>>> from model.batch import Batch
>>> m = OnlineHPMF(HPMFConfig(n_factors=2))
>>> _ = m.learn(Batch.of(["a", "b"], ["x", "y"], [4.0, 2.0]), {})
>>> m2 = from_bytes(to_bytes(m))
>>> m2.version, m2.video_ids
(1, ['x', 'y'])
>>> from_bytes(b"not a checkpoint")
Traceback (most recent call last):
...
model.checkpoint.CheckpointError: not an HPMF checkpoint (unreadable archive)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from model.config import HPMFConfig
from model.online import OnlineHPMF

SCHEMA = "hpmf.checkpoint"
SCHEMA_VERSION = 1


class CheckpointError(ValueError):
    """The checkpoint cannot be used: unreadable, another schema, or another version."""


def state_dict(model: OnlineHPMF) -> dict[str, Any]:
    """The checkpoint's dict: the schema fields, then :meth:`OnlineHPMF.state_dict`."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **model.state_dict()}


def load_state_dict(sd: dict[str, Any]) -> OnlineHPMF:
    if not isinstance(sd, dict) or sd.get("schema") != SCHEMA:
        raise CheckpointError("not an HPMF checkpoint (schema field missing or different)")
    if sd.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(
            f"checkpoint schema version {sd.get('schema_version')} is not supported by this "
            f"code (it reads version {SCHEMA_VERSION}); re-fit with `hpmf fit` or use a matching release"
        )
    model = OnlineHPMF(HPMFConfig.from_dict(sd["config"]))
    model.load_state_dict(sd)
    return model


def to_bytes(model: OnlineHPMF) -> bytes:
    buf = io.BytesIO()
    torch.save(state_dict(model), buf)
    return buf.getvalue()


def from_bytes(data: bytes) -> OnlineHPMF:
    try:
        sd = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:
        raise CheckpointError("not an HPMF checkpoint (unreadable archive)") from exc
    return load_state_dict(sd)


def save_checkpoint(model: OnlineHPMF, path: str | Path) -> None:
    """Write atomically: a crash mid-write leaves the old checkpoint intact."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(to_bytes(model))
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> OnlineHPMF:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return from_bytes(path.read_bytes())
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
