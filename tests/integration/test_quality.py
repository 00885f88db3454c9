"""Quality from delayed labels through the real stack: a worker scores events and keeps their
scores in Redis; labels arrive later, in two waves, read by two label consumers and then one;
the windows on the quality topic merge to the figures an offline computation gives on the same
(score, label) pairs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of, synth_payments
from streamer.drift.command import write_report
from streamer.feature_settings import FeatureStoreSettings
from streamer.feature_spec import FeatureSpec
from streamer.features import FeatureStore
from streamer.metrics import Metrics
from streamer.quality.join import LabelJoiner
from streamer.quality.records import group_view
from streamer.quality.scores import ScoreLog, unpack
from streamer.quality.settings import QualitySettings
from streamer.quality.windows import evaluate
from streamer.records import now_ms
from streamer.settings import Settings
from streamer.worker import Worker
from tests.integration.conftest import RedisServer, SettingsFactory, produce_values, read_topic
from tests.unit.quality.test_windows import exact_auc, reference_ece

EVENTS = 3000
PARTITIONS = 4  # of every topic make_settings creates
WINDOW_MS = 600_000  # quality.window_s: the events span three windows
UNKNOWN = 25  # labels for events no worker scored


def label_values(settings: Settings, rows: list[dict[str, object]]) -> list[bytes]:
    codec = AvroCodec(settings.schemas.labels)
    return [codec.encode_one(row) for row in rows]


def join_while(joiners: list[LabelJoiner], produce: Callable[[], int], timeout_s: float = 90) -> None:
    """Start the consumers; once the group has given out every partition, `produce` the labels
    (it returns how many); stop when together they have done them all."""
    threads = [threading.Thread(target=j.run, kwargs={"timeout_s": timeout_s}) for j in joiners]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    partitions = set(range(PARTITIONS))
    while time.monotonic() < deadline and not (
        all(j.source.assigned for j in joiners) and set().union(*(j.source.assigned for j in joiners)) == partitions
    ):
        time.sleep(0.1)
    expected = produce()
    while time.monotonic() < deadline:
        if sum(j.stats.joined + j.stats.unknown + j.stats.dead_lettered for j in joiners) >= expected:
            break
        time.sleep(0.2)
    for joiner in joiners:
        joiner.stop()
    for thread in threads:
        thread.join()


def ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def test_delayed_labels_give_the_offline_figures_per_window_and_two_consumers_merge(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:10]
    settings = make_settings(
        topics={"labels": f"labels-{run}", "quality": f"quality-{run}", "drift": f"drift-{run}"},
        quality={"window_s": WINDOW_MS / 1000, "label_horizon_s": 3600},
    )
    start = (now_ms() // WINDOW_MS - 4) * WINDOW_MS
    columns, truth = synth_payments(EVENTS, np.random.default_rng(5), id_prefix=f"q{run}-", start_ms=start)
    columns["event_time"] = start + np.arange(EVENTS, dtype=np.int64) * (3 * WINDOW_MS) // EVENTS
    values = AvroCodec(settings.schemas.input).encode(rows_of(columns))
    produce_values(settings, values, [c.encode() for c in columns["card_id"]])
    worker = Worker(settings)
    assert worker.run(max_events=EVENTS, timeout_s=120).scored == EVENTS
    assert worker.metrics.registry.get_sample_value("streamer_quality_scores_written_total") == EVENTS

    # What each event got, as the scored topic says.
    scored_codec = AvroCodec(settings.schemas.scored)
    got = {
        r["event_id"]: (r["score"], r["model_version"], r["event_time"])
        for r in (
            scored_codec.decode_one(m.value)
            for m in read_topic(settings.admin_config(), settings.topics.scored, EVENTS)
        )
    }
    assert len(got) == EVENTS

    rng = np.random.default_rng(6)
    order = rng.permutation(EVENTS)
    labelled = order[: int(0.9 * EVENTS)]  # some events never get a label
    first, late = labelled[: len(labelled) // 2], labelled[len(labelled) // 2 :]
    label_rows = [
        {"event_id": columns["event_id"][i], "label": bool(truth[i]), "label_time": now_ms()} for i in range(EVENTS)
    ]
    unknown = [{"event_id": f"never-scored-{i}", "label": True, "label_time": now_ms()} for i in range(UNKNOWN)]
    empty = {"event_id": "", "label": False, "label_time": now_ms()}
    assert settings.topics.labels
    topic = settings.topics.labels

    def first_wave() -> int:
        rows = [label_rows[i] for i in first] + unknown + [empty]
        keys = [str(row["event_id"]).encode() for row in rows] + [b"malformed"]
        produce_values(settings, [*label_values(settings, rows), b"\x01not avro"], keys, topic)
        return len(rows) + 1

    a, b = LabelJoiner(settings), LabelJoiner(settings.model_copy(update={"worker_id": f"{settings.worker_id}-b"}))
    join_while([a, b], first_wave)
    assert a.stats.joined + b.stats.joined == len(first)
    assert a.stats.unknown + b.stats.unknown == UNKNOWN
    assert a.stats.dead_lettered + b.stats.dead_lettered == 2
    assert a.stats.joined and b.stats.joined, "each consumer joins the labels of its partitions"

    def late_wave() -> int:  # labels for the same windows, after their first figures went out
        rows = [label_rows[i] for i in late]
        produce_values(settings, label_values(settings, rows), [str(r["event_id"]).encode() for r in rows], topic)
        return len(late)

    c = LabelJoiner(settings)
    join_while([c], late_wave)
    assert c.stats.joined == len(late)

    windows = group_view(settings)  # increments of a, b and c, merged
    assert all(len(w.consumer_ids) == 2 for w in windows)
    scores = np.array([got[columns["event_id"][i]][0] for i in labelled])
    versions = np.array([got[columns["event_id"][i]][1] for i in labelled])
    times = np.array([got[columns["event_id"][i]][2] for i in labelled])
    labels = truth[labelled].astype(bool)
    threshold = settings.model.alert_threshold
    assert [w.start_ms for w in windows] == [start, start + WINDOW_MS, start + 2 * WINDOW_MS]
    for w in windows:
        inside = (times // WINDOW_MS * WINDOW_MS == w.start_ms) & (versions == w.model_version)
        s, y = scores[inside], labels[inside]
        alert = s >= threshold
        figures = evaluate(w)
        assert w.labelled == inside.sum() and w.true_positives == (y & alert).sum()
        assert figures.base_rate == pytest.approx(y.mean(), abs=1e-15)
        assert figures.precision == ratio((y & alert).sum(), alert.sum())
        assert figures.recall == ratio((y & alert).sum(), y.sum())
        assert figures.auc is not None and figures.auc_bound is not None
        assert abs(figures.auc - exact_auc(s, y)) <= figures.auc_bound + 1e-12
        assert figures.calibration_error == pytest.approx(reference_ece(s, y), rel=1e-9)

    def counted(name: str, **labels: str) -> float:  # summed over the three consumers, as PromQL would
        return sum(j.metrics.registry.get_sample_value(name, labels) or 0.0 for j in (a, b, c))

    cells = {"true_positives": ("1", "true"), "false_positives": ("0", "true"), "false_negatives": ("1", "false")}
    for field, (label, alert) in (cells | {"true_negatives": ("0", "false")}).items():
        matrix = counted("streamer_quality_labelled_events_total", model_version="1", label=label, alert=alert)
        assert matrix == sum(getattr(w, field) for w in windows)
    assert counted("streamer_quality_labels_total", outcome="unknown") == UNKNOWN

    dead = read_topic(settings.admin_config(), settings.topics.dlq, 2)
    assert len(dead) == 2

    write_report(settings, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    section = page[page.index("Model quality from labels") : page.index("<h2>Metrics over time")]
    assert section.count("<tr><td class=l>") == len(windows)


def test_scores_ride_the_checkpoint_expire_after_the_horizon_and_never_hold_a_commit(
    redis_server: RedisServer,
) -> None:
    """Written by the checkpoint's persist with the state, kept through an outage, and a failure
    to write them alone raises nothing (the commit goes on)."""
    metrics = Metrics.create()
    scores = ScoreLog("q", QualitySettings(label_horizon_s=600), metrics)
    config = FeatureStoreSettings(
        url=redis_server.url, key_prefix="q", timeout_ms=50, max_stall_ms=100, breaker_open_s=0.5
    )
    stored_only = FeatureSpec.from_dict(
        {"features": [{"name": "risk", "kind": "entity", "entity": "card", "key": "p:{id}", "default": 0.5}]}
    )
    features = FeatureStore(config, stored_only, metrics, "t", "card", scores=scores)
    client = redis.Redis(port=redis_server.port)

    def lookup(event_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pipe = client.pipeline(transaction=False)
        read = scores.layout.queue_read(pipe, event_ids)
        return unpack(read(pipe.execute()))

    scores.add(np.array(["e1", "e2"], dtype=object), np.array([0.1, 0.9]), np.array([3, 3]), np.array([1_000, 2_000]))
    features.persist({0: 10})
    found, values = lookup(["e1", "e2"])
    assert found.all() and values["score"].tolist() == [0.1, 0.9] and values["event_time"].tolist() == [1_000, 2_000]
    ttls = [client.pttl(key) for key in client.keys("q:score:*")]
    assert ttls and all(600_000 < ttl <= 1_200_000 for ttl in ttls)  # between one and two horizons
    assert len(scores) == 0

    redis_server.stop()
    scores.add(np.array(["e3"], dtype=object), np.array([0.5]), np.array([3]), np.array([3_000]))
    features.persist({0: 11})  # no state to hold the commit back: nothing raised, the score waits
    assert len(scores) == 1
    redis_server.start()
    client = redis.Redis(port=redis_server.port)
    time.sleep(features.settings.breaker_open_s + 0.1)
    features.persist({0: 12})
    assert len(scores) == 0 and lookup(["e3"])[0].all()
