"""20,000 events through a real broker: each scored once, each score equal to the offline call."""

import numpy as np

from streamer.codec import AvroCodec
from streamer.features import replay_aggregates
from streamer.model import load_model
from streamer.pipeline import to_tensors
from streamer.settings import ModelSettings
from streamer.worker import Worker
from tests.conftest import SCHEMAS
from tests.integration.conftest import SettingsFactory, committed_offsets, end_offsets, produce_payments, read_topic

EVENTS = 20_000


def test_every_event_scored_once_with_offline_equal_scores(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    sent = produce_payments(settings, EVENTS)

    stats = Worker(settings).run(max_events=EVENTS, timeout_s=180)

    assert stats.scored == EVENTS
    assert stats.dead_lettered == 0
    codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    scored = [
        codec.decode_one(m.value)
        for m in read_topic(settings.admin_config()["bootstrap.servers"], settings.topics.scored, EVENTS)
    ]
    ids = [row["event_id"] for row in scored]
    assert len(ids) == EVENTS
    assert set(ids) == set(sent.columns["event_id"])  # each exactly once: same size, same set

    fields = AvroCodec(SCHEMAS / "payment.avsc").field_types
    model = load_model(settings.model, fields)
    # Per card, the worker saw events in production order: the offline twin replays that order.
    columns = sent.columns | replay_aggregates(model.spec.entity_features(), sent.columns, "event_time")
    offline = model.signature(**to_tensors(columns, model.inputs, EVENTS))["score"].numpy()
    offline_by_id = dict(zip(sent.columns["event_id"], offline.astype(np.float64), strict=True))
    streamed = np.array([row["score"] for row in scored])
    expected = np.array([offline_by_id[i] for i in ids])
    assert np.max(np.abs(streamed - expected)) <= 1e-6
    assert {row["model_version"] for row in scored} == {1}

    # Commits cover exactly what was consumed: nothing left behind, nothing beyond.
    assert committed_offsets(settings) == end_offsets(settings)


def test_alert_topic_holds_exactly_the_events_over_threshold(make_settings: SettingsFactory) -> None:
    probe = make_settings()
    sent = produce_payments(probe, 2000, seed=1)
    model = load_model(ModelSettings(path=probe.model.path), AvroCodec(probe.schemas.input).field_types)
    columns = sent.columns | replay_aggregates(model.spec.entity_features(), sent.columns, "event_time")
    offline = model.signature(**to_tensors(columns, model.inputs, 2000))["score"].numpy()
    settings = make_settings(model={"alert_threshold": float(np.quantile(offline, 0.9))})
    produce_payments(settings, 2000, seed=1)
    Worker(settings).run(max_events=2000, timeout_s=120)

    brokers = str(settings.admin_config()["bootstrap.servers"])
    codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    scored = [codec.decode_one(m.value) for m in read_topic(brokers, settings.topics.scored, 2000)]
    over = {r["event_id"] for r in scored if r["score"] >= settings.model.alert_threshold}
    assert 150 <= len(over) <= 250  # the top decile
    assert all(r["alert"] == (r["event_id"] in over) for r in scored)
    assert settings.topics.alerts is not None
    alerts = {codec.decode_one(m.value)["event_id"] for m in read_topic(brokers, settings.topics.alerts, len(over))}
    assert alerts == over
