"""Consumer lag and the learner's backlog, refreshed on a timer (gauges), and
the catch-up check ``--stop-when-idle-s`` stops on."""

from __future__ import annotations

import time
from typing import Any

from kafka import TopicPartition

from streamer.service.errors import TRANSIENT


class LagReport:
    """The lag half of :class:`streamer.service.worker.Worker`."""

    s: Any
    metrics: Any
    tracker: Any
    consumer: Any
    globals: Any
    _lag_due: float

    def _partition_lags(self) -> dict[TopicPartition, int | None]:
        """Per assigned partition, high watermark minus position; None where
        either is not known yet (right after a rebalance)."""
        lags: dict[TopicPartition, int | None] = {}
        for tp in self.tracker.assigned:
            hw = self.consumer.highwater(tp)
            try:
                pos = self.consumer.position(tp, timeout_ms=100)
            except Exception:  # position unknown right after a rebalance
                pos = None
            lags[tp] = None if hw is None or pos is None else max(0, hw - pos)
        return lags

    def _caught_up(self) -> bool:
        """Partitions assigned and each read to its high watermark. Idle alone
        is not enough to stop: a rebalance can keep a worker idle for seconds
        while its new partitions still hold unread events."""
        lags = self._partition_lags()
        return bool(lags) and all(lag == 0 for lag in lags.values())

    def _refresh_lag_when_due(self) -> None:
        """Every ``lag_refresh_s``, busy or idle: the lag per assigned partition
        (revoked ones drop out; one whose position is not known yet is left
        out) and, on the learner, its backlog. The high watermark comes with
        each fetch response, so no request is made for it. While the loop
        waits out an outage nothing is refreshed; the retries counter and
        redis_up tell that story then."""
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + self.s.lag_refresh_s
        m = self.metrics
        lags = self._partition_lags()
        m.lag.replace(
            {(tp.topic, str(tp.partition)): lag for tp, lag in lags.items() if lag is not None}
        )
        m.lag_refreshed.set(time.time())
        try:
            entries, age_s = self.globals.backlog()
        except TRANSIENT as exc:  # a metric is not worth a retry loop; the next refresh tries again
            self._redis_failed(exc)
            return
        m.learner_backlog.set(entries)
        m.learner_backlog_age.set(age_s)
