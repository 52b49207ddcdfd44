"""``hpmf topics``: create the Kafka topics the service uses (the broker does
not auto-create them): the watch-events topic (retention: the user TTL plus
a day), its dead-letter topic and the learner's compacted checkpoints topic.

    hpmf topics --topic watch-events --partitions 4

Partitions bound the number of workers that share the work (one partition is
read by one worker of the group). Choose it once: adding partitions later
moves users to other partitions (the key hash changes), which the per-user
stored offset handles by treating the new partition as unseen (event-id
dedupe still applies), but in-flight ordering per user is lost for a moment.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topic", default=None, help="watch-events topic (default: HPMF_TOPIC or watch-events)"
    )
    parser.add_argument(
        "--dlq-topic", default=None, help="dead-letter topic (default: <topic>.dlq)"
    )
    parser.add_argument(
        "--partitions", type=int, default=None, help="partitions (default: HPMF_PARTITIONS or 4)"
    )
    parser.add_argument("--kafka-bootstrap", default=None)


def run(args: argparse.Namespace) -> int:
    from streamer.service.kafka_admin import (
        BrokerNotReadyError,
        service_topic_specs,
        service_topics,
    )
    from streamer.service.settings import StreamSettings

    given = {
        k: v for k, v in vars(args).items() if k in StreamSettings.model_fields and v is not None
    }
    s = StreamSettings(**given)
    topics, _ = service_topic_specs(s)
    try:
        created = service_topics(s)
    except BrokerNotReadyError as exc:
        print(f"hpmf topics: error: {exc}", file=sys.stderr)
        return 1
    for name, n in topics.items():
        print(f"{name}: {'created' if name in created else 'exists'} ({n} partitions requested)")
    return 0
