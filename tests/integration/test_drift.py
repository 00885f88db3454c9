"""Drift through the real stack: unchanged traffic passes, a shifted stream alerts within one
window, on the drift topic, on /metrics and in the analyst report."""

import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of, synth_payments
from streamer.drift.command import write_report
from streamer.drift.metrics import WindowReport
from streamer.drift.records import from_avro_record
from streamer.kafka.consumer import read_topic_to_end
from streamer.records import now_ms
from streamer.settings import Settings
from streamer.worker import Worker
from tests.integration.conftest import Scraped, SettingsFactory, produce_values, samples, value

WINDOW = 5000  # drift.min_events, the sample size the default cuts are documented for
ALERT = 2.0  # streamer_drift_status of an alerting column
STREAM_MS = 600_000  # each stream covers ten minutes of event time


def produce_stream(settings: Settings, n: int, seed: int, start_ms: int, shifted: bool) -> None:
    columns, _ = synth_payments(n, np.random.default_rng(seed), id_prefix=f"d{seed}-", start_ms=start_ms)
    columns["event_time"] = start_ms + np.arange(n, dtype=np.int64) * STREAM_MS // n  # streams in time order
    if shifted:
        columns["amount"] = np.round(columns["amount"] * 3, 2)  # a mean shift of log(3) ≈ 0.9 sd
        new = np.random.default_rng(seed).random(n) < 0.1
        columns["country"] = np.where(new, "ZZ", columns["country"]).astype(object)  # never seen in training
    values = AvroCodec(settings.schemas.input).encode(rows_of(columns))
    produce_values(settings, values, [c.encode() for c in columns["card_id"]])


def drift_windows(settings: Settings) -> list[WindowReport]:
    assert settings.topics.drift
    codec = AvroCodec(settings.schemas.drift)
    return [
        from_avro_record(codec.decode_one(v)) for v in read_topic_to_end(settings.admin_config(), settings.topics.drift)
    ]


def test_shift_alerts_on_topic_metrics_and_report(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings(
        topics={"drift": f"drift-{uuid.uuid4().hex[:10]}"},
        drift={"window": "count", "window_events": WINDOW, "min_events": WINDOW},
    )
    start = now_ms()
    produce_stream(settings, 2 * WINDOW, seed=11, start_ms=start, shifted=False)
    assert Worker(settings).run(max_events=2 * WINDOW, timeout_s=120).scored == 2 * WINDOW
    unchanged = drift_windows(settings)
    assert [r.window.events for r in unchanged] == [WINDOW, WINDOW]
    for report in unchanged:
        assert report.features["amount"].status == "ok" and report.features["country"].status == "ok"

    produce_stream(settings, 2 * WINDOW, seed=12, start_ms=start + STREAM_MS, shifted=True)
    worker = Worker(settings)
    scraped: list[Scraped] = []

    def scrape_until_done() -> None:
        """Until every shifted event is scored and the alert shows, then stop the worker."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if worker.health is not None:
                scraped.append(samples(worker.health.port))
                alerting = scraped[-1].get(("streamer_drift_status", (("feature", "amount"),))) == ALERT
                if alerting and value(scraped[-1], "streamer_events_scored_total") == 2 * WINDOW:
                    break
            time.sleep(0.2)
        worker.stop()

    scraper = threading.Thread(target=scrape_until_done)
    scraper.start()
    worker.run(timeout_s=150)
    scraper.join()

    metrics = scraped[-1]
    assert metrics[("streamer_drift_status", (("feature", "amount"),))] == ALERT
    assert metrics[("streamer_drift_status", (("feature", "country"),))] == ALERT
    assert metrics[("streamer_drift_value", (("feature", "amount"), ("metric", "psi")))] >= 0.25

    shifted = [r for r in drift_windows(settings) if r not in unchanged]
    assert [r.window.events for r in shifted] == [WINDOW, WINDOW]  # the first shifted window alerts already
    for report in shifted:
        assert report.status == "alert"
        assert report.features["amount"].status == "alert" and report.features["country"].status == "alert"
        zz = report.window.features["country"].counts[-1]
        assert zz >= 0.08 * WINDOW  # "ZZ" lands in the OOV slot, and is named with its count
        assert report.window.features["country"].new_values == (("ZZ", zz),)
        assert report.window.features["amount"].total > 0

    summary = write_report(settings, tmp_path / "report.html")
    assert "latest window alert" in summary
    html = (tmp_path / "report.html").read_text()
    assert "metrics_over_time.png" in html and (tmp_path / "metrics_over_time.png").stat().st_size > 10_000
    assert re.search(r"\d+ of \d+ columns drifted: [^<]*amount", html) and "<b>ZZ</b>" in html
    assert len(list(tmp_path.glob("histogram_*.png"))) == 4
