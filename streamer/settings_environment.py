"""`STREAMER_*` environment variables as config values, read by the type of the field each sets.

The rules are the config tree's (see `streamer.settings`): text taken verbatim for strings,
secrets, paths and numbers; YAML only for lists, mappings and sections; librdkafka and Schema
Registry client properties dotted from their upper-case, underscored names.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from streamer.errors import Fatal

ENV_PREFIX = "STREAMER_"
TOP_LEVEL_VALUES = {"worker_id"}  # the only keys outside a section: STREAMER_WORKER_ID


def environment_overrides(root: type[BaseModel], environ: Mapping[str, str]) -> dict[str, Any]:
    """The `STREAMER_*` variables of `environ` as a tree of `root`'s sections, to merge over the YAML."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if len(path) == 1 and path[0] not in TOP_LEVEL_VALUES:
            continue  # STREAMER_LOG_LEVEL and friends are not config keys
        if len(path) == 3 and (path[0] == "kafka" or path[:2] == ["schemas", "registry_config"]):
            path[2] = path[2].replace("_", ".")  # client properties are dotted
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _env_value(root, name, ".".join(path), raw)
    return tree


def _env_value(root: type[BaseModel], name: str, key: str, raw: str) -> Any:
    """`raw` as the field at `key` reads it: verbatim, unless the field holds a list, a mapping
    or a section. A YAML error names the variable and the position, never the text."""
    annotation = _annotation_at(root, key.split("."))
    if not _structured(annotation):
        return None if raw == "" and _optional(annotation) else raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at column {mark.column + 1}" if mark is not None else ""
        raise Fatal(
            f"environment {name}: {key} takes a YAML list or mapping, and this is not valid YAML{where}"
        ) from None


def _annotation_at(root: type[BaseModel], path: list[str]) -> Any:
    """The type of the Settings field that `path` names; None past the fields (librdkafka
    properties, unknown keys), which are taken verbatim."""
    model: Any = root
    annotation: Any = None
    for part in path:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return None
        annotation = fields[part].annotation
        model = next((arg for arg in _members(annotation) if isinstance(arg, type)), None)
    return annotation


def _members(annotation: Any) -> tuple[Any, ...]:
    """`A | B | None` → (A, B, NoneType); any other annotation → (annotation,)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _optional(annotation: Any) -> bool:
    return type(None) in _members(annotation) and str not in _members(annotation)


def _structured(annotation: Any) -> bool:
    return any(
        get_origin(arg) in (list, tuple, dict) or (isinstance(arg, type) and issubclass(arg, (BaseModel, dict, list)))
        for arg in _members(annotation)
    )


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`, mapping by mapping: a variable sets one key, not its whole section."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
