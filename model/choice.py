"""The choice component: which videos a user *starts* (implicit feedback).

The minutes model (:mod:`model.online`) predicts how long a user watches a
video given that they started it. What a screen of recommendations earns is

    E[minutes if shown] = P(start | shown) x E[minutes | start],

and the first factor is learned here, as a Bayesian implicit-ALS
(Hu, Koren and Volinsky 2008) with the same shape as the minutes model: a
pooled prior over user factors, shared video factors, a closed-form refresh of
each touched user (the worker's local step) and a closed-form update of the
video factors over a replay window (the learner's global step).

Model. User i has taste a_i in R^K; video j has q_j = [z_j, e_j] (K factors and
a popularity offset e_j). With the user feature y_i = [a_i, 1] the score is

    s_ij = y_i . q_j = a_i . z_j + e_j,

and the pseudo-likelihood over *every* video j of the catalogue is Gaussian:

    p_ij ~ N(s_ij, 1 / c_ij),   p_ij = 1 if i started j else 0,
    c_ij = w0                         (not started: a weak negative)
    c_ij = w0 + alpha * f^age_ij       (started; age = the user's later events)

so recently started videos count most (f: ``user_forgetting``). Priors:
a_i ~ N(mu_a, diag(s_a^2)) pooled (mu_a, s_a learned from the users of the
window by empirical Bayes at each sweep), q_j ~ N(mu_q, diag(s_q^2)).

**User step (closed form, O(K^3 + n_i K^2)).** With E[.] under q(q_j),

    Lambda_i = diag(s_a^-2) + w0 G_zz + sum_{j in I_i} (c_ij - w0) E[z_j z_j^T]
    h_i      = s_a^-2 mu_a  - w0 g_ez + sum_{j in I_i} [c_ij E[z_j] - (c_ij - w0) E[e_j z_j]]
    q(a_i)   = N(Lambda_i^-1 h_i, Lambda_i^-1)

where G_zz = sum_j E[z_j z_j^T] and g_ez = sum_j E[e_j z_j] run over the whole
catalogue: the Gram-matrix trick, so the sum over all unwatched videos costs
O(K^2) per user, computed once per global version.

**Video step (closed form, the same trick on the other side).** With
E[y_i y_i^T] from q(a_i), decays d (exp(-age / N_eff) in events: the learner
forgets old evidence as the minutes model does),

    Lambda_j = diag(s_q^-2) + w0 G_u + sum_{i in U_j} (c'_ij - w0 d_i) E[y_i y_i^T]
    h_j      = s_q^-2 mu_q  + sum_{i in U_j} c'_ij E[y_i]
    G_u      = sum_i d_i E[y_i y_i^T],   c'_ij = (w0 + alpha) d_ij

over the users and (user, video) pairs of the replay window; ``sweep_every``
events apart all videos are recomputed from the window, and in between each
event's video gets its pair's term added at once.

Serving. q(a_i) and q(q_j) are Gaussian (covariances served times the noise
variance sigma^2 that implicit ALS fixes at 1: estimated from the residuals at
each sweep, :meth:`ChoiceModel.served_cov`; the means do not depend on it), so
s_ij has mean E[y_i].m_j and variance tr(S_j E[y y^T]) + m_j^T S_y m_j: exactly the minutes model's
predictive with biases, b0 = 0 and a user "bias" fixed at 0. That is how
:mod:`streamer.reader.lookup_math` serves it (one more packed matrix pass), and why a
user's choice posterior is stored padded to K+1 dims, [a_i, 0].
The served user vector adds a session term, E[a_i] + gamma x mean z_k over the
user's latest L started videos (:meth:`ChoiceModel.served_means`), and P(start)
is a softmax of lambda s (:func:`streamer.reader.lookup_math.start_probability`).

>>> m = ChoiceModel(ChoiceConfig(n_factors=2, sweep_every=4))
>>> st = {}
>>> for u, v in [("ann", "a"), ("bob", "a"), ("ann", "b"), ("cat", "c"), ("bob", "b")]:
...     st[u] = m.learn_event(u, v, st.get(u))
>>> st["ann"].history, st["ann"].mean.shape, m.n_videos
(['a', 'b'], (3,), 3)
>>> s = m.score_all(None)  # a new user: a and b were started twice, c once
>>> s.shape, bool(s[0] > s[2] and s[1] > s[2])
((3,), True)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from model.choice_catalogue import retain_videos
from model.choice_config import ChoiceConfig, ChoiceState
from model.choice_link import new_link, observe_start
from model.choice_sweep import sweep_window
from model.choice_user_step import feature_second_moment, pad_user, session_means, user_step
from model.online import video_jitter

__all__ = [
    "ChoiceConfig",
    "ChoiceModel",
    "ChoiceState",
    "feature_second_moment",
    "pad_user",
    "user_step",
]


class ChoiceModel:
    """Learns q(q_j) (the learner) and computes q(a_i) (the worker's step).

    Video rows are registered in order of first appearance, like
    :class:`model.online.OnlineHPMF`. The learner keeps a replay window of
    (user, video) pairs and each window user's latest posterior.
    """

    def __init__(self, config: ChoiceConfig | None = None) -> None:
        self.config = config or ChoiceConfig()
        d = self.config.dim
        self.video_index: dict[str, int] = {}
        self.video_ids: list[str] = []
        self._mean = np.zeros((64, d))
        self._cov = np.zeros((64, d, d))
        self._prec = np.zeros((64, d, d))  # data part of the natural parameters
        self._shift = np.zeros((64, d))
        self.gram = np.zeros((d, d))  # sum_j E[q_j q_j^T] over the catalogue
        k = self.config.n_factors
        self.prior_mean = np.zeros(k)
        self.prior_var = np.full(k, self.config.prior_scale**2)
        self.video_prior_mean = np.zeros(d)
        self.video_prior_var = np.full(d, self.config.prior_scale**2)
        self.clock, self.version = 0, 0  # events learned, global version
        self.noise_var = 1.0  # sigma^2 of the pseudo-likelihood (``served_cov``)
        self._pairs: OrderedDict[tuple[str, int], int] = OrderedDict()  # (user, row) -> clock
        self._users: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}  # latest (mean, cov, clock)
        self._gu_weight: dict[str, float] = {}  # the weight each user's E[yy^T] has in G_u
        self._since_sweep = 0
        self._gu = np.zeros((d, d))
        self.link = new_link(self.config)  # P(start)'s learned lambda (None: the fixed one)

    # ------------------------------------------------------------ videos
    @property
    def n_videos(self) -> int:
        return len(self.video_ids)

    def video_mean(self) -> np.ndarray:
        return self._mean[: self.n_videos]

    def video_cov(self) -> np.ndarray:
        return self._cov[: self.n_videos]

    def register(self, video_ids: Sequence[str]) -> None:
        """Add unknown videos at the video prior."""
        for vid in video_ids:
            if vid in self.video_index:
                continue
            row = len(self.video_ids)
            if row >= self._mean.shape[0]:
                self._mean, self._cov, self._prec, self._shift = (
                    np.concatenate([a, np.zeros_like(a)])
                    for a in (self._mean, self._cov, self._prec, self._shift)
                )
            self.video_index[vid] = row
            self.video_ids.append(vid)
            # Factor models need their symmetry broken (all-zero z is a fixed point).
            jitter = video_jitter(vid, self.config.dim, self.config.init_jitter, biases=True)
            self._set_video(row, self.video_prior_mean + jitter, np.diag(self.video_prior_var))

    def _set_video(self, row: int, mean: np.ndarray, cov: np.ndarray) -> None:
        old = self._cov[row] + np.outer(self._mean[row], self._mean[row])
        self._mean[row], self._cov[row] = mean, cov
        self.gram += cov + np.outer(mean, mean) - old

    def _refresh(self, rows: np.ndarray) -> None:
        """q(q_j) from the prior, the negatives' w0 G_u and the rows' own statistics.
        ``rows`` must not repeat (the Gram update below is per distinct row)."""
        if rows.size == 0:
            return
        w0 = self.config.negative_weight
        prec = np.diag(1.0 / self.video_prior_var) + w0 * self._user_gram() + self._prec[rows]
        shift = self.video_prior_mean / self.video_prior_var + self._shift[rows]
        cov = np.linalg.inv(prec)
        cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
        mean = np.einsum("nab,nb->na", cov, shift)
        # One vectorised Gram update instead of one per row (a sweep refreshes
        # every video: a Python loop over 10,000 rows cost ~50 ms).
        old = self._cov[rows] + self._mean[rows][:, :, None] * self._mean[rows][:, None, :]
        new = cov + mean[:, :, None] * mean[:, None, :]
        self._mean[rows], self._cov[rows] = mean, cov
        self.gram += new.sum(0) - old.sum(0)

    def _user_gram(self) -> np.ndarray:
        """G_u = sum_i d_i E[y_i y_i^T] over the window's users."""
        return self._gu

    # ------------------------------------------------------------ the user step
    def user_posterior(self, history: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """q(a_i), padded to [a_i, 0], from the started videos ``history`` (oldest
        first) against the current video posteriors; unknown videos are skipped."""
        cfg = self.config
        recent = [v for v in history[-cfg.history_size :] if v in self.video_index]
        rows = np.fromiter((self.video_index[v] for v in recent), dtype=np.int64, count=len(recent))
        ages = np.arange(len(recent) - 1, -1, -1, dtype=np.float64)
        conf = cfg.negative_weight + cfg.positive_weight * cfg.user_forgetting**ages
        mean, cov = user_step(
            self._mean[rows],
            self._cov[rows],
            conf,
            self.gram,
            self.prior_mean,
            self.prior_var,
            cfg.negative_weight,
        )
        return pad_user(mean, cov)

    def user_posteriors(self, histories: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`user_posterior` for many users at once, vectorised (the
        worker's local step for a whole minibatch): (U, K+1) means and
        (U, K+1, K+1) covariances, padded. The same closed form, the same
        numbers up to rounding; one batched K x K inversion instead of U."""
        cfg = self.config
        n_users = len(histories)
        rows_l: list[int] = []
        lens = np.zeros(n_users, dtype=np.int64)
        index = self.video_index
        for u, h in enumerate(histories):
            recent = [index[v] for v in h[-cfg.history_size :] if v in index]
            rows_l.extend(recent)
            lens[u] = len(recent)
        return self._posteriors_of_rows(np.asarray(rows_l, dtype=np.int64), lens)

    def _posteriors_of_rows(
        self, rows: np.ndarray, lens: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`user_posteriors` of users given as video rows, each user's
        ``lens[u]`` rows contiguous and oldest first (at most history_size)."""
        cfg = self.config
        k, d, n_users = cfg.n_factors, cfg.dim, lens.shape[0]
        owner = np.repeat(np.arange(n_users), lens)
        # age = how many of the user's started videos came after this one
        ends = np.cumsum(lens)
        ages = (ends[owner] - 1 - np.arange(rows.shape[0])).astype(np.float64)
        w0 = cfg.negative_weight
        conf = w0 + cfg.positive_weight * cfg.user_forgetting**ages
        extra = conf - w0
        qm = self._mean[rows]
        eqq = self._cov[rows] + qm[:, :, None] * qm[:, None, :]
        per_prec = extra[:, None, None] * eqq[:, :k, :k]
        per_shift = conf[:, None] * qm[:, :k] - extra[:, None] * eqq[:, k, :k]
        prec = np.zeros((n_users, k, k))
        shift = np.zeros((n_users, k))
        if rows.size:  # each user's entries are contiguous: segment sums (np.add.at is ~10x slower)
            nz = lens > 0
            starts = (ends - lens)[nz]
            prec[nz] = np.add.reduceat(per_prec, starts, axis=0)
            shift[nz] = np.add.reduceat(per_shift, starts, axis=0)
        prec += np.diag(1.0 / self.prior_var) + w0 * self.gram[:k, :k]
        shift += self.prior_mean / self.prior_var - w0 * self.gram[k, :k]
        cov = np.linalg.inv(prec)
        cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
        mean = np.einsum("uab,ub->ua", cov, shift)
        out_m = np.zeros((n_users, d))
        out_c = np.zeros((n_users, d, d))
        out_m[:, :k] = mean
        out_c[:, :k, :k] = cov
        return out_m, out_c

    def served_means(self, histories: Sequence[Sequence[str]], means: np.ndarray) -> np.ndarray:
        """The user vectors ``recommend`` serves: :func:`model.choice_user_step.session_means`
        against the current videos (the learner fits the videos to the posteriors alone)."""
        cfg = self.config
        rows = [
            [self.video_index[v] for v in h[-cfg.session_size :] if v in self.video_index]
            for h in histories
        ]
        return session_means(self._mean[:, : cfg.n_factors], rows, means, cfg.session_weight)

    def served_cov(self, cov: np.ndarray) -> np.ndarray:
        """A covariance as served: times sigma^2 (conjugate: priors in units of sigma^2)."""
        return self.noise_var * np.asarray(cov)

    def prior_state(self) -> tuple[np.ndarray, np.ndarray]:
        """What a brand-new user gets: the pooled prior, padded."""
        return pad_user(self.prior_mean.copy(), np.diag(self.prior_var))

    def local_step(self, user: str, video: str, state: ChoiceState | None) -> ChoiceState:
        """The worker's step: fold the event into the user's started videos and
        recompute q(a_i) in closed form. Globals are not changed (except that an
        unknown video is registered at its prior)."""
        st = ChoiceState() if state is None else state.copy()
        if video in st.history:
            st.history.remove(video)
        st.history.append(video)
        del st.history[: max(0, len(st.history) - self.config.history_size)]
        self.register([video])
        st.mean, st.cov = self.user_posterior(st.history)
        return st

    # ------------------------------------------------------------ the global step
    def global_step(self, user: str, video: str, state: ChoiceState) -> None:
        """The learner's step for one event whose user is now at ``state``: the
        pair joins the window, the user's posterior replaces its earlier one in
        G_u, the video gets the pair's term; a full sweep every ``sweep_every``."""
        cfg = self.config
        observe_start(self, user, state.history[:-1], video)  # P(start)'s lambda, before learning
        self.register([video])
        row = self.video_index[video]
        self.clock += 1
        self._pairs.pop((user, row), None)
        self._pairs[(user, row)] = self.clock
        while len(self._pairs) > cfg.window:
            self._pairs.popitem(last=False)
        assert state.mean is not None and state.cov is not None
        old = self._users.get(user)
        gu = self._gu
        ey, eyy = feature_second_moment(state.mean, state.cov)
        if old is not None:
            gu -= self._gu_weight.get(user, 1.0) * feature_second_moment(old[0], old[1])[1]
        gu += eyy
        self._gu_weight[user] = 1.0
        self._users[user] = (state.mean, state.cov, self.clock)
        w0, a = cfg.negative_weight, cfg.positive_weight
        self._prec[row] += a * eyy
        self._shift[row] += (w0 + a) * ey
        self._refresh(np.array([row]))
        self._since_sweep += 1
        if self._since_sweep >= cfg.sweep_every:
            self.sweep()
        self.version += 1

    def global_batch(
        self,
        users: Sequence[str],
        videos: Sequence[str],
        pairs: Sequence[tuple[int, int]],
        means: np.ndarray,
        covs: np.ndarray,
    ) -> None:
        """The learner's step for one minibatch (the service's path): ``pairs``
        are (user index, video index) of the batch's distinct (user, video)
        events in stream order, ``means``/``covs`` the users' new padded
        posteriors (from the worker's :meth:`user_posteriors`). The same terms
        as :meth:`global_step` per pair, but the touched videos are refreshed
        once per batch, not once per event; a sweep when due."""
        cfg = self.config
        if not pairs:
            return
        self.register(videos)
        vrows = np.fromiter(
            (self.video_index[v] for v in videos), dtype=np.int64, count=len(videos)
        )
        ey, eyy = feature_second_moment(means, covs)
        # G_u: each user's new E[yy^T] replaces the one it had in it.
        olds = [
            (self._users[uid], self._gu_weight.get(uid, 1.0)) for uid in users if uid in self._users
        ]
        if olds:
            o_eyy = feature_second_moment(
                np.stack([o[0][0] for o in olds]), np.stack([o[0][1] for o in olds])
            )[1]
            self._gu -= np.einsum("u,uab->ab", np.array([o[1] for o in olds]), o_eyy)
        self._gu += eyy.sum(0)
        w0, a = cfg.negative_weight, cfg.positive_weight
        pu = np.fromiter((u for u, _ in pairs), dtype=np.int64, count=len(pairs))
        pr = vrows[np.fromiter((j for _, j in pairs), dtype=np.int64, count=len(pairs))]
        np.add.at(self._prec, pr, a * eyy[pu])
        np.add.at(self._shift, pr, (w0 + a) * ey[pu])
        for u, row in zip(pu.tolist(), pr.tolist(), strict=True):
            self.clock += 1
            key = (users[u], row)
            self._pairs.pop(key, None)
            self._pairs[key] = self.clock
        self._since_sweep += len(pairs)
        while len(self._pairs) > cfg.window:
            self._pairs.popitem(last=False)
        for u, uid in enumerate(users):
            self._users[uid] = (means[u], covs[u], self.clock)
            self._gu_weight[uid] = 1.0
        self._refresh(np.unique(pr))
        if self._since_sweep >= cfg.sweep_every:
            self.sweep()
        self.version += 1

    def learn_event(self, user: str, video: str, state: ChoiceState | None) -> ChoiceState:
        """Local step then global step (one process doing both)."""
        st = self.local_step(user, video, state)
        self.global_step(user, video, st)
        return st

    def sweep(self) -> None:
        """Recompute every video from the window with the users' latest posteriors
        (decayed), re-estimate the pooled user prior, and refresh all videos."""
        cfg = self.config
        self._since_sweep = 0
        live = {u for u, _ in self._pairs}
        for u in [u for u in self._users if u not in live]:
            del self._users[u]
        if not self._users:
            return
        for _ in range(cfg.sweep_iterations):
            sweep_window(self)

    def retain(self, video_ids: Sequence[str]) -> int:
        """Forget every video not in ``video_ids`` (:mod:`model.choice_catalogue`);
        returns how many. A forgotten video seen again starts at the prior."""
        return retain_videos(self, video_ids)

    # ------------------------------------------------------------ scoring (tests, docs)
    def score_all(self, state: ChoiceState | None) -> np.ndarray:
        """E[s_ij] for every video (the mean score; serving is in streamer.reader.lookup_math)."""
        mean = self.prior_state()[0] if state is None or state.mean is None else state.mean
        return self.video_mean() @ np.append(mean[:-1], 1.0)
