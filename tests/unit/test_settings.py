import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

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
    assert settings.batching.max_wait_ms == 2
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
    assert config["fetch.wait.max.ms"] == "7"  # librdkafka parses its own properties
    assert config["group.id"] == "g"
    assert "fetch.min.bytes" not in settings.producer_config()


def test_batch_sizes_must_increase(tmp_path: Path) -> None:
    with pytest.raises(Fatal, match="allowed_batch_sizes"):
        load_settings(write(tmp_path, MINIMAL + "batching: {allowed_batch_sizes: [256, 64]}\n"), environ={})


def test_missing_file_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(Fatal, match="cannot read"):
        load_settings(tmp_path / "nope.yaml", environ={})


@pytest.fixture(scope="module")
def minimal_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file for the property tests: hypothesis runs many examples in one test call."""
    return write(tmp_path_factory.mktemp("config"), MINIMAL)


SECRETS = ["[sekrit", "12345678", "#sekrit", "yes", '"x', "a: b", "0777", "on", "~", "{x", "- y", "'q", "%TAG"]


@pytest.mark.parametrize("secret", SECRETS)
def test_environment_passwords_are_taken_verbatim(tmp_path: Path, secret: str) -> None:
    settings = load_settings(
        write(tmp_path, MINIMAL),
        environ={"STREAMER_FEATURES__PASSWORD": secret, "STREAMER_KAFKA__COMMON__SASL_PASSWORD": secret},
    )
    assert settings.features.password is not None
    assert settings.features.password.get_secret_value() == secret
    assert settings.producer_config()["sasl.password"] == secret


STRING_FIELDS = ["STREAMER_FEATURES__PASSWORD", "STREAMER_FEATURES__USERNAME", "STREAMER_WORKER_ID"]


@pytest.mark.parametrize("variable", STRING_FIELDS)
@hypothesis_settings(max_examples=60, deadline=None)
@given(value=st.text(alphabet=string.printable, min_size=1, max_size=40))
def test_any_printable_string_field_value_is_kept_verbatim(minimal_config: Path, variable: str, value: str) -> None:
    settings = load_settings(minimal_config, environ={variable: value})
    password = settings.features.password
    kept = {
        "STREAMER_FEATURES__PASSWORD": password.get_secret_value() if password else None,
        "STREAMER_FEATURES__USERNAME": settings.features.username,
        "STREAMER_WORKER_ID": settings.worker_id,
    }
    assert kept[variable] == value


@hypothesis_settings(max_examples=80, deadline=None)
@given(value=st.text(alphabet=string.ascii_letters + string.digits + "!$%&'()*+,-.;=_~", min_size=4, max_size=40))
def test_a_bad_redis_url_is_one_line_without_the_value(minimal_config: Path, value: str) -> None:
    def refusal(secret: str) -> str:
        url = f"redis://:{secret}@[x" if len(secret) % 2 else f"notaurl://{secret}"
        with pytest.raises(Fatal) as caught:
            load_settings(minimal_config, environ={"STREAMER_FEATURES__URL": url})
        return str(caught.value)

    message = refusal(value)
    assert "features.url: not a valid Redis URL" in message and "\n" not in message
    # Nothing of the value shows: the line is the one any other value of its kind gets (a
    # substring test would fail on values such as "Redi", which the fixed text contains).
    assert message == refusal("q" * len(value))


@pytest.mark.parametrize("url", ["notaurl://x", "redis://user:pw@[bad/0", "redis://:sekrit", "redis://h:99999/0"])
def test_malformed_redis_urls_are_refused_at_load(tmp_path: Path, url: str) -> None:
    with pytest.raises(Fatal, match=r"features\.url: not a valid Redis URL") as caught:
        load_settings(write(tmp_path, MINIMAL), environ={"STREAMER_FEATURES__URL": url})
    assert "sekrit" not in str(caught.value) and "pw" not in str(caught.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_infinity_are_refused_as_such(tmp_path: Path, value: str) -> None:
    with pytest.raises(Fatal, match=r"model\.alert_threshold: Input should be a finite number"):
        load_settings(write(tmp_path, MINIMAL), environ={"STREAMER_MODEL__ALERT_THRESHOLD": value})
    with pytest.raises(Fatal, match=r"drift\.window_s: Input should be a finite number"):
        load_settings(write(tmp_path, MINIMAL + "drift: {window_s: .nan}\n"), environ={})


def test_structured_values_from_the_environment_are_yaml(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL), environ={"STREAMER_BATCHING__ALLOWED_BATCH_SIZES": "[64, 128]"})
    assert settings.batching.allowed_batch_sizes == (64, 128)


def test_malformed_yaml_in_a_structured_value_names_the_variable_not_the_text(tmp_path: Path) -> None:
    with pytest.raises(Fatal) as caught:
        load_settings(write(tmp_path, MINIMAL), environ={"STREAMER_KAFKA__COMMON": "{sasl.password: [sekrit"})
    message = str(caught.value)
    assert message.startswith("environment STREAMER_KAFKA__COMMON: kafka.common takes a YAML")
    assert "sekrit" not in message


def test_empty_value_unsets_an_optional_number(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL), environ={"STREAMER_SCHEMAS__MAX_RECORD_BYTES": ""})
    assert settings.schemas.max_record_bytes is None


@pytest.mark.parametrize("section", ["common", "producer"])
def test_a_transactional_id_passed_through_needs_exactly_once(tmp_path: Path, section: str) -> None:
    text = MINIMAL + f"kafka: {{{section}: {{transactional.id: t1}}}}\n"
    with pytest.raises(Fatal) as caught:
        load_settings(write(tmp_path, text), environ={})
    assert f"kafka.{section} sets transactional.id but delivery.mode is at_least_once" in str(caught.value)
    exactly_once = load_settings(write(tmp_path, text + "delivery: {mode: exactly_once}\n"), environ={})
    assert exactly_once.producer_config()["transactional.id"] == "t1"


def test_framed_outputs_need_a_registry(tmp_path: Path) -> None:
    with pytest.raises(Fatal, match=r"schemas: output_framing confluent registers the outputs' schemas: set schemas\."):
        load_settings(write(tmp_path, MINIMAL), environ={"STREAMER_SCHEMAS__OUTPUT_FRAMING": "confluent"})


def test_registry_client_properties_from_the_environment_are_dotted_and_verbatim(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, MINIMAL),
        environ={"STREAMER_SCHEMAS__REGISTRY_CONFIG__BASIC_AUTH_USER_INFO": "streamer:#x: 0777"},
    )
    assert settings.schemas.registry_config == {"basic.auth.user.info": "streamer:#x: 0777"}


def test_quality_is_off_by_default_and_needs_its_topics(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, MINIMAL), environ={}).quality is None
    with pytest.raises(Fatal, match=r"quality needs topics\.labels and topics\.quality"):
        load_settings(write(tmp_path, MINIMAL + "quality: {label_horizon_s: 3600}\n"), environ={})
    topics = MINIMAL.replace("dlq: dead}", "dlq: dead, labels: lab, quality: q}")
    settings = load_settings(write(tmp_path, topics + "quality: {label_horizon_s: 3600}\n"), environ={})
    assert settings.quality is not None and settings.quality.label_horizon_s == 3600
    assert {"lab", "q"} <= set(settings.topics.names())
