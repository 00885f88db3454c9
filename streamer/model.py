"""Model packages: export one, verify one, load one to serve.

A package is one version folder, TF Serving style `<base>/<version>/`:

    saved_model.pb, variables/   the graph: raw event columns in, named outputs out
    assets/                      vocabularies the graph reads
    feature_spec.yaml            the spec the preprocessing was built from
    baseline.json                training statistics for drift, and the holdout score histogram
    MANIFEST.json                sha256 and size of every other file

The manifest is checked before anything is loaded. Every way a package can be unusable becomes a
`Fatal` that names the folder, the file and the fix, before the worker joins its group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf
import yaml

from streamer.drift.histograms import BASELINE_FILE, SCORE, SCORE_EDGES, numeric_baseline
from streamer.errors import Fatal
from streamer.feature_spec import FeatureSpec
from streamer.missing import presence_input
from streamer.output_settings import OutputSelection, OutputSettings
from streamer.outputs import signature_problem
from streamer.preprocess import Preprocessor, raw_tensors
from streamer.records import Columns
from streamer.settings import ModelSettings

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
SPEC_FILE = "feature_spec.yaml"
SIGNATURE_FILE = "model.sig"  # model-signing's signature; not in the manifest, which it covers
UNSEALED = {MANIFEST, SIGNATURE_FILE}
TRANSFORM_SIGNATURE = "transform_features"

Signature = Callable[..., Mapping[str, tf.Tensor]]


def export_package(
    base: Path,
    version: int,
    preprocessor: Preprocessor,
    network: keras.Model,
    raw_columns: Mapping[str, tf.DType],
    holdout: Columns | None = None,
    score_output: str = "score",
    network_input: Literal["dense", "features"] = "dense",
) -> Path:
    """Write `<base>/<version>/` atomically: built in a temp folder, renamed into place, so a
    watcher never sees half a version. `network` takes `preprocessor.dense(...)` ("dense"), or
    the dict of transformed features ("features", for a functional model with named inputs). A
    network returning one tensor serves it flat as `score_output`; one returning a dict of named
    tensors (a recommender's ids and scores) serves them as they are."""
    target = base / str(version)
    if target.exists():
        raise Fatal(f"model {target}: version exists; versions are immutable, export a new one")
    base.mkdir(parents=True, exist_ok=True)
    names = list(raw_columns)

    def features(columns: Mapping[str, tf.Tensor]) -> Any:
        return preprocessor(columns) if network_input == "features" else preprocessor.dense(columns)

    specs = [tf.TensorSpec([None], dtype, name=n) for n, dtype in raw_columns.items()]

    @tf.function(input_signature=specs)
    def serve(*columns: tf.Tensor) -> dict[str, tf.Tensor]:
        output = network(features(dict(zip(names, columns, strict=True))), training=False)
        return dict(output) if isinstance(output, Mapping) else {score_output: tf.reshape(output, [-1])}

    @tf.function(input_signature=specs)
    def transform(*columns: tf.Tensor) -> dict[str, tf.Tensor]:
        """The preprocessing alone, as TF Transform's transform_features: for skew checks."""
        return dict(preprocessor(dict(zip(names, columns, strict=True))))

    module = tf.Module()
    module.preprocessor = preprocessor
    module.network = network
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=base))
    try:
        signatures = {"serving_default": serve, TRANSFORM_SIGNATURE: transform}
        tf.saved_model.save(module, str(staging), signatures=signatures)
        (staging / SPEC_FILE).write_text(yaml.safe_dump(preprocessor.spec.to_dict(), sort_keys=False))
        baseline = dict(preprocessor.analysis.baseline)
        if holdout is not None:  # the holdout's score histogram, for drift of the score itself
            scores = serve(*raw_tensors(holdout, raw_columns).values())[score_output].numpy()
            baseline[SCORE] = numeric_baseline(scores, edges=SCORE_EDGES).to_dict()
        (staging / BASELINE_FILE).write_text(json.dumps(baseline, indent=1))
        write_manifest(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def write_manifest(folder: Path) -> None:
    """Seal a package folder: the sha256 of every file in it, checked before every load."""
    (folder / MANIFEST).write_text(json.dumps(_digests(folder), indent=1, sort_keys=True))


def _digests(folder: Path) -> dict[str, dict[str, Any]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in UNSEALED)
    return {
        str(p.relative_to(folder)): {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
        for p in files
    }


def verify_package(path: Path) -> None:
    """Every file in the manifest is present with its sha256, and nothing unlisted was added."""
    manifest_path = path / MANIFEST
    try:
        expected = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise Fatal(f"model {path}: no {MANIFEST}; export packages with streamer.model.export_package") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise Fatal(f"model {path}: unreadable {MANIFEST} ({exc}); re-export the package") from None
    actual = _digests(path)
    missing = sorted(set(expected) - set(actual))
    if missing:
        raise Fatal(f"model {path}: missing file {missing[0]} (listed in {MANIFEST}); re-copy or re-export it")
    changed = sorted(name for name in expected if expected[name]["sha256"] != actual[name]["sha256"])
    if changed:
        raise Fatal(f"model {path}: sha256 mismatch in {changed[0]}: the file was altered; re-copy or re-export it")
    extra = sorted(set(actual) - set(expected))
    if extra:
        raise Fatal(f"model {path}: file {extra[0]} is not in {MANIFEST}: remove it or re-export the package")


def available_versions(base: Path) -> list[int]:
    """Numbered version folders, ascending; `export_package`'s dot-named staging folders are not."""
    if not base.is_dir():
        raise Fatal(
            f"model.path {base}: no such folder; export one with "
            f"`streamer model export-demo --config … --out {base}` or fix model.path"
        )
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def choose_versions(
    settings: ModelSettings, available: list[int], refused: Collection[int] = ()
) -> tuple[int | None, int | None]:
    """(primary, candidate) among the versions present and not refused; a primary of None: none is.

    A function of the config and the folder alone, never of what a worker happens to serve, so
    every worker of a group and every restart arrive at the same pair (the rule and why:
    streamer/lifecycle.py). A refused version counts as absent.
    """
    usable = [v for v in available if v not in refused]
    allowed = [v for v in usable if settings.policy != "list" or v in settings.versions]
    primary: int | None
    candidate: int | None
    if settings.policy == "pinned":
        primary, candidate = settings.version, settings.candidate if settings.rolling_out else None
    elif not settings.rolling_out:
        primary, candidate = (allowed[-1] if allowed else None), None
    else:
        above = settings.primary or 0
        candidate = settings.candidate or next((v for v in reversed(allowed) if v > above), None)
        # the version the policy would serve without the candidate; alone, a version is the primary
        primary = settings.primary or next((v for v in reversed(allowed) if candidate and v < candidate), candidate)
    return (primary if primary in usable else None), (
        candidate if candidate in usable and candidate != primary else None
    )


def initial_version(settings: ModelSettings) -> int:
    """The primary to start with, or a `Fatal` that says why there is none."""
    found = available_versions(settings.path)
    version, _ = choose_versions(settings, found)
    if version is None:
        if settings.policy == "pinned":
            wanted = f"version {settings.version}"
        elif settings.rolling_out and settings.primary is not None:
            wanted = f"version {settings.primary} (model.primary)"
        else:
            wanted = "any version" if settings.policy == "latest" else f"one of {settings.versions}"
        raise Fatal(
            f"model.path {settings.path}: policy {settings.policy} wants {wanted}, found "
            f"{found or 'no numbered version folders'}; export a model there or fix model.policy / model.version "
            "/ model.primary"
        )
    return version


def verify_signature(path: Path, public_key: Path) -> None:
    """The package's model-signing signature (SIGNATURE_FILE, elliptic-curve key) covers every file."""
    import model_signing  # only for signed deployments: it pulls in sigstore

    signature = path / SIGNATURE_FILE
    if not signature.is_file():
        raise Fatal(
            f"model {path}: no {SIGNATURE_FILE} but model.public_key is set; sign it with `streamer model sign`"
        )
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE])
    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    try:
        config.set_hashing_config(hashing).verify(path, signature)
    except Exception as exc:  # model-signing raises ValueError and its own types on a mismatch
        raise Fatal(
            f"model {path}: signature check failed ({exc}); re-sign the package or fix model.public_key"
        ) from exc


