"""The reader library: user posteriors, predictions and recommendations from Redis.

Imports numpy and redis only (no torch, no Kafka), so any Python service can
use it; services in other languages read the same records (docs/lookup.md).

Outcomes (see docs/lookup.md):

* **Per user, never an exception.** A result carries a :class:`Status`:
  ``ok`` (the user's record), ``new_user`` (no record: new or churned, so the
  pooled prior), ``corrupt_record`` or ``unsupported_version`` (the record is
  unusable; the pooled prior is served and ``error`` says why). One bad user
  never fails a batch.
* **Per call, a typed exception** (:class:`ReaderError`): :class:`NoGlobalsError`
  (no global record published yet), :class:`GlobalsUnreadableError` (the
  current global record is corrupt or of another schema version, and no good
  one is cached), :class:`StoreUnavailableError` (Redis did not answer).

Caching: the decoded global record is kept with everything recommend needs
precomputed (:class:`streamer.reader.lookup_math.ServingModel`). Every
``refresh_interval_ms`` (default 1000; 0 means every call) a call adds
``GET {prefix}:g:current`` to the *same* pipeline as its user reads, so the
check costs no extra round trip; only when the version changed is the new
global record fetched (one more round trip) and decoded.

Versions: a user record names the global version ``gv`` its posterior was
computed against; results are always scored against the reader's current
global version and report both plus ``version_lag`` (model minus user) and
``stale`` (``|version_lag| > max_version_lag``). The reader does not fall back
to older video factors; see docs/lookup.md for why.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis

from streamer.reader.lookup_math import (
    ServingModel,
)
from streamer.reader.lookup_results import (
    STRATEGIES,
    GlobalsUnreadableError,
    NoGlobalsError,
    Predictions,
    ReaderError,
    Recommendation,
    Recommendations,
    Status,
    StoreUnavailableError,
    Strategy,
    UserPosterior,
)
from streamer.reader.lookup_serve import predictions, recommendations
from streamer.reader.redis_record import (
    CorruptRecordError,
    RecordError,
    SchemaVersionError,
    UserRecord,
    decode_global_record,
    decode_user_record,
    global_current_key,
    global_key,
    global_prefix,
    is_cluster_client,
    user_key,
)

__all__ = [
    "Lookup",
    "STRATEGIES",
    "GlobalsUnreadableError",
    "NoGlobalsError",
    "Predictions",
    "ReaderError",
    "Recommendation",
    "Recommendations",
    "Status",
    "StoreUnavailableError",
    "Strategy",
    "UserPosterior",
]


# ---------------------------------------------------------------- the reader
class Lookup:
    """Reads user posteriors and global records from Redis and scores videos.

    Args:
        client: a ``redis.Redis`` (with ``decode_responses=False``) or a URL.
        prefix: the key prefix the service writes under.
        max_version_lag: results whose |model version - user version| exceeds
            this are flagged ``stale``.
        refresh_interval_ms: how often the ``current`` pointer is checked
            (0: on every call).
        ucb_beta: beta of the UCB strategy.
        cluster: whether the service writes to a Redis Cluster, where the
            global keys carry the hash tag ``{prefix}``; None (default): a
            ``redis.cluster.RedisCluster`` client means yes. With a URL,
            True makes the client a RedisCluster.

    Thread safety: the cached model is replaced by one attribute assignment of
    an immutable object, so concurrent calls see either version, never a mix.
    """

    def __init__(
        self,
        client: redis.Redis | str,
        prefix: str = "hpmf",
        *,
        max_version_lag: int = 1000,
        refresh_interval_ms: float = 1000.0,
        ucb_beta: float = 2.0,
        cluster: bool | None = None,
    ) -> None:
        if isinstance(client, str):
            client = _client_from_url(client, bool(cluster))
        kwargs = getattr(client, "get_connection_kwargs", dict)()
        if kwargs.get("decode_responses"):
            raise ValueError("the Redis client must use decode_responses=False: arrays are binary")
        self.client = client
        self.prefix = prefix
        # On a Redis Cluster the global keys sit under one hash tag, {prefix}
        # (docs/redis_format.md); user keys are the same in both modes.
        self.cluster = is_cluster_client(client) if cluster is None else bool(cluster)
        self.gprefix = global_prefix(prefix, self.cluster)
        self.max_version_lag = int(max_version_lag)
        self.refresh_interval_ms = float(refresh_interval_ms)
        self.ucb_beta = float(ucb_beta)
        self._model: ServingModel | None = None
        self._checked_at = -float("inf")  # monotonic seconds of the last pointer check
        self._lock = threading.Lock()  # one reload at a time
        self._rng = np.random.default_rng()
        self.last_refresh_error: str | None = None
        """Why the last attempt to load a newer global record failed (the old one is kept)."""

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "hpmf", *, cluster: bool = False, **kwargs: Any
    ) -> Lookup:
        """A reader of ``url``; ``cluster=True``: a node of a Redis Cluster."""
        return cls(_client_from_url(url, cluster), prefix, cluster=cluster, **kwargs)

    # ------------------------------------------------------------ globals
    def model(self, refresh: bool = False) -> ServingModel:
        """The cached global version (fetched if none, or checked if ``refresh``)."""
        if refresh or self._model is None:
            self._execute([], check=True)
        assert self._model is not None
        return self._model

    def _check_due(self) -> bool:
        elapsed_ms = (time.monotonic() - self._checked_at) * 1000.0
        return self._model is None or elapsed_ms >= self.refresh_interval_ms

    def _on_pointer(self, raw: Any) -> None:
        """React to the value of ``current``: load a new version if it moved."""
        self._checked_at = time.monotonic()
        if raw is None or isinstance(raw, Exception):
            why = f"{global_current_key(self.gprefix)} is missing" if raw is None else repr(raw)
            self._keep_or_raise(NoGlobalsError(f"no global record published: {why}"))
            return
        try:
            version = int(raw)
        except ValueError:
            self._keep_or_raise(
                GlobalsUnreadableError(f"{global_current_key(self.gprefix)} holds {raw[:40]!r}")
            )
            return
        if self._model is not None and self._model.version == version:
            return
        with self._lock:
            if self._model is not None and self._model.version == version:
                return  # another thread loaded it meanwhile
            key = global_key(self.gprefix, version)
            try:
                fields = self._redis(lambda: self.client.hgetall(key))
            except StoreUnavailableError as exc:
                self._keep_or_raise(exc)
                return
            if not fields:
                # The writer keeps only the newest few versions: the one
                # ``current`` named may have been superseded and deleted
                # since. Follow ``current`` once more.
                fields, key = self._reread_current(key)
            if not fields:
                self._keep_or_raise(NoGlobalsError(f"{key} (named by current) is missing"))
                return
            try:
                rec = decode_global_record(fields, key)
            except RecordError as exc:
                self._keep_or_raise(GlobalsUnreadableError(str(exc), exc))
                return
            self._model = ServingModel.from_record(rec)
            self.last_refresh_error = None

    def _reread_current(self, missing: str) -> tuple[dict[Any, Any], str]:
        try:
            raw = self._redis(lambda: self.client.get(global_current_key(self.gprefix)))
            if raw is None:
                return {}, missing
            key = global_key(self.gprefix, int(raw))
            if key == missing:
                return {}, missing
            return self._redis(lambda: self.client.hgetall(key)), key
        except (StoreUnavailableError, ValueError):
            return {}, missing

    def _keep_or_raise(self, exc: ReaderError) -> None:
        """Keep serving the cached version if there is one; else the call fails."""
        if self._model is None:
            raise exc
        self.last_refresh_error = str(exc)

    # ------------------------------------------------------------ Redis access
    def _redis(self, fn: Any) -> Any:
        try:
            return fn()
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailableError(f"Redis call failed: {exc}") from exc

    def _execute(self, ids: Sequence[str], check: bool) -> list[Any]:
        """One round trip: optionally GET current, then HGETALL of each user."""
        pipe = self.client.pipeline(transaction=False)
        if check:
            pipe.get(global_current_key(self.gprefix))
        for uid in ids:
            pipe.hgetall(user_key(self.prefix, uid))
        # raise_on_error=False: a WRONGTYPE key of one user must not fail the batch
        results = self._redis(lambda: pipe.execute(raise_on_error=False))
        for r in results:
            if isinstance(r, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
                raise StoreUnavailableError(f"Redis call failed: {r}") from r
        if check:
            self._on_pointer(results[0])
            results = results[1:]
        return list(results)

    # ------------------------------------------------------------ posteriors
    def user_posterior(self, user_id: object) -> UserPosterior:
        """The posterior of one user (one Redis round trip)."""
        return self.user_posteriors([user_id])[0]

    def user_posteriors(self, user_ids: Sequence[object]) -> list[UserPosterior]:
        """Posteriors of many users in one pipelined round trip, in order."""
        ids = [str(u) for u in user_ids]
        results = self._execute(ids, check=self._check_due())
        model = self.model()
        return [self._posterior(uid, raw, model) for uid, raw in zip(ids, results, strict=True)]

    def _prior(
        self, uid: str, model: ServingModel, status: Status, error: str | None = None
    ) -> UserPosterior:
        rec = model.record
        return UserPosterior(
            user_id=uid,
            status=status,
            mean=rec.prior_mean,
            cov=rec.prior_cov,
            n_events=0,
            model_version=rec.version,
            user_version=None,
            version_lag=0,
            stale=False,
            error=error,
        )

    def _posterior(self, uid: str, raw: Any, model: ServingModel) -> UserPosterior:
        key = user_key(self.prefix, uid)
        if isinstance(raw, Exception):  # e.g. WRONGTYPE: something else sits at the key
            return self._prior(uid, model, Status.CORRUPT_RECORD, f"{key}: {raw}")
        if not raw:
            return self._prior(uid, model, Status.NEW_USER)
        try:
            rec: UserRecord = decode_user_record(raw, key)
            if rec.dim != model.record.dim:
                raise CorruptRecordError(
                    key, f"dimension {rec.dim}, the global record's is {model.record.dim}"
                )
        except SchemaVersionError as exc:
            return self._prior(uid, model, Status.UNSUPPORTED_VERSION, str(exc))
        except RecordError as exc:
            return self._prior(uid, model, Status.CORRUPT_RECORD, str(exc))
        lag = model.version - rec.global_version
        return UserPosterior(
            user_id=uid,
            status=Status.OK,
            mean=rec.mean,
            cov=rec.cov,
            n_events=rec.n_events,
            model_version=model.version,
            user_version=rec.global_version,
            version_lag=lag,
            stale=abs(lag) > self.max_version_lag,
            updated_ms=rec.updated_ms,
            event_ms=rec.event_ms,
            history=rec.history,
            choice_mean=rec.choice_mean,
            choice_cov=rec.choice_cov,
        )

    # ------------------------------------------------------------ predictions
    def predict(self, user_id: object, video_ids: Sequence[str]) -> Predictions:
        """Predictive mean and std of the user's value for each video, in original units.

        On the model scale the prediction is N(mean, sigma^2 + epistemic); it is
        mapped back with :func:`model.transform.to_original_units` (log-normal
        moments for log1p).
        """
        post = self.user_posterior(user_id)
        return predictions(post, self.model(), [str(v) for v in video_ids])

    # ------------------------------------------------------------ recommendations
    def recommend(
        self,
        user_id: object,
        k: int = 10,
        strategy: Strategy = "mean",
        *,
        exclude_watched: bool = True,
        seed: int | None = None,
    ) -> Recommendations:
        """The top ``k`` videos for the user.

        Strategies (all ranked on the model scale, where q is Gaussian; scores
        are reported in original units):

        * ``mean``: the predictive mean in original units (for log1p,
          exp(m + s^2/2) - 1 with the full predictive s^2).
        * ``ucb``: m + beta * e, where e is the *epistemic* std (factor
          uncertainty only; the noise is the same for every video and shrinks
          no bonus). Reported as its image in original units, i.e. the upper
          quantile of the expected value.
        * ``thompson``: one draw of x from q(x) and of every w_j from q(w_j)
          (full covariance, see :func:`streamer.reader.lookup_math.thompson_scores`);
          rank by the drawn value. ``seed`` makes it reproducible (per user:
          the same seed and user give the same draw, alone or in a batch).

        ``exclude_watched`` drops the videos in the user's stored history.
        """
        return self.recommend_many(
            [user_id], k, strategy, exclude_watched=exclude_watched, seed=seed
        )[0]

    def recommend_many(
        self,
        user_ids: Sequence[object],
        k: int = 10,
        strategy: Strategy = "mean",
        *,
        exclude_watched: bool = True,
        seed: int | None = None,
    ) -> list[Recommendations]:
        """:meth:`recommend` for many users; their records come in one round trip."""
        if strategy not in STRATEGIES:
            raise ValueError(
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
            )
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        posts = self.user_posteriors(user_ids)
        model = self.model()
        return [
            recommendations(
                p,
                model,
                k,
                strategy,
                exclude_watched,
                self._rng_for(p.user_id, seed),
                self.ucb_beta,
            )
            for p in posts
        ]

    def _rng_for(self, user_id: str, seed: int | None) -> np.random.Generator:
        if seed is None:
            return self._rng
        h = int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "little")
        return np.random.default_rng([int(seed), h])


def _client_from_url(url: str, cluster: bool) -> Any:
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, decode_responses=False)
    return redis.Redis.from_url(url, decode_responses=False)
