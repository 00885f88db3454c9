"""Topic creation through the AdminClient; idempotent, so `make demo` can run it every time."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from streamer.errors import Fatal

log = logging.getLogger(__name__)


def _admin(config: dict[str, Any]) -> AdminClient:
    """librdkafka's lines go through our logging (JSON, repeats held back), not raw to stderr."""
    with_logger: dict[str, Any] = {**config, "logger": log}
    return AdminClient(with_logger)


def create_topics(config: dict[str, Any], names: list[str], partitions: int, replication: int) -> list[str]:
    """Create the missing topics; returns the ones created. Existing topics are left as they are."""
    admin = _admin(config)
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


def delete_topics(config: dict[str, Any], names: list[str]) -> None:
    """Delete `names`, those that exist; for tools that create topics per run (the benchmarks),
    so a shared broker does not carry thousands of dead partitions into later runs."""
    admin = _admin(config)  # held until the futures resolve: a destroyed client fails them
    futures = admin.delete_topics(names, operation_timeout=30)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                log.warning("kafka: cannot delete topic %s: %s", name, exc.args[0].str())


# librdkafka's defaults, for properties the config leaves unset.
MESSAGE_MAX_BYTES = 1_000_000
RECEIVE_MESSAGE_MAX_BYTES = 100_000_000


def record_limits(
    admin_config: dict[str, Any],
    producer_config: dict[str, Any],
    consumer_config: dict[str, Any],
    input_topic: str,
    output_topics: list[str],
    timeout_s: float = 10.0,
) -> dict[str, int]:
    """Per output topic, the largest record (key, value, headers) it accepts: the smaller of the
    producer's `message.max.bytes` and the topic's `max.message.bytes`, read from the broker.

    Also refuses to start when the consumer could not receive the largest record the input topic
    accepts: librdkafka would fail that fetch again and again, and the partition would stall
    without the record ever reaching the worker to be dead-lettered.
    """
    produced = int(producer_config.get("message.max.bytes", MESSAGE_MAX_BYTES))
    topics = _max_message_bytes(admin_config, [input_topic, *output_topics], timeout_s)
    received = int(consumer_config.get("receive.message.max.bytes", RECEIVE_MESSAGE_MAX_BYTES))
    largest_input = topics.get(input_topic)
    if largest_input is not None and received < largest_input + 512:
        raise Fatal(
            f"kafka.consumer.receive.message.max.bytes={received} is below what topic {input_topic} accepts "
            f"(max.message.bytes={largest_input}): a record that large would stall its partition; raise it "
            f"to at least {largest_input + 512}"
        )
    return {topic: min(produced, topics.get(topic, produced)) for topic in output_topics}


def _max_message_bytes(config: dict[str, Any], topics: list[str], timeout_s: float) -> dict[str, int]:
    """Each topic's `max.message.bytes` as the broker enforces it (its own or the broker's
    default). A topic whose config cannot be read (no DescribeConfigs ACL) is left out: the
    producer's own limit then stands alone, with a warning."""
    admin = _admin(config)
    resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in dict.fromkeys(topics)]
    limits: dict[str, int] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
        try:
            limits[resource.name] = int(future.result(timeout=timeout_s)["max.message.bytes"].value)
        except (KafkaException, KeyError, ValueError, TimeoutError) as exc:
            log.warning(
                "cannot read max.message.bytes of topic %s (%s); assuming the producer's limit", resource.name, exc
            )
    return limits
