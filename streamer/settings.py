"""Configuration of the streaming service: environment variables (``HPMF_*``)
and command-line flags, validated by pydantic-settings.

Flags override the environment; the effective settings are logged at start
with secrets masked (:meth:`StreamSettings.describe`).
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.config import HPMFConfig


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HPMF_", extra="ignore")

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = "watch-events"
    dlq_topic: str = ""
    """Dead-letter topic; empty means ``<topic>.dlq``."""
    forget_topic: str = ""
    """Compacted topic of forget requests (hpmf forget); empty means ``<topic>.forget``."""
    group_id: str = "hpmf-stream"
    partitions: int = Field(4, ge=1)
    """Partitions used when this service creates its topics."""
    create_topics: bool = True
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = Field(10_000, ge=1000)
    """How long the group waits for a silent (crashed) worker before rebalancing."""

    # Minibatches (step 1 of the loop)
    batch_max_events: int = Field(512, ge=1)
    batch_max_age_ms: int = Field(50, ge=1)
    idle_poll_ms: int = Field(200, ge=1)
    """An empty poll returns after this long so signals, leases and health advance."""

    # Validation (step 2)
    max_minutes: float = Field(24 * 60.0, gt=0)
    max_payload_bytes: int = Field(4096, ge=64)
    max_future_ms: int = Field(5 * 60_000, ge=0)
    max_id_chars: int = Field(256, ge=1)
    min_ts_ms: int = Field(946_684_800_000)
    """Earliest plausible event time, epoch ms (default 2000-01-01T00:00:00Z); earlier is bad_timestamp."""
    require_key_match: bool = True
    """The record key must equal the event's user_id (else key_mismatch); false accepts any key."""
    dlq_max_record_bytes: int = Field(1_000_000, ge=4096)
    """A dead letter larger than this (key + value + headers) is sent reduced: a prefix and the original's position."""
    dlq_prefix_bytes: int = Field(1024, ge=0)
    """How much of key and value a reduced dead letter keeps."""

    # Exactly-once effect and dedupe (step 3)
    dedupe_window: int = Field(64, ge=0)
    """How many of a user's most recent event ids are kept to skip duplicates."""

    # Redis (step 4)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "hpmf"
    user_ttl_s: int = Field(7 * 24 * 3600, ge=1)
    global_ttl_s: int = Field(3600, ge=1)
    """Back-stop expiry of a superseded global version (they are deleted sooner,
    see ``global_keep_versions``)."""
    global_keep_versions: int = Field(2, ge=1)
    """Published global versions kept in Redis: the current one and the ones
    just before it; older ones are deleted at each publish, so the globals'
    footprint is this many records whatever the publish rate."""
    max_videos: int = Field(20_000, ge=0)
    """Catalogue cap (0: none). Past it the learner forgets the least recently
    touched videos, down to nine tenths of the cap (docs/streaming.md)."""

    # Globals: the learner role
    learner_lease_ms: int = Field(10_000, ge=500)
    publish_every_batches: int = Field(20, ge=1)
    publish_every_ms: int = Field(1000, ge=1)
    checkpoint: str = ""
    """Warm-start checkpoint file for the learner when neither Redis nor the
    checkpoints topic holds one."""
    checkpoints_topic: str = ""
    """Compacted topic of the learner's durable checkpoint; empty means ``<topic>.checkpoints``."""
    checkpoint_every_s: float = Field(60.0, gt=0)
    """How often the learner writes its checkpoint to the checkpoints topic
    (and at shutdown): what a rebuild after a Redis loss restarts the globals from."""
    topic_retention_ms: int = Field(0, ge=0)
    """``retention.ms`` given to the events topic when this service creates it;
    0 means the user TTL plus one day, so a rebuild can replay every live user."""

    # Model
    n_factors: int = Field(10, ge=0)
    transform: str = "log1p"
    history_size: int = Field(200, ge=1)
    global_mean_prior: float = 0.0
    """Prior mean of the global mean b0 on the model's scale (log1p minutes by
    default): what is predicted before anything is learned, e.g. 3 for ~20 minutes."""
    torch_threads: int = Field(1, ge=1)

    # Operations
    metrics_port: int = Field(9108, ge=0)
    """0 disables the HTTP endpoint."""
    metrics_host: str = "127.0.0.1"
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    retry_max_backoff_s: float = Field(5.0, gt=0)
    log_level: str = "INFO"
    max_batches: int = Field(0, ge=0)
    """Stop after this many non-empty batches (0: run until signalled); for tests."""
    stop_when_idle_s: float = Field(0.0, ge=0)
    """Stop once no event arrived for this long and every assigned partition is
    read to its end (0: never); for replays and tests."""

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        # The message never repeats the URL: it may hold a password.
        from redis.connection import parse_url

        try:
            parse_url(v)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"redis_url is not a Redis URL (redis://, rediss:// or unix://): {type(exc).__name__}") from None
        return v

    @field_validator("auto_offset_reset")
    @classmethod
    def _reset(cls, v: str) -> str:
        if v not in ("earliest", "latest"):
            raise ValueError("auto_offset_reset must be earliest or latest")
        return v

    @model_validator(mode="after")
    def _model_settings(self) -> StreamSettings:
        # Checked at start, by the model's own rules, not after Kafka and
        # Redis are reached (a NaN prior would otherwise surface much later).
        HPMFConfig(**self.model_config_dict())
        return self

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"

    @property
    def checkpoints_topic_name(self) -> str:
        return self.checkpoints_topic or f"{self.topic}.checkpoints"

    @property
    def events_retention_ms(self) -> int:
        return self.topic_retention_ms or (self.user_ttl_s + 24 * 3600) * 1000

    @property
    def forget_topic_name(self) -> str:
        return self.forget_topic or f"{self.topic}.forget"

    def model_config_dict(self) -> dict[str, Any]:
        """The model's hyper-parameters (``model.config.HPMFConfig`` fields)."""
        return {
            "n_factors": self.n_factors,
            "transform": self.transform,
            "history_size": self.history_size,
            "global_mean_prior": self.global_mean_prior,
            "max_value": self.max_minutes,
            "max_videos": self.max_videos,
        }

    def describe(self) -> dict[str, Any]:
        """The settings as logged at start: passwords in URLs are masked."""
        out = self.model_dump()
        out["redis_url"] = mask_url(self.redis_url)
        out["dlq_topic"] = self.dead_letter_topic
        out["checkpoints_topic"] = self.checkpoints_topic_name
        out["topic_retention_ms"] = self.events_retention_ms
        out["forget_topic"] = self.forget_topic_name
        return out


