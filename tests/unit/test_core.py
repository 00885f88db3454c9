"""The worker's core modules know no domain: the payments demo lives in streamer/demo/ (its data,
its model, its commands), its names in configs and schemas, never in the stages or the CLI."""

import re

from tests.conftest import ROOT

DEMO_NAMES = re.compile(r"\b(card|payment|merchant|fraud|mcc)|ScoredPayment", re.IGNORECASE)
DEMO = ROOT / "streamer" / "demo"


def test_no_name_from_the_payments_demo_is_in_a_core_module() -> None:
    core = [p for p in (ROOT / "streamer").rglob("*.py") if DEMO not in p.parents]
    assert len(core) > 40 and ROOT / "streamer" / "cli.py" in core
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in core
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if DEMO_NAMES.search(line)
    ]
    assert found == []


def test_the_demo_is_where_its_names_are() -> None:
    """The grep above would pass vacuously if the demo moved out of reach of its pattern."""
    assert DEMO_NAMES.search((DEMO / "payments.py").read_text())
