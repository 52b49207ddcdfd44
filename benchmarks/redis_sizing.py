"""Redis memory of the service's keys, measured with ``MEMORY USAGE`` on what
the real worker wrote (docs/operations.md, "Sizing", quotes the figures).

For each video count it produces a synthetic stream to a fresh topic on the
local broker -- light users (2 events), medium (20) and heavy ones (250, past
the 200-entry history cap) over that many videos, every video seen at least
once, event ids as 36-character UUIDs like a real producer's -- runs ``hpmf
stream`` on it until idle, and reads ``MEMORY USAGE <key> SAMPLES 0`` (exact,
every field) of the user records by group, the published global record, the
learner's checkpoint hash, the statistics stream, and the superseded global
versions still kept (they expire after ``HPMF_GLOBAL_TTL_S``). The global record's size
per 1,000 videos is the slope between the two video counts. Then it deletes
its keys, topics and group.

    .venv/bin/python -m benchmarks.redis_sizing            # KAFKA_PORT / REDIS_PORT as for the tests
    HPMF_SIZING_VIDEOS=1000,5000 HPMF_SIZING_FACTORS=10 ...
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from statistics import mean

import redis

from benchmarks.env import BOOTSTRAP, REDIS_URL, ROOT
from streamer.cli.replay import produce
from streamer.cli.stream import stream_argv
from streamer.event import encode_event
from streamer.reader.redis_record import global_current_key, global_key, user_key
from streamer.service.connections import redis_client
from streamer.service.kafka_admin import delete_group, delete_topics, ensure_topics

#: (group, users, events per user)
GROUPS = (("light", 1000, 2), ("medium", 300, 20), ("heavy", 40, 250))


def events(n_videos: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out: list[tuple[bytes, bytes]] = []
    i = 0
    for group, n_users, per_user in GROUPS:
        for u in range(n_users):
            uid = f"{group}-{u:06d}"
            for _ in range(per_user):
                video = (
                    f"v-{i % n_videos:06d}" if i < n_videos else f"v-{rng.randrange(n_videos):06d}"
                )
                eid = str(uuid.UUID(int=rng.getrandbits(128)))
                out.append(
                    (
                        uid.encode(),
                        encode_event(eid, uid, video, round(rng.expovariate(1 / 20), 2), now),
                    )
                )
                i += 1
    rng.shuffle(out)  # interleave users, as a real stream would
    return out


def usage(r: redis.Redis, key: str) -> int:
    return int(r.memory_usage(key, samples=0) or 0)


def measure(n_videos: int, n_factors: int, tag: str) -> dict[str, float]:
    topic, prefix, group = (
        f"sizing-{tag}-{n_videos}",
        f"sizing-{tag}-{n_videos}",
        f"sizing-{tag}-{n_videos}",
    )
    r = redis_client(url=REDIS_URL)
    ensure_topics(BOOTSTRAP, {topic: 4, f"{topic}.dlq": 4})
    evs = events(n_videos, seed=n_videos)
    produce(BOOTSTRAP, topic, evs, progress=False)
    settings = {
        "kafka_bootstrap": BOOTSTRAP,
        "redis_url": REDIS_URL,
        "topic": topic,
        "group_id": group,
        "redis_prefix": prefix,
        "metrics_port": 0,
        "n_factors": n_factors,
        "stop_when_idle_s": 3,
        "publish_every_ms": 200,
    }
    cmd = stream_argv(sys.executable, settings)
    try:
        subprocess.run(
            cmd,
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=600,
        )
        out: dict[str, float] = {"videos": n_videos, "factors": n_factors, "events": len(evs)}
        for g, n_users, per_user in GROUPS:
            keys = [user_key(prefix, f"{g}-{u:06d}") for u in range(min(n_users, 200))]
            sizes = [usage(r, k) for k in keys]
            assert all(sizes), f"missing user records in group {g}"
            out[f"user_{g}_{per_user}ev_bytes"] = round(mean(sizes))
        cur = int(r.get(global_current_key(prefix)))
        out["global_record_bytes"] = usage(r, global_key(prefix, cur))
        out["learner_hash_bytes"] = usage(r, f"{prefix}:learner")
        out["gstats_stream_bytes"] = usage(r, f"{prefix}:gstats")
        # Every publish writes a whole new record; the one it replaces lives
        # on for HPMF_GLOBAL_TTL_S (readers that hold it can still read it).
        versions = [k for k in r.scan_iter(match=f"{prefix}:g:{{*}}", count=1000)]
        out["global_versions_kept"] = len(versions)
        out["global_versions_bytes"] = sum(usage(r, k.decode()) for k in versions)
        out["publishes"] = cur
        return out
    finally:
        keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            r.delete(*keys[i : i + 500])
        delete_topics(BOOTSTRAP, [topic, f"{topic}.dlq"])
        delete_group(BOOTSTRAP, group)


def main() -> int:
    videos = [int(v) for v in os.environ.get("HPMF_SIZING_VIDEOS", "1000,5000").split(",")]
    factors = int(os.environ.get("HPMF_SIZING_FACTORS", "10"))
    tag = uuid.uuid4().hex[:6]
    rows = [measure(v, factors, tag) for v in videos]
    for row in rows:
        print(json.dumps(row))
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        slope = (
            (b["global_record_bytes"] - a["global_record_bytes"])
            / (b["videos"] - a["videos"])
            * 1000
        )
        ckpt = (
            (b["learner_hash_bytes"] - a["learner_hash_bytes"]) / (b["videos"] - a["videos"]) * 1000
        )
        print(
            json.dumps(
                {
                    "global_record_bytes_per_1000_videos": round(slope),
                    "learner_hash_bytes_per_1000_videos": round(ckpt),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
