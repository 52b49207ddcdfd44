"""The worker's side of :class:`model.online.OnlineHPMF`: predict, and the local step.

:meth:`LocalStep.predict` gives each (user, video) pair's predictive mean and
sd; :meth:`LocalStep.local_update` folds a batch into its users' histories,
recomputes their posteriors in closed form (:mod:`model.local_step`) and
gathers the statistics the learner's global step applies
(:class:`model.global_stats.GlobalStats`), among them the served errors of the
noise calibration (:mod:`model.noise_calibration`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np
import torch

from model.batch import Batch
from model.catalogue import VideoCatalogue
from model.global_stats import GlobalStats, LocalUpdate
from model.local_step import HistoryEntries, user_local_step
from model.moments import feature_mean, feature_moments
from model.noise_calibration import served_noise_pairs
from model.posterior import UserState
from model.transform import forward
from model.video_step import video_batch_statistics
from model.weighted_sums import unique_rows

DTYPE = torch.float64


class LocalStep(VideoCatalogue):
    """Prediction and the closed-form local step (a mixin of :class:`model.online.OnlineHPMF`)."""

    version: int

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
        mean = self._b0() + eb_x.index_select(0, g) + (ey_x.index_select(0, g) * wm).sum(-1)
        outer_w = (ey_w.unsqueeze(-1) * ey_w.unsqueeze(-2)).reshape(n, d * d)
        var = (
            self._noise_var()
            + (wc.reshape(n, d * d) * eyy_x.reshape(u, d * d).index_select(0, g)).sum(-1)
            + (outer_w * xc.reshape(u, d * d).index_select(0, g)).sum(-1)
        )
        return mean.numpy(), var.sqrt().numpy()

    def local_update(
        self,
        batch: Batch,
        states: Mapping[str, UserState | None],
        served: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> LocalUpdate:
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
        # Each distinct (user, video) pair with its first event in the batch,
        # and the batch's own sum per pair: the served-error target, and the
        # value of a pair whose video a short history already dropped (one pass).
        first, sums = _pairs(batch)
        pairs = list(first)
        batch_sums = sums if cfg.noise_from_served_errors else None
        served_err = None
        if batch_sums is not None:
            if served is not None and len(served[0]) != len(batch):
                raise ValueError(
                    f"served has {len(served[0])} predictions for a batch of {len(batch)}"
                )
            at = (
                np.fromiter(first.values(), dtype=np.int64, count=len(first))
                if served is not None
                else None
            )
            # Only each user's first pair of the batch: it was predicted exactly
            # as at minibatch 1; the user's later pairs from a state that does
            # not hold the batch's earlier events (see served_noise_pairs).
            keep = served_noise_pairs(pairs) if cfg.noise_first_event_only else None
            if keep is not None:
                at = None if at is None else at[keep]
                noise_pairs = [pairs[k] for k in keep.tolist()]
            else:
                noise_pairs = pairs
            served_err = self._served_errors(noise_pairs, states, batch_sums, served, at)
        new_states: dict[str, UserState] = {}
        for uid in users:
            old = states.get(uid)
            new_states[uid] = old.copy() if old is not None else UserState()
        UserState.fold_events(new_states, batch.user_ids, batch.video_ids, batch.values.tolist())
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
        e_all = np.fromiter(
            chain.from_iterable(e_vs), dtype=np.float64, count=2 * len(e_vs)
        ).reshape(-1, 2)
        e_user = np.repeat(np.arange(len(users), dtype=np.int64), e_len)
        e_val = e_all[:, 0]
        e_age = (
            np.array(e_nev, dtype=np.float64)[e_user] - e_all[:, 1]
        )  # seq -> age in the user's events
        rows = self._rows(e_vid, register=True)
        targets = forward(cfg.transform, np.asarray(e_val))
        self._ensure_hypers(forward(cfg.transform, batch.values))
        weights = torch.from_numpy(cfg.user_forgetting**e_age)
        entries = HistoryEntries(torch.from_numpy(e_user), rows, torch.from_numpy(targets), weights)
        prior_mean, prior_scale = self._user_prior()
        b0, noise_var = self._b0(), self._noise_var()
        vm, vc = self._v_mean[: self.n_videos], self._v_cov[: self.n_videos]
        u_mean, u_cov, _ = user_local_step(
            entries,
            len(users),
            vm,
            vc,
            b0,
            noise_var,
            prior_mean,
            prior_scale,
            cfg.biases,
            tril=False,
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
                totals.append(sums[(u, v)])
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
            known = torch.tensor(
                [
                    (o := states.get(u)) is None
                    or (o.mean is not None and o.cov is not None and o.seen_at is not None)
                    for u in users
                ]
            )
            batch_pairs = set(pairs)
            keep = known[entries.user]
            if not bool(keep.all()):
                keep = keep | torch.tensor(
                    [
                        (users[k], v) in batch_pairs
                        for k, v in zip(e_user.tolist(), e_vid, strict=True)
                    ],
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
                decay = float(
                    np.exp(-max(self.n_seen - old.seen_at, 0.0) / cfg.effective_data_size)
                )
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
                c_tgt.append(
                    torch.from_numpy(forward(cfg.transform, np.array(o_val, dtype=np.float64)))
                )
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
            uniq, inv = unique_rows(all_rows, self.n_videos)
            vids = [self.video_ids[r] for r in uniq.tolist()]
            prec, shift = video_batch_statistics(
                inv,
                len(vids),
                torch.cat(src_mean),
                torch.cat(src_cov),
                torch.cat(c_tgt),
                b0,
                noise_var,
                cfg.biases,
                weight=torch.cat(c_w),
                event_source=torch.cat(c_src),
            )
            vindex = {v: k for k, v in enumerate(vids)}
            ev_video = np.array([vindex[v] for _, v in pairs], dtype=np.int64)
        else:
            # One term per distinct (user, video) pair of the batch.
            vids = list(dict.fromkeys(v for _, v in pairs))
            vindex = {v: k for k, v in enumerate(vids)}
            ev_video = np.array([vindex[v] for _, v in pairs], dtype=np.int64)
            prec, shift = video_batch_statistics(
                torch.from_numpy(ev_video),
                len(vids),
                u_mean,
                u_cov,
                torch.from_numpy(ev_target),
                b0,
                noise_var,
                cfg.biases,
                event_source=torch.from_numpy(ev_user),
            )
        stats = GlobalStats(
            video_ids=vids,
            video_prec=prec.numpy(),
            video_shift=shift.numpy(),
            user_mean=u_mean.numpy(),
            user_cov=u_cov.numpy(),
            event_user=ev_user,
            event_video=ev_video,
            target=ev_target,
            n_events=len(batch),
            user_ids=list(users),
        )
        if served_err is not None:
            stats.served_sq_err, stats.served_model_var = served_err
        return LocalUpdate(new_states, stats)

    def _served_errors(
        self,
        pairs: list[tuple[str, str]],
        states: Mapping[str, UserState | None],
        sums: dict[tuple[str, str], float],
        served: tuple[np.ndarray, np.ndarray] | None = None,
        at: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each pair's squared error against the mean served from its user's
        state before this batch, and that prediction's variance less the noise.
        The target is the pair's value in this batch (the first time the pair
        is seen, what was served was a prediction of exactly that). ``served``
        (per event) with ``at`` (each pair's first event): the caller's
        predictions, made from the same states; otherwise predicted here."""
        if served is not None and at is not None:
            mean, std = (
                np.asarray(served[0], dtype=np.float64)[at],
                np.asarray(served[1], dtype=np.float64)[at],
            )
        else:
            mean, std = self.predict([states.get(u) for u, _ in pairs], [v for _, v in pairs])
        target = forward(
            self.config.transform, np.array([sums[p] for p in pairs], dtype=np.float64)
        )
        model_var = np.maximum(std**2 - float(self._noise_var()), 0.0)
        return (target - mean) ** 2, model_var


def _pairs(batch: Batch) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], float]]:
    """Each distinct (user, video) pair's first event, and the batch's values
    summed per pair (both in first-seen order)."""
    first: dict[tuple[str, str], int] = {}
    sums: dict[tuple[str, str], float] = {}
    for k, (p, val) in enumerate(
        zip(zip(batch.user_ids, batch.video_ids, strict=True), batch.values.tolist(), strict=True)
    ):
        total = sums.get(p)
        if total is None:
            first[p] = k
            sums[p] = 0.0 + val
        else:
            sums[p] = total + val
    return first, sums
