"""Whether a model version may serve in this worker.

The lifecycle loads versions while the worker runs (a new directory, a pin, a canary). A version
that would break the running worker must be refused when it loads, with a message that names
the fix, not found out by the first batch it scores. The first version admitted also fixes what
the later ones must keep: the entity features keyed in Redis (their state has one layout) and
the worker's drift columns (input fields, entity features and the score).
"""

from __future__ import annotations

import logging

from streamer.codec import AvroCodec
from streamer.drift.histograms import SCORE, Baseline
from streamer.errors import Fatal
from streamer.feature_spec import Entity
from streamer.model import LoadedModel, load_package
from streamer.outputs import Outputs
from streamer.registry import SchemaRegistry
from streamer.settings import ModelSettings

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, inputs: AvroCodec, outputs: Outputs, registry: SchemaRegistry | None) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.registry = registry
        self.device = "/CPU:0"  # the worker sets the one it chose before the first load
        self._entity_features: tuple[Entity, ...] | None = None

    def load(self, settings: ModelSettings, version: int) -> LoadedModel:
        """Load one version and refuse it if its outputs make records other than schemas.scored
        (or the Schema Registry) takes, if it needs other entity features than the first version
        admitted, or if its drift baseline is unusable (the last two need a restart)."""
        model = load_package(
            settings, version, self.inputs.field_types, self.device, self.outputs.settings.outputs.values
        )
        self.outputs.check(model.outputs)
        if self.registry is not None:
            self.outputs.refuse_unregistrable(self.registry, f"model {model.name} v{version}")
        entity = model.spec.entity_features()
        if self._entity_features is None:
            self._entity_features = entity
        elif entity != self._entity_features:
            raise Fatal(
                f"model {model.name} v{version}: its entity features differ from the serving ones; restart to serve it"
            )
        self.baseline(model)
        return model

    def baseline(self, model: LoadedModel) -> Baseline:
        """The version's drift baseline, refused if it names columns no batch will carry."""
        try:
            baseline = Baseline.from_dict(model.baseline)
        except ValueError as exc:
            raise Fatal(f"model {model.name} v{model.version}: baseline.json: {exc}; re-export the package") from exc
        known = {*self.inputs.field_types, *(f.name for f in model.spec.entity_features()), SCORE}
        unknown = sorted(set(baseline.features) - known)
        if unknown:
            raise Fatal(
                f"model {model.name} v{model.version}: baseline.json has columns {unknown} that neither the input "
                "schema nor the entity features provide; fix schemas.input or re-export the package"
            )
        return baseline

    def drift_baseline(self, model: LoadedModel) -> Baseline | None:
        """None when the package has no baseline to judge drift against: drift is then off."""
        baseline = self.baseline(model)
        if not baseline.features:
            log.warning("model %s v%d has no drift baseline: drift is off", model.name, model.version)
            return None
        return baseline
