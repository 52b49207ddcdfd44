"""``hpmf forget USER...``: delete users' records and make sure no replay of
the topic brings them back (see :mod:`streamer.service.forget` for how).

    hpmf forget 42 user-7 --topic watch-events --redis-prefix hpmf

Kafka and Redis are reached with the service's settings (``HPMF_*``
environment variables or the flags below). Exit 0: every user forgotten;
2: a user id outside the id alphabet, or invalid settings; 1: Kafka or Redis
failed (rerunning is safe: a second forget of a user only moves the cutoff on).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("users", nargs="+", metavar="USER", help="user ids to forget")
    parser.add_argument(
        "--topic", default=None, help="watch-events topic (default: HPMF_TOPIC or watch-events)"
    )
    parser.add_argument(
        "--forget-topic",
        default=None,
        help="forget topic (default: HPMF_FORGET_TOPIC or <topic>.forget)",
    )
    parser.add_argument("--kafka-bootstrap", default=None, help="default: HPMF_KAFKA_BOOTSTRAP")
    parser.add_argument("--redis-url", default=None, help="default: HPMF_REDIS_URL")
    parser.add_argument("--redis-prefix", default=None, help="default: HPMF_REDIS_PREFIX or hpmf")
    parser.add_argument(
        "--redis-cluster",
        default=None,
        help="true: redis-url names a Redis Cluster node (default: HPMF_REDIS_CLUSTER)",
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from streamer.event import valid_id
    from streamer.service.forget import forget_users
    from streamer.service.settings import StreamSettings, mask_url

    given = {
        k: v for k, v in vars(args).items() if k in StreamSettings.model_fields and v is not None
    }
    try:
        s = StreamSettings(**given)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        print(f"hpmf forget: invalid settings: {errors}", file=sys.stderr)
        return 2
    bad = [u for u in args.users if not valid_id(u, s.max_id_chars)]
    if bad:
        print(
            f"hpmf forget: not a user id (1..{s.max_id_chars} printable characters): {bad[0][:80]!r}",
            file=sys.stderr,
        )
        return 2
    users = list(dict.fromkeys(args.users))
    from streamer.service.connections import kafka_security, redis_client

    client = redis_client(s, socket_timeout=10, socket_connect_timeout=5)
    try:
        client.ping()
        cutoff = forget_users(
            s.kafka_bootstrap,
            s.topic,
            s.forget_topic_name,
            client,
            s.redis_prefix,
            users,
            config=kafka_security(s),
        )
    except Exception as exc:  # one line, no traceback, no secret
        print(
            f"hpmf forget: failed ({type(exc).__name__}: {str(exc)[:200]}) against Kafka {s.kafka_bootstrap} "
            f"and Redis {mask_url(s.redis_url)}; nothing is lost by running it again",
            file=sys.stderr,
        )
        return 1
    finally:
        client.close()
    offsets = ", ".join(f"{p}:{o}" for p, o in sorted(cutoff.items()))
    print(
        f"forgot {len(users)} user(s); events of theirs below offsets {offsets} of {s.topic} will never be applied again "
        f"(recorded in {s.forget_topic_name})"
    )
    return 0
