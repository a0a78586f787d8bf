"""A params file (params/*.yaml) and the grid of runs it describes: read, check, expand.

    from lib.study.grid import expand_grid, load_params
    configs = expand_grid(load_params("params/mini.yaml"))   # one ExperimentConfig per run
"""

from __future__ import annotations

import itertools
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from lib.core import paths
from lib.study.config import METHODS, ExperimentConfig, check_fields

TOP_LEVEL_KEYS = (
    "study",
    "description",
    "pretrain",
    "tickets",
    "defaults",
    "method_defaults",
    "grid",
    "report",
)


# ---------------------------------------------------------------- params files


def load_params(path: str | Path) -> dict[str, Any]:
    """The params file as a mapping; any problem with it is one ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text file ({error})") from None
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ValueError(
            f"{path}: must be a mapping of {', '.join(TOP_LEVEL_KEYS)}, "
            f"got a {type(params).__name__}"
        )
    unknown = sorted(map(repr, set(params) - set(TOP_LEVEL_KEYS)))
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {', '.join(unknown)}; choose from: {', '.join(TOP_LEVEL_KEYS)}"
        )
    if "study" not in params or "grid" not in params:
        raise ValueError(f"{path}: needs 'study' and 'grid'")
    try:
        paths.check_name(params["study"])  # a folder under the outputs root, never a path
        if not isinstance(params.get("report", True), bool):
            raise ValueError(f"report must be true or false, got {params['report']!r}")
        if not isinstance(params.get("description", ""), str):
            raise ValueError(f"description must be a string, got {params['description']!r}")
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return params


def _section(where: str, section: Any, allowed: set[str]) -> dict[str, Any]:
    """A mapping of the params file whose keys must be `allowed` (named in the error)."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError(f"{where} must be a mapping of parameter: value(s), got {section!r}")
    unknown = sorted(map(repr, set(section) - allowed))
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter(s) {', '.join(unknown)}; "
            f"choose from: {', '.join(sorted(allowed))}"
        )
    return section


def check_pretrain(params: dict[str, Any]) -> None:
    """The `pretrain:` section: known parameters of the right types, out_dir under the
    outputs root; checked before anything runs."""
    from lib.models.pretrain import SourceConfig

    names = {f.name for f in fields(SourceConfig)}
    settings = _section("pretrain", params.get("pretrain"), names)
    if not settings:
        return
    try:
        check_fields(SourceConfig, settings)  # SourceConfig itself compares before it checks
        cfg = SourceConfig(**settings)
        paths.confined(cfg.output_path, "out_dir")
    except ValueError as error:
        raise ValueError(f"pretrain: {error}") from None


def expand_grid(params: dict[str, Any]) -> list[ExperimentConfig]:
    """Every run of the study, validated; duplicates (same run key) appear once."""
    known = {f.name for f in fields(ExperimentConfig)}
    defaults = {**_section("defaults", params.get("defaults"), known), "study": params["study"]}
    # e.g. {lp: {epochs: 50}, vp: {epochs: 4}}: LP on cached features affords more epochs
    per_method = _section("method_defaults", params.get("method_defaults"), set(METHODS))
    for method, section in per_method.items():
        _section(f"method_defaults.{method}", section, known)
    grids = params["grid"] if isinstance(params["grid"], list) else [params["grid"]]
    configs: dict[str, ExperimentConfig] = {}
    for i, grid in enumerate(grids):
        axes = {
            k: v if isinstance(v, list) else [v]
            for k, v in _section(f"grid entry {i}", grid, known).items()
        }
        empty = [k for k, v in axes.items() if not v]
        if empty:
            raise ValueError(f"grid entry {i}: no values for {', '.join(map(repr, empty))}")
        for values in itertools.product(*axes.values()):
            run = dict(zip(axes, values, strict=True))
            method = run.get("method", defaults.get("method", "vp"))
            try:
                cfg = ExperimentConfig.from_dict(
                    {**defaults, **(per_method.get(method) or {}), **run}
                )
            except ValueError as error:
                raise ValueError(f"grid entry {i}: {error}") from None
            configs.setdefault(cfg.run_key, cfg)
    return list(configs.values())
