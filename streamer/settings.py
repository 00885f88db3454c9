"""The one typed, frozen config tree.

Sources, later wins: the YAML file, then `STREAMER_<SECTION>__<KEY>` environment variables
(nested keys joined by `__`). An environment value is read by the type of the field it sets:
a string, password, path or number field takes the text verbatim (pydantic converts numbers
and booleans), so `STREAMER_FEATURES__PASSWORD='#x: 0777'` is that password, never YAML; only
list, mapping and section fields are parsed, as YAML. Under `kafka.*`, keys are librdkafka
properties passed through verbatim; from the environment they are written in upper case with
`_` for `.` (STREAMER_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS=5) and passed to librdkafka as the
strings they are, which it parses itself. `schemas.registry_config` (Schema Registry client
properties) is written the same way, STREAMER_SCHEMAS__REGISTRY_CONFIG__BASIC_AUTH_USER_INFO, but
that client does not parse strings: numbers such as max.retries go in the YAML. Unknown keys
anywhere else are errors, so a typo stops start-up instead of being ignored. No error message
carries a value from the config or the environment, so a secret never reaches a terminal or a log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from streamer.drift.settings import DriftSettings
from streamer.errors import Fatal
from streamer.feature_settings import FeatureStoreSettings
from streamer.output_settings import OutputSettings, Rule
from streamer.quality.settings import QualitySettings
from streamer.section import Section
from streamer.settings_environment import environment_overrides, merge

LibrdkafkaProperties = dict[str, str | int | float | bool]


class KafkaSettings(Section):
    common: LibrdkafkaProperties = Field(
        default_factory=lambda: dict[str, str | int | float | bool]({"bootstrap.servers": "127.0.0.1:9092"}),
        description="librdkafka properties shared by consumer, producer and admin client.",
    )
    consumer: LibrdkafkaProperties = Field(
        default_factory=dict, description="Consumer-only librdkafka properties (group.id, …)."
    )
    producer: LibrdkafkaProperties = Field(default_factory=dict, description="Producer-only librdkafka properties.")


class TopicSettings(Section):
    input: str = Field(description="Topic of raw events to score.")
    scored: str = Field(description="Topic the scored events are written to.")
    alerts: str | None = Field(None, description="Optional topic for events scoring >= threshold.")
    dlq: str = Field(description="Dead-letter topic for records that cannot be scored.")
    drift: str | None = Field(None, description="Topic of drift windows (raw counts, mergeable across workers).")
    labels: str | None = Field(None, description="Topic of delayed labels (schemas.labels), joined to their scores.")
    quality: str | None = Field(None, description="Topic of quality windows (raw counts, mergeable across consumers).")
    partitions: int = Field(4, ge=1, description="Partitions used by `streamer topics create`.")
    replication_factor: int = Field(1, ge=1, description="Replication used by `topics create`.")

    def names(self) -> list[str]:
        return [t for t in (self.input, self.scored, self.alerts, self.dlq, self.drift, self.labels, self.quality) if t]


class SchemaSettings(Section):
    input: Path = Field(description="Avro schema (.avsc) the input events are written with.")
    scored: Path = Field(description="Avro schema of the scored events.")
    dlq: Path = Field(description="Avro schema of dead-letter records.")
    drift: Path = Field(Path("schemas/drift_report.avsc"), description="Avro schema of drift windows.")
    labels: Path = Field(Path("schemas/label.avsc"), description="Avro schema of delayed labels.")
    quality: Path = Field(Path("schemas/quality_window.avsc"), description="Avro schema of quality windows.")
    input_framing: Literal["schemaless", "confluent"] = Field(
        "schemaless", description="confluent: magic byte + schema id, read through the writer schema."
    )
    writers: dict[int, Path] = Field(
        default_factory=dict, description="confluent framing: schema id → local .avsc of the writer."
    )
    registry_url: str | None = Field(
        None,
        description="Schema Registry (Confluent API): writer schemas of unknown input ids, and where the outputs' "
        "schemas are registered under output_framing confluent.",
    )
    registry_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Schema Registry client properties, verbatim (basic.auth.user.info, ssl.ca.location, timeout, "
        "max.retries, …); never printed.",
    )
    output_framing: Literal["plain", "confluent"] = Field(
        "plain",
        description="confluent: scored, alert, dead-letter and drift records start with magic byte + schema id, "
        "their schemas registered under <topic>-value at start (needs registry_url).",
    )
    max_record_bytes: int | None = Field(
        1_048_576, ge=1, description="Larger input records are dead-lettered as oversize."
    )

    @model_validator(mode="after")
    def _registry_for_framing(self) -> SchemaSettings:
        if self.output_framing == "confluent" and not self.registry_url:
            raise ValueError("output_framing confluent registers the outputs' schemas: set schemas.registry_url")
        return self


class BatchingSettings(Section):
    max_batch_size: int = Field(
        4096,
        ge=1,
        description="Upper bound on events per model call. Under backlog a batch fills at once; 4096 drained "
        "a backlog 1.5x faster than 1024 on the bench machine (per-batch costs amortised), 8192 no faster.",
    )
    max_wait_ms: float = Field(
        2.0,
        ge=0,
        description="Upper bound on how long the first event of a batch waits. Once a batch costs more than "
        "this, the loop runs back to back and batches grow by themselves; below that, each ms here is latency. "
        "2 against 5 measured p99 1-2 ms lower at 4k-20k ev/s and no slower at any rate.",
    )
    target_latency_ms: float | None = Field(
        None,
        gt=0,
        description="Optional bound on an event's time in the worker (queued, batched, scored, produced): batches "
        "are cut earlier and smaller from measured per-batch and per-event costs to keep it; past the rate that "
        "allows, batches grow again for throughput and each late batch counts in "
        "streamer_latency_target_missed_total. Unset: max_batch_size and max_wait_ms alone.",
    )
    allowed_batch_sizes: tuple[int, ...] = Field(
        (64, 96, 128, 192, 256, 320, 384, 512, 640, 768, 1024, 1536, 2048, 3072, 4096),
        description="Batches are padded up to one of these sizes so the graph sees few shapes; each is warmed "
        "at start-up. Steps of at most 1.5x: padding costs what real rows do (the demo model: 0.72 ms a call "
        "at 320 rows, 1.54 ms at 1024), and 15 sizes warm in tens of milliseconds.",
    )

    @field_validator("allowed_batch_sizes")
    @classmethod
    def _sorted_and_covering(cls, sizes: tuple[int, ...], info: Any) -> tuple[int, ...]:
        if not sizes or any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
            raise ValueError("must be strictly increasing positive sizes, e.g. [64, 256, 1024]")
        return sizes


class ModelSettings(Section):
    path: Path = Field(description="Model base folder holding numbered versions: <path>/<n>/.")
    policy: Literal["latest", "pinned", "list"] = Field(
        "latest",
        description="Which version serves, as TF Serving's version policy: the newest; `version`; or the "
        "newest of `versions` present. Reloaded on SIGHUP or when the config file changes.",
    )
    version: int | None = Field(
        None,
        ge=1,
        description="policy pinned: the primary (a rollback); canary and shadow traffic stop unless "
        "model.candidate names a version to receive them.",
    )
    versions: tuple[int, ...] = Field((), description="policy list: the versions allowed to serve.")
    primary: int | None = Field(
        None,
        ge=1,
        description="While a canary or shadow share is above 0: the version that keeps deciding. Unset: the "
        "newest allowed version below the candidate. Ignored at shares 0, where the policy decides.",
    )
    candidate: int | None = Field(
        None,
        ge=1,
        description="While a share is above 0: the version that takes canary and shadow traffic. Unset: the "
        "newest allowed version above the primary, and none under policy pinned.",
    )
    watch_interval_s: float = Field(
        2.0, ge=0, description="How often the folder (and the config file) is checked for changes; 0: never."
    )
    canary_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of entities (sticky, by a hash of the entity id) whose decision comes from the "
        "candidate. While a canary or shadow share is set under policy latest or list, the newest version "
        "is the candidate, never the primary, also at start-up and after a restart.",
    )
    shadow_share: float = Field(
        0.0, ge=0, le=1, description="Share of entities the candidate also scores, into shadow_score only."
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: the first GPU TensorFlow sees, else the CPU; gpu fails start-up without one."
    )
    jit_compile: bool = Field(False, description="Compile the serving signature with XLA (must support its ops).")
    intra_op_threads: int = Field(
        1,
        ge=0,
        description="Threads one TensorFlow op may split across (TF Serving's tensorflow_intra_op_parallelism); "
        "0: one per core. 1 measured 25-30% less CPU per model call at batches of 64-1024 on 2 shared cores, "
        "where the broker's and librdkafka's threads want the other core; raise it for big batches on many cores.",
    )
    inter_op_threads: int = Field(
        1,
        ge=0,
        description="Ops of one call run side by side (tensorflow_inter_op_parallelism); 0: one per core.",
    )
    public_key: Path | None = Field(
        None,
        description="Require a model-signing signature (model.sig in the version folder) made with the "
        "private key of this PEM public key; unsigned or mis-signed versions are refused.",
    )
    feature_spec: Path | None = Field(
        None, description="Spec `model export-demo` trains with; a package serves its own copy."
    )
    signature: str = Field("serving_default", description="Signature called per batch.")
    alert_threshold: float = Field(
        0.9, ge=0, le=1, description="Score at which the default rule `alert` fires (unless outputs.rules is set)."
    )

    @property
    def rolling_out(self) -> bool:
        """A canary or shadow share is set: the newest version is a candidate, not the primary."""
        return self.canary_share > 0 or self.shadow_share > 0

    @model_validator(mode="before")
    @classmethod
    def _version_alone_pins(cls, data: Any) -> Any:
        """`model.version: 3` with no policy has always meant "serve version 3"."""
        if isinstance(data, dict) and data.get("version") is not None and "policy" not in data:
            return {**data, "policy": "pinned"}
        return data

    @model_validator(mode="after")
    def _policy_complete(self) -> ModelSettings:
        if self.policy == "pinned" and self.version is None:
            raise ValueError("policy pinned needs model.version")
        if self.policy == "list" and not self.versions:
            raise ValueError("policy list needs model.versions, e.g. [3, 4]")
        if self.policy == "pinned" and self.primary is not None:
            raise ValueError("policy pinned: model.version is the primary; remove model.primary")
        primary = self.version if self.policy == "pinned" else self.primary
        if self.candidate is not None and self.candidate == primary:
            raise ValueError(f"model.candidate {self.candidate} is also the primary; name another version")
        outside = [v for v in (self.primary, self.candidate) if v is not None and v not in self.versions]
        if self.policy == "list" and outside:
            raise ValueError(f"policy list: version {outside[0]} is not in model.versions {list(self.versions)}")
        return self


class EventSettings(Section):
    """The input fields the worker itself reads (the model reads its own); each is checked against
    the input schema at start (`streamer.contract`)."""

    id_field: str = Field("event_id", description="Copied as the scored record's event_id: a non-null string.")
    time_field: str = Field(
        "event_time", description="Event time in ms since the epoch: a non-null long (timestamp-millis or plain)."
    )
    entity_field: str = Field(
        description="The entity the score is about: a string, nullable or not. Written as entity_id; canary "
        "and shadow shares are sticky by it."
    )
    missing_entity: Literal["defaults", "dead_letter"] = Field(
        "dead_letter",
        description="An event whose entity_field, or the entity of an entity feature, is null or empty: "
        "dead_letter it with the reason, or score it with that entity's declared feature defaults and no "
        "aggregate update (no entity shares state with another); defaults needs a nullable entity_id in "
        "the scored schema when entity_field is nullable.",
    )


class DeliverySettings(Section):
    mode: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="at_least_once: commit after outputs are acknowledged; exactly_once: outputs and "
        "offsets in one Kafka transaction (consumers read with isolation.level=read_committed).",
    )
    transactional_id: str | None = Field(
        None,
        description="exactly_once: must stay the same across restarts of one member, so a restart fences "
        "its predecessor and aborts its open transaction; default '<group.id>-<worker_id>'.",
    )
    max_in_flight: int = Field(
        100_000, ge=1, description="Unacknowledged outputs above which input partitions are paused."
    )
    commit_interval_ms: float = Field(
        500.0, gt=0, description="Upper bound on time between checkpoints (flush, then commit)."
    )
    flush_timeout_s: float = Field(30.0, gt=0, description="Upper bound on waiting for producer acknowledgements.")
    refused_records: Literal["skip", "stop"] = Field(
        "skip",
        description="A dead letter the broker refuses for good (ACL, topic policy): skip counts and logs it and the "
        "partition moves on; stop ends the worker with exit 2. Scored records refused for good become dead letters.",
    )


class MetricsSettings(Section):
    enabled: bool = Field(True, description="Serve /metrics, /healthz and /readyz.")
    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 in a container.")
    port: int = Field(9400, ge=0, le=65535, description="Port of the three endpoints; 0 picks a free one.")


class Settings(Section):
    worker_id: str = Field(
        default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}",
        description="Names this member in logs and DLQ headers.",
    )
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings
    schemas: SchemaSettings
    batching: BatchingSettings = BatchingSettings()
    model: ModelSettings
    event: EventSettings
    outputs: OutputSettings = OutputSettings()
    delivery: DeliverySettings = DeliverySettings()
    features: FeatureStoreSettings = FeatureStoreSettings()
    metrics: MetricsSettings = MetricsSettings()
    drift: DriftSettings = DriftSettings()
    quality: QualitySettings | None = Field(
        None, description="Model quality from delayed labels; absent, the worker keeps no scores."
    )

    @model_validator(mode="after")
    def _quality_topics(self) -> Settings:
        if self.quality is not None and not (self.topics.labels and self.topics.quality):
            raise ValueError("quality needs topics.labels and topics.quality")
        return self

    @model_validator(mode="after")
    def _one_switch_for_transactions(self) -> Settings:
        """A `transactional.id` passed through to librdkafka would make every produce
        transactional while the checkpoint commits as at_least_once: delivery.mode decides."""
        if self.delivery.mode == "at_least_once":
            for section in ("common", "producer"):
                if "transactional.id" in getattr(self.kafka, section):
                    raise ValueError(
                        f"kafka.{section} sets transactional.id but delivery.mode is at_least_once; for "
                        "exactly-once output set delivery.mode: exactly_once (and delivery.transactional_id), "
                        "otherwise remove it"
                    )
        return self

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The decision rules: `outputs.rules`, or the classifier's default, `alert`."""
        if self.outputs.rules is not None:
            return self.outputs.rules
        first = self.outputs.values[0].numbers
        return (Rule(name="alert", output=first, at_least=self.model.alert_threshold, topic=self.topics.alerts),)

    def topic_names(self) -> list[str]:
        """Every topic the worker reads or writes: the `topics` section and the rules' topics."""
        return list(dict.fromkeys([*self.topics.names(), *(r.topic for r in self.rules if r.topic)]))

    def consumer_config(self) -> dict[str, Any]:
        """Defaults, then the passthrough: users can override every librdkafka property."""
        defaults = {
            "group.id": "streamer",
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5,
            "statistics.interval.ms": 1000,  # consumer lag per partition comes from these
        }
        return {**CLIENT_DEFAULTS, **defaults, **self.kafka.common, **self.kafka.consumer}

    def producer_config(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {"enable.idempotence": True, "acks": "all", "linger.ms": 2}
        if self.delivery.mode == "exactly_once":
            group = self.consumer_config()["group.id"]
            defaults |= {
                "transactional.id": self.delivery.transactional_id or f"{group}-{self.worker_id}",
                # An abandoned transaction (a member scaled away) blocks read_committed readers of
                # its partitions until this passes: keep it short.
                "transaction.timeout.ms": 10_000,
            }
        return {**CLIENT_DEFAULTS, **defaults, **self.kafka.common, **self.kafka.producer}

    def admin_config(self) -> dict[str, Any]:
        return {**CLIENT_DEFAULTS, **self.kafka.common}


# librdkafka leaves Nagle's algorithm on (the Java client turns it off): a small produce or fetch
# request then waits for the previous one's delayed ACK, up to 40 ms on Linux, a floor under the
# latency of every event.
CLIENT_DEFAULTS: dict[str, Any] = {"socket.nagle.disable": True}


def load_settings(path: Path | str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the config; every problem becomes a one-line `Fatal`."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise Fatal(f"config {path}: cannot read ({exc.strerror}); pass an existing YAML file") from exc
    except yaml.YAMLError as exc:
        raise Fatal(f"config {path}: not valid YAML ({exc}); fix the syntax") from exc
    if not isinstance(tree, dict):
        raise Fatal(f"config {path}: top level must be a mapping of sections")
    tree = merge(tree, environment_overrides(Settings, os.environ if environ is None else environ))
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: "
            + (
                "unknown key (check the spelling)"
                if err["type"] == "extra_forbidden"
                else err["msg"].removeprefix("Value error, ")
            )
            for err in exc.errors()
        )
        raise Fatal(f"config {path}: {problems}") from None