def sign_package(path: Path, private_key: Path) -> Path:
    """Write SIGNATURE_FILE into a package with model-signing: an elliptic-curve private key (PEM)."""
    import model_signing

    hashing = model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE])
    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key)
    config.set_hashing_config(hashing).sign(path, path / SIGNATURE_FILE)
    return path / SIGNATURE_FILE


@dataclass(frozen=True)
class PackedCall:
    """The signature behind one input per dtype: the columns of a dtype go in as one [N, k]
    tensor and are split back into the named inputs inside the graph, which then calls the
    signature. Each input costs Python dispatch per call (a constant, then argument binding and
    casts): with 16 named inputs, 6 packed ones made a batch's model call 25-28% cheaper in CPU
    (load/batch_cost.py, BENCHMARKS.md), with the same scores bit for bit. It is called as a
    concrete function: a `tf.function` call would spend the saving again on its dispatch."""

    groups: tuple[tuple[tf.DType, tuple[str, ...]], ...]  # per dtype, the inputs in column order
    call: Any  # the concrete function

    @classmethod
    def of(cls, signature: Signature, inputs: Mapping[str, tf.DType]) -> PackedCall:
        by_dtype: dict[tf.DType, list[str]] = {}
        for name, dtype in inputs.items():
            by_dtype.setdefault(dtype, []).append(name)
        groups = tuple((dtype, tuple(names)) for dtype, names in by_dtype.items())

        @tf.function(input_signature=[tf.TensorSpec([None, len(names)], dtype) for dtype, names in groups])
        def call(*stacked: tf.Tensor) -> Mapping[str, tf.Tensor]:
            named: dict[str, tf.Tensor] = {}
            for (_, names), block in zip(groups, stacked, strict=True):
                named |= dict(zip(names, tf.unstack(block, len(names), axis=1), strict=True))
            return signature(**named)

        return cls(groups, call.get_concrete_function())

    def __call__(self, tensors: list[tf.Tensor]) -> Mapping[str, tf.Tensor]:
        """The concrete function called with its flat inputs. Its public call first binds the
        arguments to the structured signature (matching, then a subtype check per tensor): 0.15
        to 0.35 ms a call, a fifth of a small batch's model call, for tensors `tensors` built to
        that very signature. `_call_flat` is what the public call ends in (TensorFlow is pinned,
        and test_pipeline compares the scores with the signature's own call)."""
        return self.call._call_flat(tensors, self.call.captured_inputs)

    def tensors(self, columns: Mapping[str, np.ndarray], size: int) -> list[tf.Tensor]:
        """One tensor per dtype, padded to `size` rows by repeating the last row, so padding
        holds valid values."""
        stacked = []
        for dtype, names in self.groups:
            block = np.stack([columns[name] for name in names], axis=1)
            if size > len(block):
                block = np.concatenate([block, np.repeat(block[-1:], size - len(block), axis=0)])
            stacked.append(tf.constant(block, dtype=dtype))
        return stacked


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    signature: Signature  # raw, named inputs: the package's own interface
    packed: PackedCall  # the same graph, one input per dtype: what the worker calls
    inputs: dict[str, tf.DType]
    selection: tuple[OutputSelection, ...]  # the outputs the record takes (outputs.values), checked
    outputs: dict[str, tf.TensorSpec]  # every output of the signature: what the scored schema derives from
    spec: FeatureSpec
    baseline: dict[str, Any]
    module: object  # holds the variables; a signature alone does not keep them alive
    device: str = "/CPU:0"

    def run(self, columns: Mapping[str, np.ndarray], size: int) -> Mapping[str, tf.Tensor]:
        """One call on the chosen device, `columns` (one numpy array per input) padded to `size`
        rows; TensorFlow keeps string lookups on the CPU."""
        tensors = self.packed.tensors(columns, size)
        with tf.device(self.device):
            return self.packed(tensors)

    def neutral_row(self) -> dict[str, np.ndarray]:
        """One row of every input: zeros, empty strings, False; what warm-ups and profiles feed."""
        neutral = {tf.string: "", tf.bool: False}
        return {n: np.array([neutral.get(d, 0)], dtype=object if d == tf.string else d.as_numpy_dtype)
                for n, d in self.inputs.items()}  # fmt: skip

    def warm_up(self, sizes: tuple[int, ...]) -> None:
        """Call once per padded size before serving, so the first real batch pays no tracing cost."""
        row = self.neutral_row()
        for size in sizes:
            self.run(row, size)


