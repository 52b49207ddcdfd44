"""Online HPMF: the two verbs the service calls, ``predict`` and ``learn``.

One minibatch does (see :meth:`OnlineHPMF.learn`):

1. **Local step, exact** (:mod:`model.local_step`): every touched user's
   q(x_i) is recomputed from their aggregated history against the pooled prior
   and the current video posteriors, in closed form, vectorised over the batch.
2. **Global step** (:mod:`model.video_step`, :mod:`model.hpmf_model`): a
   natural-gradient SVI step on the touched videos' posteriors, then Pyro SVI
   steps on the hyper-parameters (b0, sigma, mu_u, s_u, mu_v, s_v), the
   likelihood scaled to the effective data size N_eff.

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

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import pyro
import torch

from model.adam import Adam
from model.batch import Batch
from model.config import HPMFConfig
from model.globals_snapshot import GlobalsSnapshot
from model.hpmf_model import Hypers, SVIData, hpmf_guide, hpmf_model, mean_mask
from model.local_step import HistoryEntries, user_local_step
from model.moments import feature_mean, feature_moments, gaussian_posterior
from model.noise_calibration import NoiseCalibration
from model.posterior import PooledPrior, UserState
from model.replay_job import SweepInputs, SweepJob, SweepThread
from model.replay_window import ReplayWindow
from model.transform import forward
from model.video_step import video_batch_statistics

DTYPE = torch.float64


@dataclass
class GlobalStats:
    """What a local update hands to the global step, keyed by video id (not row),
    so a learner in another process can apply it. All arrays are numpy.

    ``video_prec``/``video_shift``: natural-parameter increments per touched video.
    ``user_mean``/``user_cov``: posteriors of the batch's users (for SVI).
    ``event_user``/``event_video``/``target``: the batch's (deduplicated) events.
    """

    video_ids: list[str]
    video_prec: np.ndarray
    video_shift: np.ndarray
    user_mean: np.ndarray
    user_cov: np.ndarray
    event_user: np.ndarray
    event_video: np.ndarray
    target: np.ndarray
    n_events: int
    user_ids: list[str] = field(default_factory=list)
    """The batch's users (``event_user`` indexes them): the learner's replay
    window needs to know whose events these are. Empty in statistics written by
    an older worker: those still update the videos, but are not replayed."""
    choice_mean: np.ndarray | None = None
    """(U, K_c+1) the batch's users' choice posteriors q(a_i), padded, in
    ``user_ids`` order (:mod:`model.choice`; computed by the worker's local
    step, applied by the learner). None in statistics of a worker that does
    not run the choice component: those update the minutes model only."""
    choice_cov: np.ndarray | None = None
    served_sq_err: np.ndarray = field(default_factory=lambda: np.zeros(0))
    served_model_var: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per event: the squared error of the mean served from the user's state
    before the batch, and that prediction's variance less the noise (the
    learner's noise estimate, :mod:`model.noise_calibration`). Empty from an
    older worker."""


@dataclass
class LocalUpdate:
    states: dict[str, UserState]
    stats: GlobalStats


def video_jitter(video_id: str, dim: int, scale: float, biases: bool) -> np.ndarray:
    """A small deterministic offset for a new video's initial posterior mean.

    Factor models need their symmetry broken; seeding it from the id means
    every worker starts a new video at the same point. Normal draws by
    Box-Muller from the id's hash (a seeded numpy generator per video costs
    more than the rest of registering it).

    >>> a = video_jitter("v1", 4, 0.1, biases=True)
    >>> a.shape, float(a[-1]), bool((a == video_jitter("v1", 4, 0.1, True)).all())
    ((4,), 0.0, True)
    """
    if dim == 0:
        return np.zeros(0)
    n = dim + dim % 2
    digest = hashlib.shake_256(video_id.encode()).digest(8 * n)
    u = (np.frombuffer(digest, dtype="<u8") >> np.uint64(11)).astype(np.float64) + 0.5
    u *= 2.0**-53  # uniform in (0, 1)
    u1, u2 = u[0::2], u[1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    j = scale * np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])[:dim]
    if biases:
        j[-1] = 0.0
    return j


