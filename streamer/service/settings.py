"""Configuration of the streaming service: environment variables (``HPMF_*``)
and command-line flags, validated by pydantic-settings.

Flags override the environment; the effective settings are logged at start
with secrets masked (:meth:`StreamSettings.describe`).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from model.config import HPMFConfig

#: Where secrets are read from when HPMF_SECRETS_DIR is not set (a mounted
#: Kubernetes Secret, deploy/k8s/worker.yaml), if that directory exists.
DEFAULT_SECRETS_DIR = "/run/secrets/hpmf"


def secrets_dir() -> str | None:
    """The directory of secret files: ``HPMF_SECRETS_DIR``, else
    /run/secrets/hpmf if it exists, else none. One file per setting, named
    like its variable (``hpmf_redis_password``); the environment wins over a
    file, a flag over both."""
    given = os.environ.get("HPMF_SECRETS_DIR", "")
    if given:
        if not Path(given).is_dir():
            raise ValueError(f"HPMF_SECRETS_DIR={given!r} is not a directory")
        return given
    return DEFAULT_SECRETS_DIR if Path(DEFAULT_SECRETS_DIR).is_dir() else None


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HPMF_", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The secrets directory is looked up at each construction (not at import).
        files = SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir(), env_prefix="HPMF_")
        return init_settings, env_settings, dotenv_settings, files

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

    # Secured connections: passed to every Kafka client (worker, topic
    # creation, replay, demo, benchmarks). Passwords: env, or files in the
    # secrets directory (secrets_dir()); masked in the start-up log.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: str = ""
    """CA bundle (PEM) that signed the brokers' certificates; empty: the system's."""
    kafka_ssl_certfile: str = ""
    """Client certificate (PEM) for mutual TLS."""
    kafka_ssl_keyfile: str = ""
    kafka_ssl_password: SecretStr = SecretStr("")
    """Password of kafka_ssl_keyfile, if it is encrypted."""
    kafka_ssl_check_hostname: bool = True
    topic_replication_factor: int = Field(1, ge=1)
    """Replication factor of the topics this service creates."""
    topic_retention_ms: int = Field(0, ge=-1)
    """``retention.ms`` of the topics this service creates. 0 (default): the
    events topic keeps the user TTL plus one day (so a rebuild after Redis
    loses its data can replay every live user) and the dead-letter topic the
    broker's default; -1: forever; another value: that, for both topics."""
    group_instance_id: str = ""
    """Static group membership (a restart within session_timeout_ms keeps the
    partitions without a rebalance); must be unique in the group and survive
    restarts (a StatefulSet pod name). Empty: dynamic membership."""
    partition_assignor: Literal["range", "roundrobin", "sticky", "cooperative-sticky"] = "range"
    """How the group spreads partitions; cooperative-sticky moves only the
    partitions that change owner on a rebalance."""
    redis_cluster: bool = False
    """Redis Cluster mode: redis_url names one node of the cluster (the client
    finds the rest); users are written per hash slot and the global keys move
    under one hash tag, ``{<prefix>}:...`` (docs/redis_format.md, Redis Cluster)."""
    redis_username: str = ""
    """Redis ACL user (overrides one in redis_url)."""
    redis_password: SecretStr = SecretStr("")
    """Redis password (overrides one in redis_url)."""
    redis_ssl_ca_certs: str = ""
    """CA (PEM) of the Redis server's certificate, for rediss:// URLs."""
    redis_ssl_certfile: str = ""
    redis_ssl_keyfile: str = ""

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
    learner_eligible: bool = True
    """Whether this process may take the learner role; false for workers when
    a dedicated learner runs (deploy/k8s/learner.yaml)."""
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

    # Model
    n_factors: int = Field(10, ge=0)
    transform: str = "log1p"
    history_size: int = Field(200, ge=1)
    global_mean_prior: float = 0.0
    """Prior mean of the global mean b0 on the model's scale (log1p minutes by
    default): what is predicted before anything is learned, e.g. 3 for ~20 minutes."""
    torch_threads: int = Field(1, ge=1)
    choice: bool = True
    """Run the choice component (which videos a user starts, model/choice.py):
    the worker refreshes each touched user's choice posterior, the learner
    its globals, and ``recommend`` ranks by expected minutes if shown. False:
    the minutes model alone."""
    choice_factors: int = Field(10, ge=1)
    """Latent factors of the choice component (K_c; the records' ``cd`` is K_c + 1)."""
    choice_sweep_every: int = Field(20_000, ge=1)
    """Events between the choice learner's full recomputations of every video
    from its window (model/choice.py ``sweep_every``; each costs about the
    window's size, so a longer interval keeps the learner's work per event down)."""
    record_format: int = Field(2, ge=1, le=2)
    """The Redis record format written (users and the global record,
    docs/redis_format.md). 2 carries the choice component. During a rolling
    upgrade from a release whose readers know only version 1, write 1 until
    every reader is upgraded, then 2 (docs/operations.md, rolling upgrades)."""
    replay_background: bool = True
    """The learner runs its replay sweeps (what teaches the videos taste) in a
    background thread and folds each in when done, so the loop does not stop
    for them; false runs each in the loop, as the evaluation harness does."""

    # Operations
    metrics_port: int = Field(9108, ge=0)
    """0 disables the HTTP endpoint."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics and health endpoint binds to: 0.0.0.0 (or ::) to be
    scraped and probed from outside the pod or host."""
    live_after_s: float = Field(30.0, gt=0)
    """/healthz fails once the loop has not turned for this long (a hung process)."""
    lag_refresh_s: float = Field(5.0, gt=0)
    """How often the loop refreshes the per-partition lag and the learner's backlog."""
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
            raise ValueError(
                f"redis_url is not a Redis URL (redis://, rediss:// or unix://): {type(exc).__name__}"
            ) from None
        return v

    @field_validator("auto_offset_reset")
    @classmethod
    def _reset(cls, v: str) -> str:
        if v not in ("earliest", "latest"):
            raise ValueError("auto_offset_reset must be earliest or latest")
        return v

    @model_validator(mode="after")
    def _security(self) -> StreamSettings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not self.kafka_sasl_mechanism:
            raise ValueError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs kafka_sasl_mechanism"
            )
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()):
            raise ValueError(
                "SASL needs kafka_sasl_username and kafka_sasl_password (env or secrets file)"
            )
        if not sasl and self.kafka_sasl_mechanism:
            raise ValueError(
                f"kafka_sasl_mechanism is set but kafka_security_protocol is {self.kafka_security_protocol}"
            )
        if self.redis_cluster and ("{" in self.redis_prefix or "}" in self.redis_prefix):
            raise ValueError(
                "redis_prefix must not contain { or } with redis_cluster: the keys' hash tags are the service's"
            )
        if self.redis_cluster and _url_db(self.redis_url) not in (None, 0):
            raise ValueError(
                "redis_cluster: a Redis Cluster has database 0 only; drop the /<db> of redis_url"
            )
        tls_files = (self.redis_ssl_ca_certs, self.redis_ssl_certfile, self.redis_ssl_keyfile)
        if any(tls_files) and not self.redis_url.startswith("rediss://"):
            raise ValueError("redis_ssl_* settings need a rediss:// redis_url")
        return self

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
        """The events topic's ``retention.ms`` (-1: forever), from ``topic_retention_ms``."""
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
            "replay_background": self.replay_background,
        }

    def describe(self) -> dict[str, Any]:
        """The settings as logged at start: passwords (in URLs too) are masked."""
        out = self.model_dump()
        for name, value in out.items():
            if isinstance(value, SecretStr):
                out[name] = "***" if value.get_secret_value() else ""
        out["redis_url"] = mask_url(self.redis_url)
        out["dlq_topic"] = self.dead_letter_topic
        out["checkpoints_topic"] = self.checkpoints_topic_name
        out["topic_retention_ms"] = self.events_retention_ms
        out["forget_topic"] = self.forget_topic_name
        return out


def _url_db(url: str) -> int | None:
    """The database a Redis URL names (path or ``db=``), None if none."""
    from redis.connection import parse_url

    db = parse_url(url).get("db")
    return None if db is None else int(db)


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
            query = "&".join(
                k + (sep and "=") + ("***" if sep and _SECRET_PARAM.search(unquote(k)) else v)
                for k, sep, v in pairs
            )
        head = (
            f"{parts.scheme}://{netloc}"
            if "://" in url
            else urlunsplit((parts.scheme, netloc, "", "", ""))
        )
        return (
            head + parts.path + (f"?{query}" if query else "") + ("#***" if parts.fragment else "")
        )
    except ValueError:
        return "<a URL that cannot be parsed; not shown>"
