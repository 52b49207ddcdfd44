"""What the streaming service calls on a model: the seam for a second one.

The service (``streamer/service/``) is typed against :class:`StreamingModel`,
not against :class:`model.online.OnlineHPMF` by name. A model plugs in by
providing these members (structurally; no base class to inherit):

* the **local step** (every worker, per batch): :meth:`StreamingModel.local_update`
  folds a batch into its users' states against the current globals and returns
  the new states plus the batch's sufficient statistics for the global step;
* the **global step** (the learner only): :meth:`StreamingModel.apply_global`
  applies one batch's statistics, in stream order;
* **export and import of the globals**: the learner publishes
  :meth:`StreamingModel.export_globals` and the other workers compute against
  it after :meth:`StreamingModel.import_globals`;
* a **state dict** for checkpoints (:mod:`model.checkpoint`): everything the
  learner needs to resume.

Numpy and the standard library only at run time (the names below are for
type checkers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from model.batch import Batch
    from model.config import HPMFConfig
    from model.globals_snapshot import GlobalsSnapshot
    from model.online import GlobalStats, LocalUpdate
    from model.posterior import UserState


class StreamingModel(Protocol):
    """The members the streaming service uses (see the module docstring)."""

    config: HPMFConfig
    version: int
    """The globals' version: bumped by every global step, published with them."""
    n_seen: int
    """The learner's stream clock (events learned); stamps ``UserState.seen_at``."""
    learner: bool
    """False once the globals were imported from a snapshot (a worker, not the learner)."""
    video_ids: list[str]
    n_videos: int

    def local_update(self, batch: Batch, states: Mapping[str, UserState | None]) -> LocalUpdate: ...

    def apply_global(self, stats: GlobalStats) -> None: ...

    def export_globals(self) -> GlobalsSnapshot: ...

    def import_globals(self, snap: GlobalsSnapshot) -> None: ...


class Checkpointable(Protocol):
    """A model whose learner state goes into checkpoints as a state dict."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, sd: dict[str, Any]) -> None: ...
