"""The aggregate arithmetic: the vectorised steps equal a row-by-row loop, bit for bit."""

from typing import Any

import numpy as np
import pytest

from streamer.aggregates import AggregateGroup, AggregateReplayer, replay_aggregates
from streamer.feature_spec import Entity, FeatureSpec

SPEC = FeatureSpec.from_dict(
    {
        "features": [
            {"name": "n_1h", "kind": "entity", "entity": "card", "aggregate": "count", "half_life_s": 3600},
            {"name": "n_all", "kind": "entity", "entity": "card", "aggregate": "count"},
            {"name": "sum_amt", "kind": "entity", "entity": "card", "aggregate": "sum", "of": "amount"},
            {"name": "sum_dec", "kind": "entity", "entity": "card", "aggregate": "sum", "of": "amount",
             "half_life_s": 90},
            {"name": "mean_amt", "kind": "entity", "entity": "card", "aggregate": "mean", "of": "amount",
             "half_life_s": 600, "default": -1},
            {"name": "max_amt", "kind": "entity", "entity": "card", "aggregate": "max", "of": "amount", "default": -1},
            {"name": "since", "kind": "entity", "entity": "card", "aggregate": "since_last", "default": -1},
            {"name": "m_n", "kind": "entity", "entity": "merchant", "aggregate": "count"},
            {"name": "risk", "kind": "entity", "entity": "card", "key": "profile:card:{id}", "default": 0.5},
        ]
    }
)  # fmt: skip
FEATURES = SPEC.entity_features()


def reference(features: tuple[Entity, ...], columns: dict[str, np.ndarray], time_field: str) -> dict[str, Any]:
    """The aggregates one event at a time in plain Python: the arithmetic the worker's Lua script
    and the offline twin shared before the state moved into the worker."""
    aggregates = [f for f in features if f.aggregate]
    states: dict[tuple[str, Any], dict[str, float]] = {}
    out = {f.name: np.full(len(columns[time_field]), f.default, np.float32) for f in aggregates}
    values = {f.of: columns[f.of].astype(np.float64).tolist() for f in aggregates if f.of}
    for i, t in enumerate(columns[time_field].tolist()):
        touched = set()
        for f in aggregates:
            key = (f.entity, columns[f.entity][i])
            state = states.setdefault(key, {})
            ts = state.get("ts")
            decay = 0.5 ** ((t - ts) / (f.half_life_s * 1000)) if f.half_life_s and ts is not None and t > ts else 1.0
            count, total = state.get(f"{f.name}:c", 0.0) * decay, state.get(f"{f.name}:s", 0.0) * decay
            maximum = state.get(f"{f.name}:m")
            before = {
                "count": count,
                "sum": total,
                "mean": total / count if count > 0 else None,
                "max": maximum,
                "since_last": (t - ts) / 1000 if ts is not None else None,
            }[str(f.aggregate)]
            v = values[f.of][i] if f.of else 0.0
            if f.aggregate in ("count", "sum", "mean"):
                state[f"{f.name}:c"], state[f"{f.name}:s"] = count + 1, total + v
            elif f.aggregate == "max" and (maximum is None or v > maximum):
                state[f"{f.name}:m"] = v
            if before is not None:
                out[f.name][i] = before
            touched.add(key)
        for key in touched:
            ts = states[key].get("ts")
            states[key]["ts"] = t if ts is None or t > ts else ts
    return out


def stream(n: int, seed: int, cards: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    steps = rng.integers(0, 120_000, n)
    steps[rng.random(n) < 0.1] = 0  # equal times: no decay, ts kept
    times = 1_700_000_000_000 + np.cumsum(steps)
    late = rng.random(n) < 0.05
    times[late] -= rng.integers(1, 500_000, late.sum())  # out of order: ts is a maximum
    return {
        "card": rng.choice(np.array([f"c{i}" for i in range(cards)], dtype=object), n),
        "merchant": rng.choice(np.array(["m1", "m2"], dtype=object), n),
        "amount": np.round(rng.exponential(40, n), 2) * rng.choice([1, -1], n),
        "t": times.astype(np.int64),
    }


@pytest.mark.parametrize(("n", "cards", "seed"), [(1, 1, 0), (300, 7, 1), (2000, 400, 2), (500, 1, 3)])
def test_vectorised_steps_equal_the_row_by_row_loop(n: int, cards: int, seed: int) -> None:
    columns = stream(n, seed, cards)
    got, expected = replay_aggregates(FEATURES, columns, "t"), reference(FEATURES, columns, "t")
    assert got.keys() == expected.keys()
    for name, column in expected.items():
        np.testing.assert_array_equal(got[name], column, err_msg=name)


def test_state_carries_across_calls_as_one_call() -> None:
    columns = stream(600, 4)
    replayer = AggregateReplayer(FEATURES, "t")
    parts = [replayer.replay({k: v[i : i + 97] for k, v in columns.items()}) for i in range(0, 600, 97)]
    whole = replay_aggregates(FEATURES, columns, "t")
    for name, column in whole.items():
        np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]), column, err_msg=name)


def test_first_event_sees_defaults_and_max_keeps_a_nan_value_as_the_loop_did() -> None:
    columns = {
        "card": np.array(["a", "a", "a"], dtype=object),
        "merchant": np.array(["m", "m", "m"], dtype=object),
        "amount": np.array([np.nan, 5.0, 7.0]),
        "t": np.array([1000, 3000, 3000], dtype=np.int64),
    }
    got = replay_aggregates(FEATURES, columns, "t")
    assert got["n_all"].tolist() == [0, 1, 2] and got["since"].tolist() == [-1, 2, 0]
    assert got["max_amt"][0] == -1 and np.isnan(got["max_amt"][1:]).all()
    for name, column in reference(FEATURES, columns, "t").items():
        np.testing.assert_array_equal(got[name], column, err_msg=name)


def test_groups_and_layout_digest() -> None:
    card, merchant = AggregateGroup.of(FEATURES)
    assert card.entity == "card" and merchant.entity == "merchant"
    assert card.width == 1 + 2 * 6 and merchant.width == 3
    assert card.digest != AggregateGroup.of(FEATURES[1:])[0].digest