_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|auth|key|cred", re.IGNORECASE)


def mask_url(url: str) -> str:
    """A URL fit for a log line: the password of the userinfo (or a lone
    userinfo, which may be one), and every query parameter whose name looks
    like a secret (``password``, ``token``, ...) become ``***``; a URL that
    cannot be parsed is not shown at all.

    >>> mask_url("redis://:pw@h:6379/0"), mask_url("redis://h:6379/0")
    ('redis://:***@h:6379/0', 'redis://h:6379/0')
    >>> mask_url("rediss://app:p@ss:w@h/0?password=x&ssl_cert_reqs=none")
    'rediss://app:***@h/0?password=***&ssl_cert_reqs=none'
    >>> mask_url("unix:///run/redis.sock?db=0&password=x")
    'unix:///run/redis.sock?db=0&password=***'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0] + ":***" if ":" in userinfo else "***"
            netloc = f"{user}@{host}"
        query = parts.query
        if query:
            pairs = [p.partition("=") for p in query.split("&")]
            query = "&".join(k + (sep and "=") + ("***" if sep and _SECRET_PARAM.search(unquote(k)) else v) for k, sep, v in pairs)
        head = f"{parts.scheme}://{netloc}" if "://" in url else urlunsplit((parts.scheme, netloc, "", "", ""))
        return head + parts.path + (f"?{query}" if query else "") + ("#***" if parts.fragment else "")
    except ValueError:
        return "<a URL that cannot be parsed; not shown>"
