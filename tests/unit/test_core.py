"""The worker's core modules know no domain: the payments demo lives in streamer/demo.py (and the
commands that run it), its names in configs and schemas, never in the stages."""

import re

from tests.conftest import ROOT

DEMO_NAMES = re.compile(r"\b(card|payment|merchant|fraud|mcc)|ScoredPayment", re.IGNORECASE)
OUTSIDE_THE_CORE = {"demo.py", "cli.py"}


def test_no_name_from_the_payments_demo_is_in_a_core_module() -> None:
    core = [p for p in (ROOT / "streamer").rglob("*.py") if p.name not in OUTSIDE_THE_CORE]
    assert len(core) > 20
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in core
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if DEMO_NAMES.search(line)
    ]
    assert found == []
