"""When the learner runs its replay sweeps, and how a finished one is folded in.

A sweep (:mod:`model.replay_sweep`) runs on copies of what it needs
(:mod:`model.replay_job`), at once or in a background thread; its result
replaces the window's share of the window videos' evidence, while the
evidence the global steps added meanwhile stays.
"""

from __future__ import annotations

import numpy as np
import torch

from model.catalogue import VideoCatalogue
from model.replay_job import SweepInputs, SweepJob, SweepThread
from model.replay_sweep import Candidates
from model.sweep_noise import step_log_factor


class ReplaySchedule(VideoCatalogue):
    """The replay sweeps' schedule (a mixin of :class:`model.online.OnlineHPMF`)."""

    _next_replay: int
    _sweep: SweepJob | None
    _sweeper: SweepThread
    sweeps_folded: int
    sweeps_voided: int
    sweep_log_noise: float  # log of the sweeps' learned noise factor (model.sweep_noise)
    _candidates: Candidates | None  # the last sweep's candidate videos

    def replay_interval(self) -> int:
        """Events between replay sweeps: clamp(events learned x growth,
        replay_interval_min, replay_interval_max). A sweep costs about the
        window's size, so a growing interval keeps the learner's work per event
        bounded while the window fills, and frequent early, when the videos
        know least."""
        cfg = self.config
        grown = int(self.n_seen * cfg.replay_interval_growth)
        return max(cfg.replay_interval_min, min(grown, cfg.replay_interval_max))

    def _replay_step(self) -> None:
        """Fold in a background sweep that finished; start the next one when due."""
        job = self._sweep
        if job is not None and job.done():
            self._sweep = None
            self._fold_sweep(job)
        if self._sweep is None and self.n_seen >= self._next_replay:
            job = self._start_sweep()
            if job is not None and job.done():
                self._fold_sweep(job)
            else:
                self._sweep = job

    def finish_replay(self) -> None:
        """Wait for a background sweep in flight and fold it in (tests; a clean stop)."""
        job, self._sweep = self._sweep, None
        if job is not None:
            self._fold_sweep(job)

    def _start_sweep(self) -> SweepJob | None:
        """Coordinate ascent over the replay window (:mod:`model.replay_sweep`),
        on copies of what it needs, so it can run while batches keep coming."""
        cfg = self.config
        self._next_replay = self.n_seen + self.replay_interval()
        window = self.replay.arrays()
        if len(window[0]) == 0:
            return None
        # The distinct video rows, sorted (np.unique's result, by counting: no sort).
        rows = torch.from_numpy(np.flatnonzero(np.bincount(window[1])))
        # Evidence outside the window (decayed to now) stays; the window's share is replaced.
        decay = torch.exp(-(self.n_seen - self._v_time[rows]) / cfg.effective_data_size)
        w_prec = decay[:, None, None] * self._w_prec[rows]
        w_shift = decay[:, None] * self._w_shift[rows]
        n_drop = max(0, len(window[0]) - self.replay.capacity)
        inputs = SweepInputs(
            window,
            rows,
            self._v_mean[rows],
            self._v_cov[rows],
            decay[:, None, None] * self._v_prec[rows] - w_prec,
            decay[:, None] * self._v_shift[rows] - w_shift,
            self._b0().clone(),
            self._noise_var().clone(),
            tuple(t.clone() for t in self._user_prior(serving=False)),
            tuple(t.clone() for t in self._video_prior()),
            cfg.biases,
            float(self.n_seen),
            cfg.effective_data_size,
            cfg.replay_iterations,
            n_drop,
            cfg.sweep_user_variance,
            float(np.exp(self.sweep_log_noise)),
            self._probe() if cfg.sweep_noise_learning else 1.0,
            cfg.sweep_noise_holdout,
            self._candidates if cfg.sweep_noise_learning else None,
        )
        return SweepJob.start(
            inputs, w_prec, w_shift, self._remaps, self._sweeper if cfg.replay_background else None
        )

    def _probe(self) -> float:
        """The factor by which a sweep's candidate pass changes the sweeps'
        noise factor: c and 1 / c on alternate sweeps (:mod:`model.sweep_noise`)."""
        c = self.config.sweep_noise_probe
        return c if self.sweeps_folded % 2 == 0 else 1.0 / c

    def _fold_sweep(self, job: SweepJob) -> None:
        """Swap the window share a sweep replaced for its result.

        The share it replaced (decayed from the sweep's start to now) comes
        out, its result (decayed likewise) goes in; evidence the global steps
        added while it ran stays. Folded at once (the harness), this is exactly
        "window share := the sweep's result"."""
        result = job.result()
        if job.remaps != self._remaps:
            self.sweeps_voided += 1
            self._candidates = None
            return  # the catalogue cap renumbered the rows since: the result refers to old rows
        self.sweeps_folded += 1
        if result.probe_errors is not None:
            cfg = self.config
            self.sweep_log_noise = step_log_factor(
                self.sweep_log_noise,
                result.probe_errors,
                cfg.sweep_noise_rate,
                cfg.sweep_noise_bound,
            )
        self._candidates = result.candidates
        rows, neff = job.inputs.rows, self.config.effective_data_size
        decay = torch.exp(-(self.n_seen - self._v_time[rows]) / neff)
        since = float(np.exp(-(self.n_seen - job.inputs.clock) / neff))
        kept_prec, kept_shift = since * result.kept_prec, since * result.kept_shift
        out_prec, out_shift = since * job.window_prec, since * job.window_shift
        # Pairs leaving the window hand their last evidence to the kept part.
        prec = (
            decay[:, None, None] * self._v_prec[rows]
            - out_prec
            + kept_prec
            + since * result.dropped_prec
        )
        shift = (
            decay[:, None] * self._v_shift[rows]
            - out_shift
            + kept_shift
            + since * result.dropped_shift
        )
        self._v_prec.index_copy_(0, rows, prec)
        self._v_shift.index_copy_(0, rows, shift)
        self._w_prec[rows] = decay[:, None, None] * self._w_prec[rows] - out_prec + kept_prec
        self._w_shift[rows] = decay[:, None] * self._w_shift[rows] - out_shift + kept_shift
        self._v_time[rows] = float(self.n_seen)
        self._refresh_videos(rows, prec, shift)
        self.replay.drop_oldest(job.inputs.n_drop)
