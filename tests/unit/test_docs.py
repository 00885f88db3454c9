"""The README's Operations section names exactly the metrics and log events the worker has."""

import re

from prometheus_client import Counter, Gauge, Histogram

from streamer.metrics import Metrics
from tests.conftest import ROOT


def operations() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Operations")
    return readme[start : readme.index("\n## ", start + 1)]


def test_the_metrics_listed_are_the_metrics_declared_with_their_labels() -> None:
    listed = {name: labels for name, labels in re.findall(r"`(streamer_[a-z_]+)(?:\{([a-z_,]+)\})?`", operations())}
    declared: dict[str, str] = {}
    metrics = Metrics.create()
    for metric in vars(metrics).values():
        if isinstance(metric, Counter | Gauge | Histogram):
            suffix = "_total" if isinstance(metric, Counter) else ""
            declared[metric._name + suffix] = ",".join(metric._labelnames)
    declared[metrics.end_to_end_seconds.name] = ""  # batch-fed: no labels
    assert listed == declared


def test_the_log_events_listed_are_the_events_the_code_emits() -> None:
    emitted = {
        event
        for path in (ROOT / "streamer").rglob("*.py")
        for event in re.findall(r'"event": "([a-z_]+)"', path.read_text())
    }
    bullet = operations().split("carry an `event` field: ", 1)[1].split(". ", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", bullet)) == emitted
