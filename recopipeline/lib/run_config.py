"""Run configuration from a YAML file, in the shape of the Dagster launchpad's (`resources.tuning.config`, …).

`recopipeline materialize --config FILE` reads one; the schedules and the file sensor read the file that
`RECOPIPELINE_RUN_CONFIG` names at each evaluation. The tuning values are checked here, with one-line errors,
before any run starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import yaml

from recopipeline.lib import settings
from recopipeline.lib.tuning import Tuning

_NUMBER = (int, float)
_TYPES = {"float": (_NUMBER, "a number"), "int": (int, "an integer"), "str": (str, "a string"),
          "bool": (bool, "true or false")}


def load_run_config(path: str | Path) -> dict:
    """The run config in a YAML file; raises ValueError with one line naming the file and the cause."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"run config {path}: {error.strerror or error}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "cannot be parsed"
        raise ValueError(f"run config {path} is not valid YAML{where}: {problem}") from None
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ValueError(f"run config {path} must be a mapping like the launchpad's (resources: tuning: config: …)")
    try:
        check_tuning(tuning_values(config))
    except ValueError as error:
        raise ValueError(f"run config {path}: {error}") from None
    return config


def configured_run_config() -> dict:
    """The run config in the file RECOPIPELINE_RUN_CONFIG names, read now ({} when it is unset)."""
    path = settings.run_config_file()
    return load_run_config(path) if path else {}


def tuning_values(config: Mapping) -> dict:
    """`resources.tuning.config` of a run config ({} when absent)."""
    node: object = config
    for key in ("resources", "tuning", "config"):
        if node is None:
            return {}
        if not isinstance(node, Mapping):
            raise ValueError(f"{key!r} must be inside a mapping (resources: tuning: config: …)")
        node = node.get(key)
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise ValueError("resources.tuning.config must map tuning names to values")
    return dict(node)


def check_tuning(values: Mapping) -> Tuning:
    """The tuning with these values over the defaults: unknown names, wrong types and broken rules raise."""
    known = {f.name: f for f in fields(Tuning)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown tuning value {', '.join(unknown)} (see docs/configuration.md)")
    for name, value in values.items():
        types, wanted = _TYPES[known[name].type]
        if isinstance(value, bool) is not (known[name].type == "bool") or not isinstance(value, types):
            raise ValueError(f"tuning value {name} must be {wanted}, got {value!r}")
    return Tuning.from_dict({**Tuning().as_dict(), **values})


def merge(base: Mapping, override: Mapping) -> dict:
    """`base` with `override` laid over it, mapping by mapping."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
