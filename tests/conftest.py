"""Shared fixtures: paths to the project's schemas and a small model exported once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
FEATURE_SPEC = ROOT / "configs" / "features" / "fraud.yaml"


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo fraud model package trained on few events: tests need its shape, not its skill."""
    from streamer.demo import train_demo_model

    base = tmp_path_factory.mktemp("models") / "fraud"
    train_demo_model(base, FEATURE_SPEC, SCHEMAS / "payment.avsc", version=1, events=4000)
    return base
