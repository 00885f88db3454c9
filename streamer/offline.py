"""`streamer score`: the scoring path without Kafka, for backfills, replays and parity checks.

Avro container in → decode → batch → model → encode → Avro container out, through the same
`pipeline` and `codec` functions the worker uses; only the transport differs. What the worker
would dead-letter goes to a container of dead-letter records next to the output, so one refused
record never costs the rest of the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer import pipeline
from streamer.codec import AvroCodec
from streamer.contract import check_entity_features, check_event_contract
from streamer.dead_letters import dead_letter_record
from streamer.features import FeatureStore
from streamer.lifecycle import Serving
from streamer.metrics import Metrics
from streamer.model import load_model
from streamer.outputs import Outputs
from streamer.records import now_ms
from streamer.settings import Settings


@dataclass(frozen=True)
class ScoreSummary:
    read: int
    scored: int
    dead_lettered: int
    dead_letters: Path

    def line(self, target: Path) -> str:
        refused = f"; {self.dead_lettered} dead-lettered into {self.dead_letters}" if self.dead_lettered else ""
        return f"read {self.read} events: scored {self.scored} into {target}{refused}"


def dead_letter_path(target: Path) -> Path:
    """Where the refused records of `target` go: `scored.avro` → `scored.dlq.avro`."""
    return target.with_name(f"{target.stem}.dlq{target.suffix or '.avro'}")


def score_file(settings: Settings, source: Path, target: Path) -> ScoreSummary:
    """Score every record of `source` into `target`, the refused ones into `dead_letter_path`.
    `source_partition` is -1 and `source_offset` the record's index in the file, so rows trace
    back to their input (`AvroCodec.decode_container`)."""
    input_codec = AvroCodec(settings.schemas.input)
    outputs = Outputs(settings, input_codec)
    event = settings.event
    check_event_contract(event, input_codec, outputs.scored_codec)
    model = load_model(settings.model, input_codec.field_types, settings.outputs.values)
    outputs.check(model.outputs)
    features = FeatureStore(settings.features, model.spec, Metrics.create(), event.time_field, None, offline=True)
    features.check_schema(input_codec.field_types)
    check_entity_features(model.spec, input_codec)
    features.start()
    entity_fields = pipeline.entity_fields(event.entity_field, model)
    needed = pipeline.needed_inputs(Serving(model))
    batching = settings.batching
    read = 0
    dead: list[dict[str, Any]] = []

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal read
        for decoded, letters in input_codec.decode_container(source, batching.max_batch_size):
            read += len(decoded) + len(letters)
            events, refused = pipeline.admit(decoded, entity_fields, event.missing_entity, needed)
            enrichment = features.enrich(events)
            scored, rejected = pipeline.score_batch(
                Serving(model),
                events,
                batching.allowed_batch_sizes,
                now_ms(),
                enrichment,
                event.entity_field,
            )
            failed_at = now_ms()
            for letter in [
                *letters,
                *input_codec.dead_letters(decoded, refused, str(source)),
                *input_codec.dead_letters(events, rejected, str(source)),
            ]:
                dead.append(dead_letter_record(letter, settings.worker_id, failed_at))
            yield from outputs.rows(scored)

    outputs.scored_codec.write_container(target, rows())
    dead_letters = dead_letter_path(target)
    dead_letters.unlink(missing_ok=True)  # a dead-letter file of an earlier run would mislead
    if dead:
        AvroCodec(settings.schemas.dlq).write_container(dead_letters, dead)
    return ScoreSummary(read, read - len(dead), len(dead), dead_letters)
