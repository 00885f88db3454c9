"""`streamer model profile`'s measurement: one row per padded size, timed through the worker's call."""

from pathlib import Path

from streamer.call_cost import call_costs, table
from streamer.codec import AvroCodec
from streamer.model import load_model
from streamer.settings import ModelSettings
from tests.conftest import SCHEMAS


def test_each_size_is_timed_and_the_fixed_cost_of_a_call_is_shared_by_its_rows(demo_model: Path) -> None:
    model = load_model(ModelSettings(path=demo_model), AvroCodec(SCHEMAS / "payment.avsc").field_types)

    costs = call_costs(model, (1, 256), calls=5)

    assert [c.rows for c in costs] == [1, 256]
    assert all(0 < c.wall_ms <= c.wall_p90_ms and c.cpu_ms > 0 for c in costs)
    # a call of one row is nearly all fixed cost (dispatch, the graph's ops): 256 rows share it
    assert costs[1].per_row_us < costs[0].per_row_us / 10
    lines = table(costs).splitlines()
    assert lines[0].split()[0] == "rows" and [line.split()[0] for line in lines[1:]] == ["1", "256"]
