"""Model packages: export a SavedModel whose signature takes raw columns, and load one to serve.

Layout, as TF Serving: `<base>/<version>/` with a SavedModel inside; the newest version is
served unless one is pinned. Every way a package can be unusable becomes a `Fatal` that names
the folder and the fix, before the worker joins its consumer group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from streamer.errors import Fatal
from streamer.preprocess import Preprocessor

log = logging.getLogger(__name__)

Signature = Callable[..., Mapping[str, tf.Tensor]]


def export_saved_model(
    preprocessor: Preprocessor, network: tf.keras.Model, path: Path, score_output: str = "score"
) -> None:
    """Save preprocessing and network as one graph whose inputs are the raw event columns."""
    module = tf.Module()
    module.preprocessor = preprocessor
    module.network = network
    names = list(preprocessor.raw_signature)

    @tf.function(
        input_signature=[tf.TensorSpec([None], dtype, name=n) for n, dtype in preprocessor.raw_signature.items()]
    )
    def serve(*columns: tf.Tensor) -> dict[str, tf.Tensor]:
        features = preprocessor(dict(zip(names, columns, strict=True)))
        return {score_output: tf.squeeze(network(features, training=False), axis=-1)}

    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})


def resolve_version(base: Path, pinned: int | None) -> tuple[int, Path]:
    if not base.is_dir():
        raise Fatal(
            f"model.path {base}: no such folder; export one with "
            f"`streamer model export-demo --out {base}` or fix model.path"
        )
    versions = sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())
    if pinned is not None:
        if pinned not in versions:
            raise Fatal(f"model.version {pinned}: not in {base} (found {versions or 'none'}); fix model.version")
        return pinned, base / str(pinned)
    if not versions:
        raise Fatal(f"model.path {base}: no numbered version folders (<path>/1/, …); export a model there")
    return versions[-1], base / str(versions[-1])


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    signature: Signature
    inputs: dict[str, tf.DType]
    score_output: str
    module: object  # holds the variables; a signature alone does not keep them alive

    def warm_up(self, sizes: tuple[int, ...], example: Mapping[str, np.ndarray]) -> None:
        """Call once per padded size at start, so the first real batch pays no tracing cost."""
        for size in sizes:
            self.signature(**{n: tf.constant(np.resize(example[n], size), d) for n, d in self.inputs.items()})


def load_model(
    base: Path,
    pinned: int | None,
    signature_key: str,
    score_output: str,
    available_fields: Mapping[str, object],
) -> LoadedModel:
    version, path = resolve_version(base, pinned)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many types for a broken SavedModel
        raise Fatal(f"model {path}: cannot load a SavedModel ({type(exc).__name__}); re-export it") from exc
    signatures = dict(loaded.signatures)
    if signature_key not in signatures:
        raise Fatal(f"model {path}: no signature {signature_key!r} (has {sorted(signatures)}); fix model.signature")
    signature = signatures[signature_key]
    _, input_specs = signature.structured_input_signature
    inputs = {name: spec.dtype for name, spec in input_specs.items()}
    missing = sorted(set(inputs) - set(available_fields))
    if missing:
        raise Fatal(f"model {path}: signature needs {missing}, which the input schema lacks; fix schemas.input")
    if score_output not in signature.structured_outputs:
        raise Fatal(
            f"model {path}: no output {score_output!r} (has {sorted(signature.structured_outputs)}); "
            "fix model.score_output"
        )
    log.info("loaded model %s version %d from %s", base.name, version, path)
    return LoadedModel(base.name, version, signature, inputs, score_output, loaded)
