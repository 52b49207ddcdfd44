"""A user's history is bounded to the H most recently watched videos after every minibatch."""

from __future__ import annotations

from model.batch import Batch
from model.config import HPMFConfig
from model.online import OnlineHPMF


def test_history_keeps_the_most_recent_videos_after_the_batch() -> None:
    m = OnlineHPMF(HPMFConfig(n_factors=2, history_size=3))
    s = m.learn(Batch.of(["ann"] * 5, ["a", "b", "c", "d", "e"], [1, 2, 3, 4, 5]), {})
    assert list(s["ann"].history) == ["c", "d", "e"] and s["ann"].n_events == 5
    s = m.learn(Batch.of(["ann", "ann"], ["c", "f"], [10, 6]), s)
    # c re-watched: summed (3 + 10) and now newest but one; d was the oldest, dropped
    assert list(s["ann"].history) == ["e", "c", "f"]
    assert s["ann"].history["c"][0] == 13.0


def test_a_video_rewatched_within_a_batch_keeps_its_sum_even_past_the_bound() -> None:
    # Trimming happens at the batch's end, so a video pushed past H by later
    # events of the same batch and watched again is still summed, not restarted.
    m = OnlineHPMF(HPMFConfig(n_factors=2, history_size=2))
    s = m.learn(Batch.of(["ann"] * 4, ["a", "b", "c", "a"], [1, 1, 1, 5]), {})
    assert list(s["ann"].history) == ["c", "a"] and s["ann"].history["a"][0] == 6.0
