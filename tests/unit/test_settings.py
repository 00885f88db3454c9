from pathlib import Path

import pytest

from streamer.errors import Fatal
from streamer.settings import load_settings

MINIMAL = """
topics: {input: in, scored: out, dlq: dead}
schemas: {input: a.avsc, scored: b.avsc, dlq: c.avsc}
model: {path: models/x}
event: {entity_field: card_id}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_fill_optional_sections(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL), environ={})
    assert settings.batching.max_wait_ms == 5
    assert settings.consumer_config()["partition.assignment.strategy"] == "cooperative-sticky"
    assert settings.consumer_config()["enable.auto.commit"] is False


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(Fatal) as caught:
        load_settings(write(tmp_path, MINIMAL + "batching: {max_batch_sise: 10}\n"), environ={})
    message = str(caught.value)
    assert "batching.max_batch_sise: unknown key" in message
    assert "\n" not in message


def test_environment_overrides_file_and_parses_scalars(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, MINIMAL),
        environ={"STREAMER_BATCHING__MAX_WAIT_MS": "12.5", "STREAMER_MODEL__VERSION": "3"},
    )
    assert settings.batching.max_wait_ms == 12.5
    assert settings.model.version == 3


def test_librdkafka_properties_pass_through_verbatim(tmp_path: Path) -> None:
    text = MINIMAL + "kafka: {consumer: {fetch.min.bytes: 1000, group.id: g}}\n"
    settings = load_settings(write(tmp_path, text), environ={"STREAMER_KAFKA__CONSUMER__FETCH_WAIT_MAX_MS": "7"})
    config = settings.consumer_config()
    assert config["fetch.min.bytes"] == 1000
    assert config["fetch.wait.max.ms"] == 7
    assert config["group.id"] == "g"
    assert "fetch.min.bytes" not in settings.producer_config()


def test_batch_sizes_must_increase(tmp_path: Path) -> None:
    with pytest.raises(Fatal, match="allowed_batch_sizes"):
        load_settings(write(tmp_path, MINIMAL + "batching: {allowed_batch_sizes: [256, 64]}\n"), environ={})


def test_missing_file_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(Fatal, match="cannot read"):
        load_settings(tmp_path / "nope.yaml", environ={})
