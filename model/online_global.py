"""The learner's side of :class:`model.online.OnlineHPMF`: the global step.

:meth:`GlobalStep.apply_global` applies one batch's statistics: the touched
videos' natural-gradient update (decay, then add), the replay window and its
sweeps (:class:`model.replay_schedule.ReplaySchedule`), Pyro SVI on the
hyper-parameters (:meth:`GlobalStep._svi_step`, on a buffer of recent events),
the noise from the served errors and the catalogue cap.
"""

from __future__ import annotations

import numpy as np
import pyro
import torch

from model.global_stats import GlobalStats
from model.hpmf_model import SVIData, mean_mask
from model.noise_calibration import NoiseCalibration
from model.replay_schedule import ReplaySchedule
from model.svi_loss import svi_loss, svi_padding
from model.svi_surrogate import svi_surrogate
from model.weighted_sums import unique_rows

DTYPE = torch.float64


class GlobalStep(ReplaySchedule):
    """The global step (a mixin of :class:`model.online.OnlineHPMF`)."""

    learner: bool
    version: int
    _rng: torch.Generator
    _svi_buffered: int
    _r_sum: float
    _r_weight: float
    noise_calibration: NoiseCalibration

    def apply_global(self, stats: GlobalStats) -> None:
        """The global step: natural-gradient update of the touched videos, then
        (once enough events gathered) Pyro SVI steps on the hyper-parameters."""
        cfg = self.config
        if not self.learner:
            raise RuntimeError(
                "this model's globals were imported from a snapshot; only the learner "
                "(which owns the natural parameters) may apply a global step"
            )
        self._ensure_hypers(stats.target)
        rows = self._rows(stats.video_ids, register=True)
        self.n_seen += stats.n_events
        keep = float(np.exp(-len(stats.target) / cfg.effective_data_size))
        self._r_sum = keep * self._r_sum + float(np.sum(stats.target))
        self._r_weight = keep * self._r_weight + len(stats.target)
        with torch.no_grad():
            self.hp.b0.fill_(self._r_sum / self._r_weight)
        # 1. Video posteriors: decay old evidence by exp(-dt/N_eff), add the batch's.
        decay = torch.exp(
            -(self.n_seen - self._v_time.index_select(0, rows)) / cfg.effective_data_size
        )
        batch_prec, batch_shift = (
            torch.from_numpy(stats.video_prec),
            torch.from_numpy(stats.video_shift),
        )
        # Gathered once, updated in place, written back (rows are distinct):
        # the same arithmetic as decay * table[rows] + batch, fewer copies.
        d3, d2 = decay[:, None, None], decay[:, None]
        prec = self._v_prec.index_select(0, rows).mul_(d3).add_(batch_prec)
        shift = self._v_shift.index_select(0, rows).mul_(d2).add_(batch_shift)
        self._v_prec.index_copy_(0, rows, prec)
        self._v_shift.index_copy_(0, rows, shift)
        replayed = bool(stats.user_ids) and self.replay.capacity > 0
        w_prec = self._w_prec.index_select(0, rows).mul_(d3)
        w_shift = self._w_shift.index_select(0, rows).mul_(d2)
        if replayed:
            w_prec.add_(batch_prec)
            w_shift.add_(batch_shift)
        self._w_prec.index_copy_(0, rows, w_prec)
        self._w_shift.index_copy_(0, rows, w_shift)
        self._v_time.index_fill_(0, rows, float(self.n_seen))
        self._refresh_videos(rows, prec, shift)
        # 2. The replay window: revisit recent events so the videos learn taste.
        if replayed:
            self.replay.add(
                stats.user_ids,
                rows.numpy()[stats.event_video],
                stats.target,
                float(self.n_seen),
                event_user=stats.event_user,
            )
            self._replay_step()
        # 3. Hyper-parameters by Pyro SVI on a buffer of recent events.
        self._svi_buffer.append((stats, rows.numpy()))
        self._svi_buffered += len(stats.target)
        if self._svi_buffered >= self.svi_interval():
            self._svi_step()
            self._svi_buffer.clear()
            self._svi_buffered = 0
        # 4. The noise from the errors of what was served (model.noise_calibration).
        self.noise_calibration.add(stats.served_sq_err, stats.served_model_var)
        noise_var = self.noise_calibration.noise_var() if cfg.noise_from_served_errors else None
        if noise_var is not None:
            with torch.no_grad():
                self.hp.log_sigma.fill_(0.5 * float(np.log(noise_var)))
        self.enforce_catalogue_cap()
        self.version += 1

    def svi_interval(self) -> int:
        """Events to gather before the next SVI step (see HPMFConfig.svi_interval_max)."""
        cfg = self.config
        grown = int(self.n_seen * cfg.svi_interval_growth)
        return max(cfg.svi_min_events, min(grown, cfg.svi_interval_max))

    def _svi_step(self) -> None:
        cfg = self.config
        if cfg.svi_steps == 0 or self.hp is None or self._opt is None:
            return
        buf = self._svi_buffer
        users_m, users_c, ev_u, ev_v, tgt = [], [], [], [], []
        u_off = 0
        for s, s_rows in buf:
            users_m.append(s.user_mean)
            users_c.append(s.user_cov)
            ev_u.append(s.event_user + u_off)
            u_off += len(s.user_mean)
            ev_v.append(s_rows[s.event_video])
            tgt.append(s.target)
        ev_v_all = np.concatenate(ev_v)
        ev_u_all = np.concatenate(ev_u)
        tgt_all = np.concatenate(tgt)
        live = ev_v_all >= 0  # -1: the video was forgotten by the catalogue cap since
        subset = not live.all()
        if subset:
            ev_v_all, ev_u_all, tgt_all = ev_v_all[live], ev_u_all[live], tgt_all[live]
            if not len(tgt_all):
                return
        if len(tgt_all) > cfg.svi_max_events:
            # The hyper-parameters are few: a random subset of the buffer gives
            # an unbiased gradient at a cost that does not grow with the batch.
            pick = torch.randperm(len(tgt_all), generator=self._rng)[: cfg.svi_max_events].numpy()
            ev_v_all, ev_u_all, tgt_all = ev_v_all[pick], ev_u_all[pick], tgt_all[pick]
            subset = True
        # The distinct videos and users of the events kept (sorted by row and
        # by position in the buffer), each event pointing at its own.
        vrows, ev_video = unique_rows(torch.from_numpy(ev_v_all), self.n_videos)
        vm, vc = self._v_mean.index_select(0, vrows), self._v_cov.index_select(0, vrows)
        event_user = torch.from_numpy(ev_u_all)
        target = torch.from_numpy(tgt_all)
        user_mean = torch.from_numpy(np.concatenate(users_m))
        user_cov = torch.from_numpy(np.concatenate(users_c))
        if subset:  # keep only the users that still have events
            used_u, event_user = unique_rows(event_user, u_off)
            user_mean, user_cov = user_mean[used_u], user_cov[used_u]
        n_events = len(target)
        n_users = len(user_mean)
        jitter = 1e-9 * torch.eye(cfg.dim, dtype=DTYPE)
        pad = svi_padding(cfg)  # None: uncompiled
        data = SVIData.build(
            user_mean,
            torch.linalg.cholesky(user_cov + jitter),
            vm,
            torch.linalg.cholesky(vc + jitter),
            event_user,
            ev_video,
            target,
            n_videos=max(self.n_videos, 1),
            users_size=cfg.effective_data_size * n_users / n_events,
            events_size=cfg.effective_data_size,
            pad_to=pad,
        )
        # Uncompiled: Trace_ELBO's gradients, bit for bit, without Pyro's
        # tracing (model.svi_surrogate; ~7 ms a step less).
        loss_fn = svi_loss if pad is not None else svi_surrogate
        # fork_rng(devices=[]): only the CPU generator (asking for CUDA devices
        # loads the driver library on every call); argument validation off:
        # the inputs are built here and checked once, not at every step.
        with torch.random.fork_rng(devices=[]), pyro.validation_enabled(False):
            # The CPU generator only: torch.manual_seed also seeds every
            # accelerator backend, a cost paid on every step.
            torch.default_generator.manual_seed(
                int(torch.randint(0, 2**31 - 1, (1,), generator=self._rng))
            )
            for _ in range(cfg.svi_steps):
                self._opt.zero_grad()
                # Scale the loss per event so Adam's step size does not depend on N_eff.
                loss = loss_fn(data, cfg, self.hp)
                (loss / cfg.effective_data_size).backward()
                if not cfg.learn_prior_scales:
                    # The taste scales stay put (they shrink towards the zero
                    # fixed point when learned); the bias scales are learned.
                    taste = mean_mask(cfg)
                    for leaf in (self.hp.log_s_u, self.hp.log_s_v):
                        if leaf.grad is not None:
                            leaf.grad.mul_(1.0 - taste)
                self._opt.step()
