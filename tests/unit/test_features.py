"""What the feature stage accepts at start (no Redis needed: the client connects lazily)."""

import pytest

from streamer.errors import Fatal
from streamer.feature_settings import FeatureStoreSettings
from streamer.feature_spec import FeatureSpec
from streamer.features import FeatureStore
from streamer.metrics import Metrics
from tests.unit.test_aggregates import SPEC


def test_aggregates_over_another_field_than_the_partition_key_are_refused() -> None:
    settings = FeatureStoreSettings()
    with pytest.raises(Fatal, match=r"\['m_n'\] aggregate over 'merchant'.*keyed by 'card'"):
        FeatureStore(settings, SPEC, Metrics.create(), "t", "card")
    only_card = FeatureSpec(tuple(f for f in SPEC.features if getattr(f, "entity", None) != "merchant"))
    assert FeatureStore(settings, only_card, Metrics.create(), "t", "card").state is not None
    assert FeatureStore(settings, SPEC, Metrics.create(), "t", None, offline=True).state is None
