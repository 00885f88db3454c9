"""Streamed scores equal `streamer score` on the same events, on a package built by the public API."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from streamer.codec import AvroCodec
from streamer.demo.payments import rows_of
from streamer.worker import Worker
from tests.conftest import ROOT, SCHEMAS
from tests.integration.conftest import SettingsFactory, produce_payments, read_topic
from tests.integration.test_cli import write_config

EVENTS = 3000


def test_streamed_and_offline_scores_are_identical(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings()
    sent = produce_payments(settings, EVENTS, seed=4)
    Worker(settings).run(max_events=EVENTS, timeout_s=120)
    codec = AvroCodec(SCHEMAS / "scored_payment.avsc")
    brokers = str(settings.admin_config()["bootstrap.servers"])
    streamed = {
        row["event_id"]: row["score"]
        for row in (codec.decode_one(m.value) for m in read_topic(brokers, settings.topics.scored, EVENTS))
    }

    events_file, scored_file = tmp_path / "events.avro", tmp_path / "scored.avro"
    AvroCodec(settings.schemas.input).write_container(events_file, rows_of(sent.columns))
    command = [sys.executable, "-m", "streamer", "score", "--config", str(write_config(settings, tmp_path / "c.yaml"))]
    done = subprocess.run(
        [*command, "--input", str(events_file), "--output", str(scored_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"read {EVENTS} events: scored {EVENTS} into {scored_file}" in done.stdout
    offline_columns = next(codec.read_container(scored_file, EVENTS))
    offline = dict(zip(offline_columns["event_id"], offline_columns["score"], strict=True))
    assert offline_columns["source_offset"].tolist() == list(range(EVENTS))

    assert offline.keys() == streamed.keys()
    ids = list(offline)
    np.testing.assert_array_equal([streamed[i] for i in ids], [offline[i] for i in ids])
