"""Step 3 of the loop: fold a batch of valid events into the touched users'
states and run the model's local step.

Exactly-once effect: an event is skipped when

* its offset is at or below the offset stored with the user for the same
  partition (``replay``: a batch written to Redis whose offsets were not
  committed before a crash or rebalance is read again), or
* its ``event_id`` is among the user's last ``dedupe_window`` event ids, or
  earlier in this batch (``duplicate``: a producer retry or a replayed file), or
* its user was forgotten (``hpmf forget``) after it was produced
  (``forgotten``: its offset is below the forget's cutoff for its partition).

A user all of whose events are skipped is not rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model.batch import Batch
from model.choice import ChoiceModel
from model.online import GlobalStats
from model.protocol import StreamingModel
from streamer.event import WatchEvent
from streamer.reader.redis_record import UserRecord, user_record_from_state
from streamer.service.forget import is_forgotten
from streamer.service.store.user_store import StoredUser


@dataclass(frozen=True, slots=True)
class SourcedEvent:
    """A valid event and where it came from."""

    event: WatchEvent
    partition: int
    offset: int
    kafka_ts_ms: int


@dataclass
class ModelUpdate:
    records: dict[str, UserRecord] = field(default_factory=dict)
    event_ids: dict[str, list[str]] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)
    stats: GlobalStats | None = None
    produce_ts_ms: list[int] = field(default_factory=list)  # of applied events (freshness)
    skipped_replay: int = 0
    skipped_duplicate: int = 0
    skipped_forgotten: int = 0

    @property
    def applied(self) -> int:
        return len(self.produce_ts_ms)


def select_new_events(
    events: list[SourcedEvent], stored: dict[str, StoredUser]
) -> tuple[list[SourcedEvent], int, int]:
    """The events to apply, in stream order, and the replay/duplicate skip counts."""
    seen: dict[str, set[str]] = {}
    keep: list[SourcedEvent] = []
    replay = dup = 0
    for se in events:
        uid = se.event.user_id
        s = stored.get(uid)
        if s is not None and se.partition == s.partition and se.offset <= s.offset:
            replay += 1
            continue
        ids = seen.get(uid)
        if ids is None:
            ids = seen[uid] = set(s.event_ids) if s is not None else set()
        if se.event.event_id in ids:
            dup += 1
            continue
        ids.add(se.event.event_id)
        keep.append(se)
    return keep, replay, dup


def drop_forgotten(
    events: list[SourcedEvent], forgotten: dict[str, dict[int, int]]
) -> list[SourcedEvent]:
    """The events that are not of a forgotten user from before the forget
    (:mod:`streamer.service.forget`: below the cutoff of their partition)."""
    if not forgotten:
        return events
    return [
        se
        for se in events
        if se.event.user_id not in forgotten
        or not is_forgotten(forgotten[se.event.user_id], se.partition, se.offset)
    ]


def update_users(
    model: StreamingModel,
    events: list[SourcedEvent],
    stored: dict[str, StoredUser],
    dedupe_window: int,
    now_ms: int,
    forgotten: dict[str, dict[int, int]] | None = None,
    choice: ChoiceModel | None = None,
    record_format: int = 2,
) -> ModelUpdate:
    """The local step of both components for the batch's new events.

    ``choice``: the choice component (:mod:`model.choice`) to refresh every
    touched user's q(a_i) with, in closed form, from the videos they started
    (their minutes history, which holds each started video once, most recent
    last: the same list the choice step uses); its posteriors go to the
    learner with the batch's statistics. ``record_format``: the user record
    version written (docs/redis_format.md): 2 carries the choice posterior, 1
    is the previous layout (for readers not yet upgraded; the choice posterior
    is still computed and learned from)."""
    n_all = len(events)
    events = drop_forgotten(events, forgotten or {})
    keep, replay, dup = select_new_events(events, stored)
    out = ModelUpdate(
        skipped_replay=replay, skipped_duplicate=dup, skipped_forgotten=n_all - len(events)
    )
    if not keep:
        return out
    batch = Batch.of(
        [se.event.user_id for se in keep],
        [se.event.video_id for se in keep],
        [se.event.minutes for se in keep],
    )
    states: dict[str, Any] = {uid: s.state for uid, s in stored.items()}
    update = model.local_update(batch, states)
    out.stats = update.stats
    choice_post: dict[str, tuple[Any, Any]] = {}
    if choice is not None:
        uids = update.stats.user_ids
        choice.register(update.stats.video_ids)  # new videos at the prior, as the learner will
        hists = [list(update.states[u].history) for u in uids]
        cm, cc = choice.user_posteriors(hists)
        update.stats.choice_mean, update.stats.choice_cov = cm, cc
        if record_format >= 2:  # served: the posterior mean plus the session term
            sm = choice.served_means(hists, cm)
            sc = choice.served_cov(cc)  # times the learner's sigma^2
            choice_post = {u: (sm[k], sc[k]) for k, u in enumerate(uids)}
    # Per user: the newest applied (partition, offset), event time and ids.
    last: dict[str, SourcedEvent] = {}
    newest_ts: dict[str, int] = {}
    new_ids: dict[str, list[str]] = {}
    for se in keep:
        uid = se.event.user_id
        last[uid] = se  # stream order within a partition: the last is the highest offset
        newest_ts[uid] = max(newest_ts.get(uid, 0), se.event.ts_ms)
        new_ids.setdefault(uid, []).append(se.event.event_id)
        out.produce_ts_ms.append(se.kafka_ts_ms)
    for uid, se in last.items():
        prev = stored.get(uid)
        out.records[uid] = user_record_from_state(
            update.states[uid],
            updated_ms=now_ms,
            event_ms=max(newest_ts[uid], prev.event_ms if prev is not None else 0),
            partition=se.partition,
            offset=se.offset,
        )
        if uid in choice_post:  # version 2
            out.records[uid].choice_mean, out.records[uid].choice_cov = choice_post[uid]
        sa = update.states[uid].seen_at
        if sa is not None:
            out.seen_at[uid] = float(sa)
        ids = (prev.event_ids if prev is not None else []) + new_ids[uid]
        out.event_ids[uid] = ids[-dedupe_window:] if dedupe_window else []
    return out
