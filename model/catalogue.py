"""The learner's video catalogue: id-to-row map, the per-video tables, and the cap.

Every per-video quantity of :class:`model.online.OnlineHPMF` lives in one row
of these tables (doubled as videos arrive): the data part of the natural
parameters (``_v_prec``/``_v_shift``), the replay window's share of it
(``_w_prec``/``_w_shift``), the clock of the last evidence (``_v_time``) and
the cached posterior (``_v_mean``/``_v_cov``). New videos are registered at the
video prior plus a deterministic jitter (:func:`video_jitter`); the catalogue
cap forgets the least recently touched ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np
import torch

from model.hyper_state import HyperState
from model.moments import gaussian_posterior

if TYPE_CHECKING:
    from model.global_stats import GlobalStats
    from model.replay_window import ReplayWindow

DTYPE = torch.float64


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
    return video_jitters([video_id], dim, scale, biases)[0]


def video_jitters(video_ids: Sequence[str], dim: int, scale: float, biases: bool) -> np.ndarray:
    """:func:`video_jitter` of many videos at once, (len(video_ids), dim): the
    same numbers, the Box-Muller arithmetic done once for all of them.

    >>> ids = ["v1", "v2", "v3"]
    >>> bool((video_jitters(ids, 5, 0.1, False)[1] == video_jitter("v2", 5, 0.1, False)).all())
    True
    """
    if dim == 0 or not video_ids:
        return np.zeros((len(video_ids), dim))
    n = dim + dim % 2
    digest = b"".join(hashlib.shake_256(v.encode()).digest(8 * n) for v in video_ids)
    u = (np.frombuffer(digest, dtype="<u8") >> np.uint64(11)).astype(np.float64) + 0.5
    u *= 2.0**-53  # uniform in (0, 1)
    u = u.reshape(len(video_ids), n)
    u1, u2 = u[:, 0::2], u[:, 1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    j = (
        scale
        * np.concatenate(
            [radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)], axis=1
        )[:, :dim]
    )
    if biases:
        j[:, -1] = 0.0
    return j


class VideoCatalogue(HyperState):
    """The video tables of :class:`model.online.OnlineHPMF` (a mixin: new videos
    start at the video prior; the model supplies ``n_seen``, the SVI buffer and
    the replay window, which the cap renumbers with the rows)."""

    n_seen: int
    replay: ReplayWindow
    _svi_buffer: list[tuple[GlobalStats, np.ndarray]]
    _remaps: int
    evicted_videos: int

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
        n = len(video_ids)
        if not register:
            # index.get(v, -1) per id, without a Python frame per id (predict
            # meets unregistered videos often: no KeyError round first).
            rows = np.fromiter(map(index.get, video_ids, repeat(-1, n)), dtype=np.int64, count=n)
            return torch.from_numpy(rows)
        try:
            # fromiter + from_numpy: torch.tensor on a long Python list is ~5x slower
            rows = np.fromiter(map(index.__getitem__, video_ids), dtype=np.int64, count=n)
            return torch.from_numpy(rows)
        except KeyError:
            pass
        self._register([v for v in dict.fromkeys(video_ids) if v not in index])
        return self._rows(video_ids, register=False)

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
        jitter = video_jitters(new_ids, cfg.dim, 0.1 * cfg.prior_scale, cfg.biases)
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
            double(self._v_time),
            double(self._v_mean),
            double(self._v_cov),
        )

    def _video_moments(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of videos by row; row -1 (unknown) gets the video prior."""
        if rows.numel() == 0 or int(rows.min()) >= 0:  # all known: no masking
            return self._v_mean.index_select(0, rows), self._v_cov.index_select(0, rows)
        # Some row is -1 here. index_select and index_copy_ of the unknown rows:
        # the same copies as advanced indexing and boolean-mask assignment,
        # ~30% less time (predict meets this on most MovieLens batches).
        safe = rows.clamp(min=0)
        mean = self._v_mean.index_select(0, safe)
        cov = self._v_cov.index_select(0, safe)
        unknown = (rows < 0).nonzero().squeeze(1)
        pm, ps = self._video_prior()
        n, d = len(unknown), mean.shape[-1]
        mean.index_copy_(0, unknown, pm.expand(n, d))
        cov.index_copy_(0, unknown, torch.diag(ps.pow(2)).expand(n, d, d))
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

        >>> from model.batch import Batch
        >>> from model.config import HPMFConfig
        >>> from model.online import OnlineHPMF
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
            return (
                self._v_prec,
                self._v_shift,
                self._w_prec,
                self._w_shift,
                self._v_time,
                self._v_mean,
                self._v_cov,
            )

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

    def _refresh_videos(
        self,
        rows: torch.Tensor,
        prec: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
    ) -> None:
        """Recompute the cached posteriors of ``rows`` from their natural
        parameters (``prec``/``shift``: those rows of ``_v_prec``/``_v_shift``,
        when the caller already holds them)."""
        d = self.config.dim
        pm, ps = self._video_prior()
        n = rows.shape[0]
        prior_prec = torch.diag_embed(ps.pow(-2)).expand(n, d, d)
        prior_shift = (ps.pow(-2) * pm).expand(n, d)
        mean, cov, _ = gaussian_posterior(
            prior_prec,
            prior_shift,
            self._v_prec[rows] if prec is None else prec,
            self._v_shift[rows] if shift is None else shift,
            tril=False,
        )
        self._v_mean.index_copy_(0, rows, mean)
        self._v_cov.index_copy_(0, rows, cov)
