"""Online HPMF: ``predict``, and learning one minibatch at a time.

The service's workers call :meth:`~model.online_local.LocalStep.local_update`
and its learner :meth:`~model.online_global.GlobalStep.apply_global`; the
evaluation harness calls :meth:`OnlineHPMF.learn` (both, in one process) and
``predict``. One minibatch does:

1. **Local step, exact** (:mod:`model.online_local`, :mod:`model.local_step`):
   every touched user's q(x_i) is recomputed from their aggregated history
   against the pooled prior and the current video posteriors, in closed form,
   vectorised over the batch.
2. **Global step** (:mod:`model.online_global`, :mod:`model.video_step`,
   :mod:`model.hpmf_model`): a natural-gradient SVI step on the touched
   videos' posteriors, the replay sweeps (:mod:`model.replay_schedule`), then
   Pyro SVI steps on the hyper-parameters (mu_u, s_u, mu_v, s_v), the
   likelihood scaled to the effective data size N_eff; b0 is a running mean
   and sigma comes from the served errors (:mod:`model.noise_calibration`).

The model holds only globals plus an id-to-row map for videos; per-user state
(:class:`model.posterior.UserState`) is passed in and handed back, so the
streamer can keep it in Redis and let churned users expire.

The local step and the global step are separate methods as well
(:meth:`local_update`, :meth:`apply_global`) so that several workers can run
local steps while a single learner applies their global statistics.

>>> m = OnlineHPMF(HPMFConfig(n_factors=2, seed=1))
>>> states = m.learn(Batch.of(["ann", "ann", "bob"], ["v1", "v2", "v1"], [5, 4, 1]), {})
>>> sorted(states), states["ann"].n_events, m.version
(['ann', 'bob'], 2, 1)
>>> mean, std = m.predict([states["ann"], None], ["v2", "v-new"])
>>> mean.shape, bool((std > 0).all())
((2,), True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from model.adam import Adam
from model.batch import Batch
from model.catalogue import video_jitter
from model.config import HPMFConfig
from model.global_stats import GlobalStats, LocalUpdate
from model.globals_snapshot import GlobalsSnapshot
from model.hpmf_model import Hypers
from model.noise_calibration import NoiseCalibration
from model.online_global import GlobalStep
from model.online_local import LocalStep
from model.posterior import UserState
from model.replay_job import SweepJob, SweepThread
from model.replay_window import ReplayWindow
from model.snapshots import export_globals, import_globals

__all__ = [
    "GlobalStats",
    "LocalUpdate",
    "OnlineHPMF",
    "export_globals",
    "import_globals",
    "video_jitter",
]

DTYPE = torch.float64


class OnlineHPMF(LocalStep, GlobalStep):
    """Hierarchical PMF learned online by minibatched SVI (see module docstring).

    The work is split by concern: :class:`model.hyper_state.HyperState` (the
    hyper-parameters as the steps read them), :class:`model.catalogue.VideoCatalogue`
    (the video tables and the cap), :class:`model.online_local.LocalStep`
    (predict and the local step), :class:`model.online_global.GlobalStep` (the
    global step and SVI) and :class:`model.replay_schedule.ReplaySchedule`
    (the replay sweeps)."""

    def __init__(self, config: HPMFConfig | None = None) -> None:
        self.config = config or HPMFConfig()
        self._rng = torch.Generator().manual_seed(self.config.seed)
        self.version = 0
        self.n_seen = 0  # events learned: the stream clock of video forgetting
        self.hp: Hypers | None = None  # set from the first batch (data-dependent init)
        self._opt: Adam | None = None
        self._reset_videos(64)
        # Buffered batch statistics with their videos' rows (mapped once, here).
        self._svi_buffer: list[tuple[GlobalStats, np.ndarray]] = []
        self._svi_buffered = (
            0  # events in _svi_buffer (a running count: summing it per batch was quadratic)
        )
        self.learner = True  # False once globals were imported from a snapshot
        # The learner's window of recent events, revisited by replay sweeps.
        self.replay = ReplayWindow(self.config.replay_window_events)
        self._next_replay = self.config.replay_warmup_events
        self._sweep: SweepJob | None = None  # a background sweep in flight
        self._sweeper = SweepThread()
        self._remaps = 0  # catalogue-cap renumberings: a sweep started before one is void
        self.sweeps_folded = 0
        self.sweep_log_noise = 0.0  # the sweeps' learned noise factor, log (model.sweep_noise)
        self._candidates = None  # the last sweep's candidate videos (model.sweep_noise)
        self.noise_calibration = NoiseCalibration(self.config.noise_calibration_horizon)
        self.sweeps_voided = 0  # started before a renumbering, so thrown away
        # b0 is the forgetting-weighted mean of the transformed values seen:
        # learned by SVI it drifts against the video biases it is confounded with.
        self._r_sum = 0.0
        self._r_weight = 0.0
        self.evicted_videos = 0  # videos forgotten by the catalogue cap, in all

    def state_dict(self) -> dict[str, Any]:
        """The learner's whole state as plain tensors, numbers, strings and
        lists (what :mod:`model.checkpoint` saves): the config, the clocks, the
        video tables (natural parameters, clocks, posteriors), the
        hyper-parameters with their optimiser, the random generator, b0's
        running sums, the noise calibration and the sweeps' learned noise
        factor. Not included (rebuilt after a restart): the replay window and
        its share of the video evidence, the SVI buffer, a sweep in flight and
        the last sweep's candidate videos (the first sweep after a restart
        makes new ones and does not move the factor)."""
        n = self.n_videos
        hp = self.hp
        return {
            "config": self.config.to_dict(),
            "version": self.version,
            "n_seen": self.n_seen,
            "video_ids": list(self.video_ids),
            "v_prec": self._v_prec[:n].clone(),
            "v_shift": self._v_shift[:n].clone(),
            "v_time": self._v_time[:n].clone(),
            "v_mean": self._v_mean[:n].clone(),
            "v_cov": self._v_cov[:n].clone(),
            "hypers": None if hp is None else {k: v.detach().clone() for k, v in vars(hp).items()},
            "optimizer": None if self._opt is None else self._opt.state_dict(),
            "rng": self._rng.get_state(),
            "r_sum": self._r_sum,
            "r_weight": self._r_weight,
            "noise_calibration": self.noise_calibration.state(),
            "sweep_log_noise": self.sweep_log_noise,
        }

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned into this fresh model (built
        with that state's config; ``d["config"]`` itself is not read here).
        ``noise_calibration`` and ``sweep_log_noise`` may be absent (states
        saved before they existed): they then start afresh."""
        if self.video_ids or self.hp is not None:
            raise RuntimeError(
                "load_state_dict needs a fresh model (nothing learned or registered)"
            )
        self.version = int(d["version"])
        self.n_seen = int(d["n_seen"])
        self._register([str(v) for v in d["video_ids"]])
        n = self.n_videos
        self._v_prec[:n] = d["v_prec"]
        self._v_shift[:n] = d["v_shift"]
        self._v_time[:n] = d["v_time"]
        self._v_mean[:n] = d["v_mean"]
        self._v_cov[:n] = d["v_cov"]
        if d["hypers"] is not None:
            self.hp = Hypers(**{k: v.clone().requires_grad_(True) for k, v in d["hypers"].items()})
            self._opt = Adam(self.hp.learned_leaves(), lr=self.config.svi_lr)
            if d["optimizer"] is not None:
                self._opt.load_state_dict(d["optimizer"])
        self._rng.set_state(d["rng"])
        self._r_sum = float(d["r_sum"])
        self._r_weight = float(d["r_weight"])
        if "noise_calibration" in d:
            self.noise_calibration.load(d["noise_calibration"])
        self.sweep_log_noise = float(d.get("sweep_log_noise", 0.0))

    def export_globals(self) -> GlobalsSnapshot:
        """The globals as numpy, for workers and readers (see :func:`export_globals`)."""
        return export_globals(self)

    def import_globals(self, snap: GlobalsSnapshot) -> None:
        """Compute against a published snapshot (see :func:`import_globals`)."""
        import_globals(self, snap)

    def learn(
        self,
        batch: Batch,
        states: Mapping[str, UserState | None],
        served: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, UserState]:
        """Learn one minibatch: local step, then global step. Returns the new
        state of every user in the batch; ``states`` may lack new users.
        ``served``: see :meth:`local_update`."""
        update = self.local_update(batch, states, served)
        self.apply_global(update.stats)
        return update.states