def load_package(
    settings: ModelSettings,
    version: int,
    available_fields: Mapping[str, object],
    device: str = "/CPU:0",
    selection: tuple[OutputSelection, ...] = OutputSettings().values,
) -> LoadedModel:
    """Verify, load and check one version against the input schema (plus its entity features)
    and the outputs the scored record takes (`outputs.values`)."""
    base, signature_key = settings.path, settings.signature
    path = base / str(version)
    verify_package(path)
    if settings.public_key is not None:
        verify_signature(path, settings.public_key)
    spec = FeatureSpec.load(path / SPEC_FILE)
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
    entity_names = {f.name for f in spec.entity_features()}
    presence = {presence_input(name) for name in available_fields}  # nulls of a field some feature fills
    missing = sorted(set(inputs) - set(available_fields) - entity_names - presence)
    if missing:
        raise Fatal(f"model {path}: signature needs {missing}, which the input schema lacks; fix schemas.input")
    outputs = dict(signature.structured_outputs)
    problem = signature_problem(selection, outputs)
    if problem is not None:
        raise Fatal(f"model {path}: signature {signature_key}: {problem}")
    call: Signature = tf.function(signature, jit_compile=True) if settings.jit_compile else signature
    baseline = json.loads((path / BASELINE_FILE).read_text())
    log.info("loaded model %s version %d from %s on %s", base.name, version, path, device)
    packed = PackedCall.of(call, inputs)
    return LoadedModel(base.name, version, call, packed, inputs, selection, outputs, spec, baseline, loaded, device)


def load_model(
    settings: ModelSettings,
    available_fields: Mapping[str, object],
    selection: tuple[OutputSelection, ...] = OutputSettings().values,
    device: str = "/CPU:0",
) -> LoadedModel:
    """The version the policy picks, on the CPU unless told: for offline scoring and tools."""
    return load_package(settings, initial_version(settings), available_fields, device, selection)