class OnlineHPMF:
    """Hierarchical PMF learned online by minibatched SVI (see module docstring)."""

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
        self._svi_buffered = 0  # events in _svi_buffer (a running count: summing it per batch was quadratic)
        self.learner = True  # False once globals were imported from a snapshot
        # The learner's window of recent events, revisited by replay sweeps.
        self.replay = ReplayWindow(self.config.replay_window_events)
        self._next_replay = self.config.replay_warmup_events
        self._sweep: SweepJob | None = None  # a background sweep in flight
        self._sweeper = SweepThread()
        self._remaps = 0  # catalogue-cap renumberings: a sweep started before one is void
        self.sweeps_folded = 0
        self.noise_calibration = NoiseCalibration(self.config.noise_calibration_horizon)
        self.sweeps_voided = 0  # started before a renumbering, so thrown away
        # b0 is the forgetting-weighted mean of the transformed values seen:
        # learned by SVI it drifts against the video biases it is confounded with.
        self._r_sum = 0.0
        self._r_weight = 0.0
        self.evicted_videos = 0  # videos forgotten by the catalogue cap, in all

    # ------------------------------------------------------------ globals
    def _ensure_hypers(self, targets: np.ndarray) -> Hypers:
        if self.hp is None:
            b0 = float(np.mean(targets)) if targets.size else 0.0
            sd = float(np.std(targets)) if targets.size > 1 else 1.0
            self.hp = Hypers.initial(self.config, b0=b0, sigma=max(sd, 1e-2))
            self._opt = Adam(self.hp.learned_leaves(), lr=self.config.svi_lr)
        return self.hp

    def _b0(self) -> torch.Tensor:
        if self.hp is None:  # nothing learned yet: b0's prior mean
            return torch.tensor(self.config.global_mean_prior, dtype=DTYPE)
        return self.hp.b0.detach()

    def _noise_var(self) -> torch.Tensor:
        if self.hp is None:
            return torch.tensor(1.0, dtype=DTYPE)
        return (2 * self.hp.log_sigma.detach()).exp()

    def _user_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if self.hp is None or not cfg.user_pooling:
            return torch.zeros(cfg.dim, dtype=DTYPE), Hypers.initial_scales(cfg).clone()
        return self.hp.mu_u_loc.detach() * mean_mask(cfg), self.hp.log_s_u.detach().exp()

    def _video_prior(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if self.hp is None or not cfg.video_pooling:
            return torch.zeros(cfg.dim, dtype=DTYPE), Hypers.initial_scales(cfg).clone()
        return self.hp.mu_v.detach() * mean_mask(cfg), self.hp.log_s_v.detach().exp()

    def pooled_prior(self) -> PooledPrior:
        """What a brand-new user gets: N(E[mu_u], diag(s_u)^2 + Var[mu_u])."""
        mean, scale = self._user_prior()
        var = scale.pow(2)
        if self.hp is not None and self.config.user_pooling:
            var = var + (2 * self.hp.mu_u_log_scale.detach()).exp() * mean_mask(self.config)
        return PooledPrior(mean.numpy().copy(), torch.diag(var).numpy())

    @property
    def sigma(self) -> float:
        return float(self._noise_var().sqrt())

    @property
    def global_mean(self) -> float:
        return float(self._b0())

    # ------------------------------------------------------------ videos
    def _reset_videos(self, cap: int) -> None:
        """Empty video tables with room for ``cap`` videos (they double as needed)."""
        d = self.config.dim
        self.video_index: dict[str, int] = {}
        self.video_ids: list[str] = []
        self._v_prec = torch.zeros(cap, d, d, dtype=DTYPE)  # data part of natural params
        self._v_shift = torch.zeros(cap, d, dtype=DTYPE)
        self._v_time = torch.zeros(cap, dtype=DTYPE)
        self._v_mean = torch.zeros(cap, d, dtype=DTYPE)  # cached posterior
        self._v_cov = torch.zeros(cap, d, d, dtype=DTYPE)
        # The replay window's share of _v_prec/_v_shift (decayed with them): what
        # a replay sweep replaces. The rest (evidence of events that left the
        # window, or were learned before a restart emptied it) is kept as is.
        self._w_prec = torch.zeros(cap, d, d, dtype=DTYPE)
        self._w_shift = torch.zeros(cap, d, dtype=DTYPE)

    def _rows(self, video_ids: Sequence[str], register: bool) -> torch.Tensor:
        """Rows of videos; unknown ones are registered at their prior (or -1)."""
        index = self.video_index
        try:
            # fromiter + from_numpy: torch.tensor on a long Python list is ~5x slower
            rows = np.fromiter(map(index.__getitem__, video_ids), dtype=np.int64, count=len(video_ids))
            return torch.from_numpy(rows)
        except KeyError:
            pass
        if register:
            self._register([v for v in dict.fromkeys(video_ids) if v not in index])
            return self._rows(video_ids, register=False)
        rows = np.fromiter((index.get(v, -1) for v in video_ids), dtype=np.int64, count=len(video_ids))
        return torch.from_numpy(rows)

    def _register(self, new_ids: list[str]) -> None:
        """Add videos at their prior (plus a deterministic jitter), all at once."""
        if not new_ids:
            return
        first = len(self.video_ids)
        while first + len(new_ids) > self._v_mean.shape[0]:
            self._grow()
        for k, vid in enumerate(new_ids):
            self.video_index[vid] = first + k
        self.video_ids.extend(new_ids)
        cfg = self.config
        mean, scale = self._video_prior()
        jitter = np.stack([video_jitter(v, cfg.dim, 0.1 * cfg.prior_scale, cfg.biases) for v in new_ids])
        rows = slice(first, first + len(new_ids))
        self._v_mean[rows] = mean + torch.from_numpy(jitter.reshape(len(new_ids), cfg.dim))
        self._v_cov[rows] = torch.diag(scale.pow(2))
        self._v_time[rows] = self.n_seen

    def _grow(self) -> None:
        def double(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, torch.zeros_like(t)], 0)

        self._v_prec, self._v_shift = double(self._v_prec), double(self._v_shift)
        self._w_prec, self._w_shift = double(self._w_prec), double(self._w_shift)
        self._v_time, self._v_mean, self._v_cov = (
            double(self._v_time), double(self._v_mean), double(self._v_cov),
        )  # fmt: skip

    def _video_moments(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of videos by row; row -1 (unknown) gets the video prior."""
        known = rows >= 0
        safe = rows.clamp(min=0)
        mean = self._v_mean[safe]  # advanced indexing: already copies
        cov = self._v_cov[safe]
        if not bool(known.all()):
            pm, ps = self._video_prior()
            mean[~known] = pm
            cov[~known] = torch.diag(ps.pow(2))
        return mean, cov

    @property
    def n_videos(self) -> int:
        return len(self.video_ids)

    def enforce_catalogue_cap(self) -> int:
        """Forget the least recently touched videos once there are more than
        ``config.max_videos`` (0: no cap), down to nine tenths of the cap, so
        the tables are compacted once per tenth of the cap of new videos, not
        on every batch of a flood. Returns how many were forgotten.

        "Touched" is the global step's clock (``_v_time``): the last time a
        batch brought evidence about the video. A forgotten video that is seen
        again is registered anew at the prior, as any new video.

        >>> m = OnlineHPMF(HPMFConfig(n_factors=1, max_videos=10, seed=1))
        >>> for k in range(5):
        ...     _ = m.learn(Batch.of(["u"] * 4, [f"v{k}-{j}" for j in range(4)], [1.0] * 4), {})
        >>> m.n_videos <= 10, m.evicted_videos > 0, "v4-0" in m.video_index
        (True, True, True)
        """
        cap = self.config.max_videos
        n = self.n_videos
        if cap <= 0 or n <= cap:
            return 0
        target = max(1, cap - cap // 10)
        # Oldest first; ties (same clock) by row, i.e. registration order.
        order = np.lexsort((np.arange(n), self._v_time[:n].numpy()))
        keep = np.sort(order[n - target :])
        remap = np.full(n, -1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        idx = torch.from_numpy(keep)
        # Every per-video table, the replay window's share (_w_prec/_w_shift)
        # included: a sweep subtracts it from _v_prec/_v_shift row by row.
        def tables() -> tuple[torch.Tensor, ...]:
            return (self._v_prec, self._v_shift, self._w_prec, self._w_shift, self._v_time, self._v_mean, self._v_cov)

        old = tables()
        ids = [self.video_ids[k] for k in keep.tolist()]
        self._reset_videos(max(64, cap))
        for new, src in zip(tables(), old, strict=True):
            new[: len(keep)] = src[idx]
        self.video_ids = ids
        self.video_index = {v: k for k, v in enumerate(ids)}
        # Buffered SVI statistics and the replay window refer to rows: map
        # them; events of a forgotten video are left out of both.
        self._svi_buffer = [(s, remap[rows]) for s, rows in self._svi_buffer]
        self.replay.remap_videos(remap)  # the replay window refers to rows too
        self._remaps += 1
        forgotten = n - len(keep)
        self.evicted_videos += forgotten
        return forgotten

    def export_globals(self) -> GlobalsSnapshot:
        """The globals as numpy, for workers and readers (see :func:`export_globals`)."""
        return export_globals(self)

    def import_globals(self, snap: GlobalsSnapshot) -> None:
        """Compute against a published snapshot (see :func:`import_globals`)."""
        import_globals(self, snap)

    # ------------------------------------------------------------ predict
    def predict(
        self, states: Sequence[UserState | None], video_ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predictive mean and standard deviation of each (user, video) pair,
        on the transformed scale. A ``None`` state is a new user (pooled prior).

        Var = sigma^2 + tr(S_w E[y_x y_x^T]) + E[y_w]^T S_x E[y_w], exact for
        independent Gaussian q(x_i), q(w_j).
        """
        if len(states) != len(video_ids):
            raise ValueError(f"{len(states)} users but {len(video_ids)} videos")
        n, d = len(states), self.config.dim
        if n == 0:
            return np.empty(0), np.empty(0)
        # Moments once per distinct posterior (slot 0: the pooled prior), then
        # gathered per pair: a minibatch holds far fewer users than events.
        prior = self.pooled_prior()
        slot_of: dict[int, int] = {}
        means, covs = [prior.mean], [prior.cov]
        slots = np.zeros(n, dtype=np.int64)
        for k, s in enumerate(states):
            if s is None or s.mean is None or s.cov is None:
                continue
            slot = slot_of.get(id(s))
            if slot is None:
                slot = slot_of[id(s)] = len(means)
                means.append(s.mean)
                covs.append(s.cov)
            slots[k] = slot
        u = len(means)
        xm = torch.from_numpy(np.stack(means).reshape(u, d))
        xc = torch.from_numpy(np.stack(covs).reshape(u, d, d))
        g = torch.from_numpy(slots)
        wm, wc = self._video_moments(self._rows([str(v) for v in video_ids], register=False))
        ey_x, eyy_x, _, eb_x = feature_moments(xm, xc, self.config.biases)
        ey_w = feature_mean(wm, self.config.biases)  # the feature [v, 1] the user's bias meets
        mean = self._b0() + eb_x[g] + (ey_x[g] * wm).sum(-1)
        outer_w = (ey_w.unsqueeze(-1) * ey_w.unsqueeze(-2)).reshape(n, d * d)
        var = (
            self._noise_var()
            + (wc.reshape(n, d * d) * eyy_x.reshape(u, d * d)[g]).sum(-1)
            + (outer_w * xc.reshape(u, d * d)[g]).sum(-1)
        )
        return mean.numpy(), var.sqrt().numpy()

    # ------------------------------------------------------------ learn
    def learn(
        self, batch: Batch, states: Mapping[str, UserState | None],
        served: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, UserState]:  # fmt: skip
        """Learn one minibatch: local step, then global step. Returns the new
        state of every user in the batch; ``states`` may lack new users.
        ``served``: see :meth:`local_update`."""
        update = self.local_update(batch, states, served)
        self.apply_global(update.stats)
        return update.states

    def local_update(
        self, batch: Batch, states: Mapping[str, UserState | None],
        served: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> LocalUpdate:  # fmt: skip
        """Fold the batch into the users' histories and recompute their
        posteriors exactly (the local step). Globals are not changed, except
        that new videos are registered at their prior.

        ``served``: the predictive mean and std of each of the batch's events
        that the caller already computed with :meth:`predict` from ``states``
        and this model as they are now (the evaluation harness scores exactly
        those): the served errors of the noise calibration are then taken from
        them instead of predicting every pair a second time."""
        cfg = self.config
        if not isinstance(batch, Batch):
            raise TypeError(f"learn() takes a model.batch.Batch, got {type(batch).__name__}")
        bad = np.flatnonzero(batch.values > cfg.max_value)
        if bad.size:
            raise ValueError(f"value {batch.values[bad[0]]} exceeds max_value {cfg.max_value}")
        users = batch.users()
        # Each distinct (user, video) pair with its first event in the batch.
        first: dict[tuple[str, str], int] = {}
        for k, p in enumerate(zip(batch.user_ids, batch.video_ids, strict=True)):
            first.setdefault(p, k)
        pairs = list(first)
        # The batch's own sum per pair: the served-error target, and the value of
        # a pair whose video a short history already dropped (computed once).
        batch_sums = _pair_sums(batch) if cfg.noise_from_served_errors else None
        served_err = None
        if batch_sums is not None:
            if served is not None and len(served[0]) != len(batch):
                raise ValueError(f"served has {len(served[0])} predictions for a batch of {len(batch)}")
            at = np.fromiter(first.values(), dtype=np.int64, count=len(first)) if served is not None else None
            served_err = self._served_errors(pairs, states, batch_sums, served, at)
        new_states: dict[str, UserState] = {}
        for uid in users:
            old = states.get(uid)
            new_states[uid] = old.copy() if old is not None else UserState()
        for uid, vid, val in zip(batch.user_ids, batch.video_ids, batch.values.tolist(), strict=True):
            new_states[uid].fold(vid, val)
        for st in new_states.values():
            st.trim(cfg.history_size)  # bounded to H videos at every minibatch's end
        self._rows(batch.video_ids, register=True)

        # Local step over all touched users' histories, flattened in one pass
        # (per-user numpy calls dominate when a batch touches many users).
        e_vid: list[str] = []
        e_vs: list[tuple[float, int]] = []
        e_len: list[int] = []
        e_nev: list[int] = []
        for uid in users:
            st = new_states[uid]
            h = st.history
            e_vid.extend(h)
            e_vs.extend(h.values())
            e_len.append(len(h))
            e_nev.append(st.n_events)
        e_all = np.fromiter(chain.from_iterable(e_vs), dtype=np.float64, count=2 * len(e_vs)).reshape(-1, 2)
        e_user = np.repeat(np.arange(len(users), dtype=np.int64), e_len)
        e_val = e_all[:, 0]
        e_age = np.array(e_nev, dtype=np.float64)[e_user] - e_all[:, 1]  # seq -> age in the user's events
        rows = self._rows(e_vid, register=True)
        targets = forward(cfg.transform, np.asarray(e_val))
        self._ensure_hypers(forward(cfg.transform, batch.values))
        weights = torch.from_numpy(cfg.user_forgetting**e_age)
        entries = HistoryEntries(torch.from_numpy(e_user), rows, torch.from_numpy(targets), weights)
        prior_mean, prior_scale = self._user_prior()
        b0, noise_var = self._b0(), self._noise_var()
        vm, vc = self._v_mean[: self.n_videos], self._v_cov[: self.n_videos]
        u_mean, u_cov, _ = user_local_step(
            entries, len(users), vm, vc, b0, noise_var, prior_mean, prior_scale, cfg.biases, tril=False
        )
        u_mean_np, u_cov_np = u_mean.numpy(), u_cov.numpy()
        for k, uid in enumerate(users):
            s = new_states[uid]
            s.mean = u_mean_np[k].copy()
            s.cov = u_cov_np[k].copy()
            s.model_version = self.version
            s.seen_at = float(self.n_seen)

        # Statistics for the global step.
        # One term per distinct (user, video) pair of the batch, valued at the
        # user's aggregated total (the batch's own sum if a history shorter
        # than the batch already dropped the video).
        uindex = {u: k for k, u in enumerate(users)}
        ev_user = np.fromiter((uindex[u] for u, _ in pairs), dtype=np.int64, count=len(pairs))
        totals: list[float] = []
        for u, v in pairs:
            entry = new_states[u].history.get(v)
            if entry is None:
                batch_sums = batch_sums if batch_sums is not None else _pair_sums(batch)
                totals.append(batch_sums[(u, v)])
            else:
                totals.append(entry[0])
        ev_target = forward(cfg.transform, np.array(totals, dtype=np.float64))
        if cfg.refresh_video_evidence:
            # Every touched user's evidence about the videos in their history,
            # computed with their new posterior, replaces the evidence they gave
            # last time (withdrawn with its old posterior, decayed as the rest).
            # Video evidence is weighted 1: the user-side forgetting says how a
            # user's taste drifts, not how much a video's ratings are worth.
            # A user whose earlier contribution is unknown (a state saved
            # without its posterior or clock) gives evidence on this batch's
            # videos only, so nothing is ever counted twice.
            known = torch.tensor([
                (o := states.get(u)) is None
                or (o.mean is not None and o.cov is not None and o.seen_at is not None)
                for u in users
            ])  # fmt: skip
            batch_pairs = set(pairs)
            keep = known[entries.user]
            if not bool(keep.all()):
                keep = keep | torch.tensor(
                    [(users[k], v) in batch_pairs for k, v in zip(e_user.tolist(), e_vid, strict=True)],
                    dtype=torch.bool,
                )
            # Each term uses one of: a new posterior (rows 0..U-1), a user's old
            # posterior (U..U+O-1) or zeros (the batch's slots, weight 0); the
            # moments are computed once per posterior, not once per term.
            n_u = len(users)
            c_rows = [rows[keep]]
            c_src = [entries.user[keep]]
            c_tgt = [entries.target[keep]]
            c_w = [torch.ones(int(keep.sum()), dtype=DTYPE)]
            o_means: list[np.ndarray] = []
            o_covs: list[np.ndarray] = []
            o_vid: list[str] = []
            o_val: list[float] = []
            o_src: list[int] = []
            o_w: list[float] = []
            for uid in users:
                old = states.get(uid)
                if old is None or old.mean is None or old.cov is None or old.seen_at is None:
                    continue
                # Entries pushed out of the history keep their last evidence.
                kept = new_states[uid].history
                oh = old.history
                vids_u = [v for v in oh if v in kept]
                if not vids_u:
                    continue
                decay = float(np.exp(-max(self.n_seen - old.seen_at, 0.0) / cfg.effective_data_size))
                src = n_u + len(o_means)
                o_means.append(np.asarray(old.mean, dtype=np.float64))
                o_covs.append(np.asarray(old.cov, dtype=np.float64))
                o_vid.extend(vids_u)
                o_val.extend([oh[v][0] for v in vids_u])
                o_src.extend([src] * len(vids_u))
                o_w.extend([-decay] * len(vids_u))
            src_mean = [u_mean]
            src_cov = [u_cov]
            if o_vid:
                c_rows.append(self._rows(o_vid, register=True))
                c_src.append(torch.tensor(o_src, dtype=torch.long))
                c_tgt.append(torch.from_numpy(forward(cfg.transform, np.array(o_val, dtype=np.float64))))
                c_w.append(torch.tensor(o_w, dtype=DTYPE))
                src_mean.append(torch.from_numpy(np.stack(o_means)))
                src_cov.append(torch.from_numpy(np.stack(o_covs)))
            # The batch's own videos always get a slot (the SVI step refers to
            # them) even if a history shorter than the batch already dropped them.
            pair_rows = self._rows([v for _, v in pairs], register=True)
            zero_src = n_u + len(o_means)
            src_mean.append(torch.zeros(1, cfg.dim, dtype=DTYPE))
            src_cov.append(torch.zeros(1, cfg.dim, cfg.dim, dtype=DTYPE))
            c_rows.append(pair_rows)
            c_src.append(torch.full((len(pair_rows),), zero_src, dtype=torch.long))
            c_tgt.append(torch.zeros(len(pair_rows), dtype=DTYPE))
            c_w.append(torch.zeros(len(pair_rows), dtype=DTYPE))
            all_rows = torch.cat(c_rows)
            uniq, inv = torch.unique(all_rows, return_inverse=True)
            vids = [self.video_ids[r] for r in uniq.tolist()]
            prec, shift = video_batch_statistics(
                inv, len(vids), torch.cat(src_mean), torch.cat(src_cov), torch.cat(c_tgt),
                b0, noise_var, cfg.biases, weight=torch.cat(c_w), event_source=torch.cat(c_src),
            )  # fmt: skip
            vindex = {v: k for k, v in enumerate(vids)}
            ev_video = np.array([vindex[v] for _, v in pairs], dtype=np.int64)
        else:
            # One term per distinct (user, video) pair of the batch.
            vids = list(dict.fromkeys(v for _, v in pairs))
            vindex = {v: k for k, v in enumerate(vids)}
            ev_video = np.array([vindex[v] for _, v in pairs], dtype=np.int64)
            prec, shift = video_batch_statistics(
                torch.from_numpy(ev_video), len(vids), u_mean, u_cov,
                torch.from_numpy(ev_target), b0, noise_var, cfg.biases, event_source=torch.from_numpy(ev_user),
            )  # fmt: skip
        stats = GlobalStats(
            video_ids=vids, video_prec=prec.numpy(), video_shift=shift.numpy(),
            user_mean=u_mean.numpy(), user_cov=u_cov.numpy(),
            event_user=ev_user, event_video=ev_video, target=ev_target, n_events=len(batch),
            user_ids=list(users),
        )  # fmt: skip
        if served_err is not None:
            stats.served_sq_err, stats.served_model_var = served_err
        return LocalUpdate(new_states, stats)

    def _served_errors(
        self, pairs: list[tuple[str, str]], states: Mapping[str, UserState | None],
        sums: dict[tuple[str, str], float], served: tuple[np.ndarray, np.ndarray] | None = None,
        at: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Each pair's squared error against the mean served from its user's
        state before this batch, and that prediction's variance less the noise.
        The target is the pair's value in this batch (the first time the pair
        is seen, what was served was a prediction of exactly that). ``served``
        (per event) with ``at`` (each pair's first event): the caller's
        predictions, made from the same states; otherwise predicted here."""
        if served is not None and at is not None:
            mean, std = np.asarray(served[0], dtype=np.float64)[at], np.asarray(served[1], dtype=np.float64)[at]
        else:
            mean, std = self.predict([states.get(u) for u, _ in pairs], [v for _, v in pairs])
        target = forward(self.config.transform, np.array([sums[p] for p in pairs], dtype=np.float64))
        model_var = np.maximum(std**2 - float(self._noise_var()), 0.0)
        return (target - mean) ** 2, model_var

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
        decay = torch.exp(-(self.n_seen - self._v_time[rows]) / cfg.effective_data_size)
        batch_prec, batch_shift = torch.from_numpy(stats.video_prec), torch.from_numpy(stats.video_shift)
        self._v_prec[rows] = decay[:, None, None] * self._v_prec[rows] + batch_prec
        self._v_shift[rows] = decay[:, None] * self._v_shift[rows] + batch_shift
        replayed = bool(stats.user_ids) and self.replay.capacity > 0
        self._w_prec[rows] = decay[:, None, None] * self._w_prec[rows] + (batch_prec if replayed else 0.0)
        self._w_shift[rows] = decay[:, None] * self._w_shift[rows] + (batch_shift if replayed else 0.0)
        self._v_time[rows] = float(self.n_seen)
        self._refresh_videos(rows)
        # 2. The replay window: revisit recent events so the videos learn taste.
        if replayed:
            users = [stats.user_ids[k] for k in stats.event_user.tolist()]
            self.replay.add(users, rows.numpy()[stats.event_video], stats.target, float(self.n_seen))
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
        rows = torch.from_numpy(np.unique(window[1]))
        # Evidence outside the window (decayed to now) stays; the window's share is replaced.
        decay = torch.exp(-(self.n_seen - self._v_time[rows]) / cfg.effective_data_size)
        w_prec = decay[:, None, None] * self._w_prec[rows]
        w_shift = decay[:, None] * self._w_shift[rows]
        n_drop = max(0, len(window[0]) - self.replay.capacity)
        inputs = SweepInputs(
            window, rows, self._v_mean[rows], self._v_cov[rows],
            decay[:, None, None] * self._v_prec[rows] - w_prec, decay[:, None] * self._v_shift[rows] - w_shift,
            self._b0().clone(), self._noise_var().clone(), tuple(t.clone() for t in self._user_prior()),
            tuple(t.clone() for t in self._video_prior()), cfg.biases, float(self.n_seen),
            cfg.effective_data_size, cfg.replay_iterations, n_drop,
        )  # fmt: skip
        return SweepJob.start(inputs, w_prec, w_shift, self._remaps, self._sweeper if cfg.replay_background else None)

    def _fold_sweep(self, job: SweepJob) -> None:
        """Swap the window share a sweep replaced for its result.

        The share it replaced (decayed from the sweep's start to now) comes
        out, its result (decayed likewise) goes in; evidence the global steps
        added while it ran stays. Folded at once (the harness), this is exactly
        "window share := the sweep's result"."""
        result = job.result()
        if job.remaps != self._remaps:
            self.sweeps_voided += 1
            return  # the catalogue cap renumbered the rows since: the result refers to old rows
        self.sweeps_folded += 1
        rows, neff = job.inputs.rows, self.config.effective_data_size
        decay = torch.exp(-(self.n_seen - self._v_time[rows]) / neff)
        since = float(np.exp(-(self.n_seen - job.inputs.clock) / neff))
        kept_prec, kept_shift = since * result.kept_prec, since * result.kept_shift
        out_prec, out_shift = since * job.window_prec, since * job.window_shift
        # Pairs leaving the window hand their last evidence to the kept part.
        self._v_prec[rows] = decay[:, None, None] * self._v_prec[rows] - out_prec + kept_prec + since * result.dropped_prec
        self._v_shift[rows] = decay[:, None] * self._v_shift[rows] - out_shift + kept_shift + since * result.dropped_shift
        self._w_prec[rows] = decay[:, None, None] * self._w_prec[rows] - out_prec + kept_prec
        self._w_shift[rows] = decay[:, None] * self._w_shift[rows] - out_shift + kept_shift
        self._v_time[rows] = float(self.n_seen)
        self._refresh_videos(rows)
        self.replay.drop_oldest(job.inputs.n_drop)

    def svi_interval(self) -> int:
        """Events to gather before the next SVI step (see HPMFConfig.svi_interval_max)."""
        cfg = self.config
        grown = int(self.n_seen * cfg.svi_interval_growth)
        return max(cfg.svi_min_events, min(grown, cfg.svi_interval_max))

    def _refresh_videos(self, rows: torch.Tensor) -> None:
        d = self.config.dim
        pm, ps = self._video_prior()
        n = rows.shape[0]
        prior_prec = torch.diag_embed(ps.pow(-2)).expand(n, d, d)
        prior_shift = (ps.pow(-2) * pm).expand(n, d)
        mean, cov, _ = gaussian_posterior(
            prior_prec, prior_shift, self._v_prec[rows], self._v_shift[rows], tril=False
        )
        self._v_mean[rows] = mean
        self._v_cov[rows] = cov

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
        if not live.all():
            ev_v_all, ev_u_all, tgt_all = ev_v_all[live], ev_u_all[live], tgt_all[live]
            if not len(tgt_all):
                return
        vrows_all = torch.from_numpy(ev_v_all)
        vrows, ev_video = torch.unique(vrows_all, return_inverse=True)
        vm, vc = self._v_mean[vrows], self._v_cov[vrows]
        event_user = torch.from_numpy(ev_u_all)
        target = torch.from_numpy(tgt_all)
        user_mean = torch.from_numpy(np.concatenate(users_m))
        user_cov = torch.from_numpy(np.concatenate(users_c))
        if not live.all():  # keep only the users that still have events
            used_u, event_user = torch.unique(event_user, return_inverse=True)
            user_mean, user_cov = user_mean[used_u], user_cov[used_u]
        if len(target) > cfg.svi_max_events:
            # The hyper-parameters are few: a random subset of the buffer gives
            # an unbiased gradient at a cost that does not grow with the batch.
            pick = torch.randperm(len(target), generator=self._rng)[: cfg.svi_max_events]
            event_user, target, ev_video = event_user[pick], target[pick], ev_video[pick]
            used_u, event_user = torch.unique(event_user, return_inverse=True)
            user_mean, user_cov = user_mean[used_u], user_cov[used_u]
            used_v, ev_video = torch.unique(ev_video, return_inverse=True)
            vrows, vm, vc = vrows[used_v], vm[used_v], vc[used_v]
        n_events = len(target)
        n_users = len(user_mean)
        jitter = 1e-9 * torch.eye(cfg.dim, dtype=DTYPE)
        data = SVIData(
            user_mean=user_mean,
            user_tril=torch.linalg.cholesky(user_cov + jitter),
            video_rows=vrows, video_mean=vm, video_tril=torch.linalg.cholesky(vc + jitter),
            event_user=event_user, event_video=ev_video,
            target=target, n_videos=max(self.n_videos, 1),
            users_size=cfg.effective_data_size * n_users / n_events,
            events_size=cfg.effective_data_size,
        )  # fmt: skip
        elbo = pyro.infer.Trace_ELBO()
        # fork_rng(devices=[]): only the CPU generator (asking for CUDA devices
        # loads the driver library on every call); argument validation off:
        # the inputs are built here and checked once, not at every step.
        with torch.random.fork_rng(devices=[]), pyro.validation_enabled(False):
            # The CPU generator only: torch.manual_seed also seeds every
            # accelerator backend, a cost paid on every step.
            torch.default_generator.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self._rng)))
            for _ in range(cfg.svi_steps):
                self._opt.zero_grad()
                # Scale the loss per event so Adam's step size does not depend on N_eff.
                loss = elbo.differentiable_loss(hpmf_model, hpmf_guide, data, cfg, self.hp)
                (loss / cfg.effective_data_size).backward()
                if not cfg.learn_prior_scales:
                    # The taste scales stay put (they shrink towards the zero
                    # fixed point when learned); the bias scales are learned.
                    taste = mean_mask(cfg)
                    for leaf in (self.hp.log_s_u, self.hp.log_s_v):
                        if leaf.grad is not None:
                            leaf.grad.mul_(1.0 - taste)
                self._opt.step()


def _pair_sums(batch: Batch) -> dict[tuple[str, str], float]:
    """The batch's values summed per (user, video)."""
    sums: dict[tuple[str, str], float] = {}
    for u, v, val in zip(batch.user_ids, batch.video_ids, batch.values.tolist(), strict=True):
        sums[(u, v)] = sums.get((u, v), 0.0) + val
    return sums


# ---------------------------------------------------------------- snapshots
def export_globals(model: OnlineHPMF) -> GlobalsSnapshot:
    """The globals every worker and reader needs, as numpy (see GlobalsSnapshot)."""
    n = model.n_videos
    pm, ps = model._user_prior()
    vm, vs = model._video_prior()
    prior = model.pooled_prior()
    return GlobalsSnapshot(
        version=model.version,
        config=model.config.to_dict(),
        b0=model.global_mean,
        sigma=model.sigma,
        user_prior_mean=pm.numpy().copy(),
        user_prior_scale=ps.numpy().copy(),
        user_prior_cov=prior.cov,
        video_prior_mean=vm.numpy().copy(),
        video_prior_scale=vs.numpy().copy(),
        video_ids=list(model.video_ids),
        video_mean=model._v_mean[:n].numpy().copy(),
        video_cov=model._v_cov[:n].numpy().copy(),
        n_seen=float(model.n_seen),
    )


def import_globals(model: OnlineHPMF, snap: GlobalsSnapshot) -> None:
    """Make ``model`` compute local steps and predictions against ``snap``.

    Used by workers that do not hold the learner role: their model has no
    natural parameters of its own, so :meth:`OnlineHPMF.apply_global` must not
    be called on it (it raises)."""
    snap.validate()
    cfg = model.config
    if snap.dim != cfg.dim:
        raise ValueError(f"globals snapshot has factor dimension {snap.dim}, this model {cfg.dim}")
    hp = Hypers.initial(cfg, b0=snap.b0, sigma=max(snap.sigma, 1e-6))
    with torch.no_grad():
        hp.mu_u_loc.copy_(torch.from_numpy(np.asarray(snap.user_prior_mean, dtype=np.float64)))
        hp.log_s_u.copy_(torch.from_numpy(np.log(np.asarray(snap.user_prior_scale, dtype=np.float64))))
        hp.mu_v.copy_(torch.from_numpy(np.asarray(snap.video_prior_mean, dtype=np.float64)))
        hp.log_s_v.copy_(torch.from_numpy(np.log(np.asarray(snap.video_prior_scale, dtype=np.float64))))
        extra = np.diag(snap.user_prior_cov) - np.asarray(snap.user_prior_scale) ** 2
        hp.mu_u_log_scale.copy_(torch.from_numpy(0.5 * np.log(np.maximum(extra, 1e-12))))
    model.hp = hp
    model._opt = None
    model.learner = False
    model.version = snap.version
    model.n_seen = int(snap.n_seen)
    v = len(snap.video_ids)
    model._reset_videos(max(64, v))
    model.video_ids = list(snap.video_ids)
    model.video_index = {vid: k for k, vid in enumerate(model.video_ids)}
    model._v_mean[:v] = torch.from_numpy(np.asarray(snap.video_mean, dtype=np.float64))
    model._v_cov[:v] = torch.from_numpy(np.asarray(snap.video_cov, dtype=np.float64))
