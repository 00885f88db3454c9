"""The README's "bring your own model" example runs and produces a servable package."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from streamer.codec import AvroCodec
from streamer.demo.payments import synth_payments
from streamer.model import load_model
from streamer.pipeline import to_tensors
from streamer.settings import ModelSettings
from tests.conftest import ROOT, SCHEMAS


def test_bring_your_own_model_example(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "examples/bring_your_own_model.py", str(tmp_path / "byom")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    model = load_model(ModelSettings(path=tmp_path / "byom"), AvroCodec(SCHEMAS / "payment.avsc").field_types)
    columns, _ = synth_payments(10, np.random.default_rng(1))
    scores = model.signature(**to_tensors(columns, model.inputs, 10))["score"].numpy()
    assert scores.shape == (10,) and ((scores >= 0) & (scores <= 1)).all()
