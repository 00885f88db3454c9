"""Topic creation through the AdminClient; idempotent, so `make demo` can run it every time."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamer.errors import Fatal

log = logging.getLogger(__name__)


def create_topics(config: dict[str, Any], names: list[str], partitions: int, replication: int) -> list[str]:
    """Create the missing topics; returns the ones created. Existing topics are left as they are."""
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise Fatal(
            f"kafka: no broker answered at {config.get('bootstrap.servers')}; "
            "start it (make stack-up) or fix kafka.common.bootstrap.servers"
        ) from exc
    futures = admin.create_topics([NewTopic(n, partitions, replication) for n in names], operation_timeout=30)
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
            log.info("created topic %s (%d partitions)", name, partitions)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise Fatal(f"kafka: cannot create topic {name}: {exc.args[0].str()}") from exc
    return created
