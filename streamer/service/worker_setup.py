"""The worker's set-up: connections to Kafka and Redis, the topics' checks,
the dead-letter sink, the rebuild watch and the global store, in the order
the service needs them before its first batch (see
:mod:`streamer.service.worker` for the loop)."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from model.choice import ChoiceConfig
from model.config import HPMFConfig
from streamer.reader.redis_record import global_prefix, is_cluster_client
from streamer.service.checkpoint_topic import CheckpointTopic
from streamer.service.connections import group_membership, kafka_security, redis_client
from streamer.service.dead_letter import DeadLetterSink
from streamer.service.errors import retry
from streamer.service.event_batch import RebalanceTracker
from streamer.service.forget import restore_markers
from streamer.service.kafka_admin import service_topics, topic_config, topic_refused
from streamer.service.kafka_compat import lenient_header_keys
from streamer.service.rebuild import Rebuild
from streamer.service.store.global_store import GlobalStore
from streamer.service.store.seam import user_store_for

log = logging.getLogger("streamer.service.worker")

# kafka-python backs reconnects off up to 30 s by default: after a broker
# restart the worker sat idle up to that long with the broker already back.
# Java's client caps it at 1 s; so do we.
RECONNECT_BACKOFF_MAX_MS = 1000


class WorkerSetup:
    """The set-up half of :class:`streamer.service.worker.Worker` (it holds
    the settings ``s``, ``metrics`` and the loop's hooks these methods use)."""

    s: Any
    metrics: Any
    offsets: Any

    def _connect(self) -> None:
        s = self.s
        lenient_header_keys()  # a non-UTF-8 header key must not stop a partition (streamer/service/kafka_compat.py)
        self.redis = redis_client(
            s, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        # The global and learner keys: one hash tag on a Redis Cluster (redis_record.global_prefix).
        self.gprefix = global_prefix(s.redis_prefix, is_cluster_client(self.redis))
        retry(self.redis.ping, "redis ping", log, self._should_stop, s.retry_max_backoff_s)
        self.users = user_store_for(self.redis, s.redis_prefix)
        self.metrics.redis_ok = True
        if s.create_topics:
            # One attempt per call (wait_s=0): this retry loop does the waiting, and it hears SIGTERM.
            retry(
                lambda: service_topics(s, wait_s=0),
                "create topics",
                log,
                self._should_stop,
                s.retry_max_backoff_s,
            )
        retry(
            self._check_retention, "topic retention", log, self._should_stop, s.retry_max_backoff_s
        )
        # Forget markers (hpmf forget) from Kafka into Redis before any event
        # is applied: a Redis that lost them must not let a replay bring a
        # forgotten user back (streamer/service/forget.py).
        retry(
            lambda: restore_markers(
                s.kafka_bootstrap,
                s.forget_topic_name,
                self.redis,
                s.redis_prefix,
                config=kafka_security(s),
            ),
            "restore forget markers",
            log,
            self._should_stop,
            s.retry_max_backoff_s,
        )
        self.producer = KafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            acks="all",
            linger_ms=5,
            client_id=f"{s.worker_id}-dlq",
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            **kafka_security(s),
        )
        self.tracker = RebalanceTracker(before_revoke=self._commit_revoked)
        self.consumer = KafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.group_id,
            client_id=s.worker_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            max_poll_records=s.batch_max_events,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(500, s.session_timeout_ms // 5),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=100,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            **kafka_security(s),
            **group_membership(s),
        )
        # Fetch the topic's metadata first: a group join before it is known
        # assigns nothing until the next metadata refresh (minutes).
        retry(
            lambda: self._require_partitions(s.topic),
            "topic metadata",
            log,
            self._should_stop,
            s.retry_max_backoff_s,
        )
        self.offsets.consumer = self.consumer
        self.consumer.subscribe([s.topic], listener=self.tracker)
        self.dlq = DeadLetterSink(
            self.producer,
            s.dead_letter_topic,
            self.metrics,
            max_record_bytes=s.dlq_max_record_bytes,
            prefix_bytes=s.dlq_prefix_bytes,
        )
        # Before a replay the forget markers come back from Kafka too: a Redis
        # that lost them must not let the replay re-create a forgotten user.
        self.rebuild = Rebuild(
            self.redis,
            self.gprefix,
            self.consumer,
            s.user_ttl_s * 1000,
            before_replay=lambda: restore_markers(
                s.kafka_bootstrap,
                s.forget_topic_name,
                self.redis,
                s.redis_prefix,
                config=kafka_security(s),
            ),
        )
        cfg = HPMFConfig(**s.model_config_dict())
        self.globals = GlobalStore(
            self.redis,
            self.gprefix,
            s.worker_id,
            cfg,
            self.metrics,
            lease_ms=s.learner_lease_ms,
            publish_every_batches=s.publish_every_batches,
            publish_every_ms=s.publish_every_ms,
            global_ttl_s=s.global_ttl_s,
            warm_start=s.checkpoint,
            quarantine=self._quarantine_stats,
            eligible=s.learner_eligible,
            keep_versions=s.global_keep_versions,
            kafka_checkpoint=CheckpointTopic(
                s.kafka_bootstrap, s.checkpoints_topic_name, s.redis_prefix, kafka_security(s)
            ),
            checkpoint_every_s=s.checkpoint_every_s,
            choice_config=ChoiceConfig(n_factors=s.choice_factors, sweep_every=s.choice_sweep_every)
            if s.choice
            else None,
            record_format=s.record_format if s.choice else 1,
        )
        _warm_up(cfg)
        _settle_garbage_collector()
        self._redis_step(self.globals.maintain, "learner lease")
        if not self.globals.is_learner:
            self._redis_step(lambda: self.globals.refresh(None, force=True), "load globals")
        self.metrics.started = True

    def _check_retention(self) -> None:
        """Warn when the events topic keeps less than the user TTL: a rebuild
        after Redis loses its data replays the TTL's worth of events, and
        what Kafka deleted cannot come back."""
        s = self.s
        raw = topic_config(s.kafka_bootstrap, s.topic, "retention.ms", config=kafka_security(s))
        if raw is None:
            return
        retention_ms = int(raw)
        if 0 <= retention_ms < s.user_ttl_s * 1000:
            log.warning(
                f"topic {s.topic} keeps events {retention_ms / 3.6e6:.1f} h, shorter than the user TTL "
                f"({s.user_ttl_s / 3600:.1f} h): if Redis loses its data, users' events older than the "
                f"retention cannot be rebuilt. Raise it: kafka-configs --alter --entity-type topics "
                f"--entity-name {s.topic} --add-config retention.ms={s.events_retention_ms}",
                extra={"topic": s.topic, "retention_ms": retention_ms, "user_ttl_s": s.user_ttl_s},
            )

    def _quarantine_stats(self, stream_id: str, payload: bytes, reason: str, detail: str) -> None:
        """The learner's dead letter: a global statistics entry it cannot apply,
        made durable in the dead-letter topic (synchronously; rare) before the
        learner moves past it."""
        self.dlq.send_raw(
            payload,
            [
                ("error", reason.encode()),
                ("error_detail", detail.encode("utf-8", "replace")[:1000]),
                ("source_topic", self.globals.stream_key.encode()),
                ("source_offset", stream_id.encode()),
                ("failed_at", str(int(time.time() * 1000)).encode()),
            ],
        )
        self.dlq.flush()

    def _require_partitions(self, topic: str) -> None:
        from kafka.errors import KafkaError, TopicAuthorizationFailedError

        if not self.consumer.partitions_for_topic(topic):
            # A topic we may not describe looks like one with no partitions
            # to the consumer (it asks for all topics' metadata); asked by
            # name, the broker says which (a refusal: not retried).
            if topic_refused(self.s.kafka_bootstrap, topic, config=kafka_security(self.s)):
                raise TopicAuthorizationFailedError(f"not authorized to describe topic {topic}")
            raise KafkaError(f"topic {topic} has no partitions (yet)")


def _settle_garbage_collector() -> None:
    """Move everything alive after start-up (torch, Pyro, the model) out of
    the cyclic garbage collector's sight and let it run less often. A batch
    allocates thousands of small containers (records, events, histories), so
    the collector ran many times per batch and each full pass walked all of
    start-up's objects again. Measured on a 60,000-event backlog of the
    throughput benchmark's stream, in-process: the loop's time went from
    7.46-7.56 s to 6.92-7.05 s (three runs; ~7%). The worker makes few
    reference cycles; memory stays flat (the stream suite's memory
    benchmark)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _warm_up(cfg: HPMFConfig) -> None:
    """Run one tiny batch through a throwaway model: torch's first call costs
    ~1-2 s of lazy initialisation, which would otherwise land on the first
    real batch (and on its freshness). ``svi_min_events=1`` makes the warm-up
    take an SVI step too (Pyro's first step costs ~0.5 s more)."""
    import dataclasses

    from model.batch import Batch
    from model.online import OnlineHPMF

    OnlineHPMF(dataclasses.replace(cfg, svi_min_events=1)).learn(
        Batch.of(["warm-up"], ["warm-up"], [1.0]), {}
    )
