"""The learner's replay window: the recent events that the global step revisits.

A single pass over a stream cannot teach the video factors any taste: each
event's evidence reaches its video once, computed with the user's posterior at
that moment, and most users are new at that moment, so their taste is the
prior's (zero) and the evidence carries the bias only. Taste has to be learned
the way stochastic variational inference was designed to run: by going over
the data again and again, alternating the user and the video updates
(:mod:`model.replay_sweep`). The learner therefore keeps the recent events
here: one row per distinct (user, video) pair, its latest aggregated value and
the stream clock when it was learned. Each replay sweep drops what is beyond
the capacity (oldest first); the window lives in the learner only: workers
never see it.

>>> w = ReplayWindow(capacity=3)
>>> w.add(["ann", "bob"], np.array([0, 1]), np.array([4.0, 2.0]), clock=2.0)
>>> w.add(["ann", "cy"], np.array([0, 2]), np.array([5.0, 1.0]), clock=4.0)
>>> user, video, target, clock, n_users = w.arrays()
>>> user.tolist(), video.tolist(), target.tolist(), clock.tolist(), n_users
([1, 0, 2], [1, 0, 2], [2.0, 5.0, 1.0], [2.0, 4.0, 4.0], 3)
>>> len(w)  # rows held: a superseded value stays until the next sweep drops
4
>>> w.drop_oldest(1); w.arrays()[0].tolist(), len(w)
([0, 1], 2)
>>> w.add(["ann"], np.array([0]), np.array([7.0]), clock=5.0)  # supersedes ann's row
>>> w.drop_oldest(0); len(w), w.arrays()[2].tolist()  # joined; arrays() skips the old row
(3, [1.0, 7.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ReplayWindow:
    """The latest value per (user, video) pair of the last ``capacity`` pairs learned."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._user_index: dict[str, int] = {}
        self._users: list[np.ndarray] = []
        self._videos: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []
        self._clocks: list[np.ndarray] = []
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def add(
        self,
        user_ids: Sequence[str],
        video_rows: np.ndarray,
        targets: np.ndarray,
        clock: float,
        event_user: np.ndarray | None = None,
    ) -> None:
        """Append one batch's (user, video row, transformed value) triples. The
        window grows until the next replay sweep, which drops what is beyond
        ``capacity`` (:meth:`drop_oldest`). With ``event_user``, ``user_ids``
        are the batch's distinct users in order of first appearance and
        ``event_user`` says whose each triple is (each name is looked up once)."""
        if self.capacity == 0 or len(video_rows) == 0:
            return
        index = self._user_index
        users = np.fromiter(
            (index.setdefault(u, len(index)) for u in user_ids), dtype=np.int64, count=len(user_ids)
        )
        if event_user is not None:
            users = users[event_user]
        self._users.append(users)
        self._videos.append(np.asarray(video_rows, dtype=np.int64))
        self._targets.append(np.asarray(targets, dtype=np.float64))
        self._clocks.append(np.full(len(users), clock, dtype=np.float64))
        self._rows += len(users)

    def drop_oldest(self, n: int) -> None:
        """Keep all but the ``n`` oldest pairs (of :meth:`arrays`), one row per
        pair, and renumber the users left so the index stays bounded.

        With nothing to drop and no more rows than ``capacity``, the batches'
        rows are only joined into one: a superseded row stays until
        :meth:`arrays` (which skips it) or a later drop; no user loses all
        rows, so the numbering would not change. This saves the learner two
        sorts of the window per replay sweep while the window fills."""
        if n <= 0 and self._rows <= self.capacity:
            if len(self._users) > 1:
                self._users = [np.concatenate(self._users)]
                self._videos = [np.concatenate(self._videos)]
                self._targets = [np.concatenate(self._targets)]
                self._clocks = [np.concatenate(self._clocks)]
            return
        user, video, target, clock, _ = self.arrays()
        keep = slice(max(0, n), None)
        user, video, target, clock = user[keep], video[keep], target[keep], clock[keep]
        names = np.empty(len(self._user_index), dtype=object)
        for name, k in self._user_index.items():
            names[k] = name
        live, user = np.unique(user, return_inverse=True)
        self._user_index = {str(names[k]): i for i, k in enumerate(live.tolist())}
        self._users, self._videos, self._targets, self._clocks = [user], [video], [target], [clock]
        self._rows = len(user)

    def remap_videos(self, new_row: np.ndarray) -> None:
        """Video rows were renumbered (``new_row[old]``, -1: the video is gone):
        follow, and forget the pairs of videos that are gone."""
        user, video, target, clock, _ = self.arrays()
        mapped = np.asarray(new_row, dtype=np.int64)[video]
        keep = mapped >= 0
        self._users, self._videos = [user[keep]], [mapped[keep]]
        self._targets, self._clocks = [target[keep]], [clock[keep]]
        self._rows = int(keep.sum())

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """(user, video row, target, clock, n_users): one row per (user, video)
        pair, its latest value, oldest first; users numbered 0..n_users-1 (some
        numbers may have no row left)."""
        if not self._users:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0), np.zeros(0), 0
        user = np.concatenate(self._users)
        video = np.concatenate(self._videos)
        target = np.concatenate(self._targets)
        clock = np.concatenate(self._clocks)
        if len(user) == 0:
            return user, video, target, clock, len(self._user_index)
        # A pair learned again carries the user's new total for that video
        # (minutes are summed per video): keep its last row only, so nothing
        # is counted twice.
        key = user * (int(video.max()) + 1) + video
        _, last_from_end = np.unique(key[::-1], return_index=True)
        last = np.sort(len(key) - 1 - last_from_end)
        return user[last], video[last], target[last], clock[last], len(self._user_index)
