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
from lib.study.config import METHODS, ExperimentConfig, check_fields, check_source_axis

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


# A params file is a few hundred YAML nodes; these bounds refuse a hostile one (an alias
# bomb, a value nested thousands deep) before anything is built from it.
MAX_NODES = 100_000  # nodes with every alias expanded
MAX_DEPTH = 100  # nesting of mappings and sequences


class _Refused(Exception):
    """A params file that is valid YAML but not one this project reads."""


class _ParamsLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys, deep nesting and aliases expanding past
    MAX_NODES nodes (counted on the node graph, before any value is built)."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels at line {mark.line + 1}")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_size(node)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                name = self.construct_object(key)
                if name in seen:
                    raise _Refused(
                        f"duplicate key {_shown(name)} at lines {seen[name]} and "
                        f"{key.start_mark.line + 1} (YAML would keep the last silently)"
                    )
                seen[name] = key.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _check_size(root: Any) -> None:
    """Nodes of `root` with every alias expanded (shared nodes counted once per use), without
    expanding anything: refused past MAX_NODES, or when an alias refers to itself."""
    size: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, done = stack.pop()
        children = (
            [n for pair in node.value for n in (pair if isinstance(pair, tuple) else (pair,))]
            if isinstance(node, yaml.CollectionNode)
            else []
        )
        if done:
            open_nodes.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if size[id(node)] > MAX_NODES:
                raise _Refused(
                    f"aliases expand past {MAX_NODES} values (line {node.start_mark.line + 1}); "
                    "a params file needs a few hundred"
                )
            continue
        if id(node) in size:
            continue
        if id(node) in open_nodes:
            raise _Refused(f"an alias refers to itself at line {node.start_mark.line + 1}")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _shown(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: an error message never prints a huge value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# ---------------------------------------------------------------- params files


def load_yaml(path: str | Path) -> Any:
    """A YAML file of this project (params, recipes) read safely: duplicate keys, deep nesting
    and alias bombs refused; any problem is one ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        return yaml.load(path.read_text(), Loader=_ParamsLoader)  # noqa: S506 - safe
    except _Refused as error:
        raise ValueError(f"{path}: refused: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text file ({error})") from None


def load_params(path: str | Path) -> dict[str, Any]:
    """The params file as a mapping; any problem with it is one ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} not found")
    params = load_yaml(path)
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
        tickets = params.get("tickets")
        if tickets is not None and not isinstance(tickets, str):
            raise ValueError(
                f"tickets must be the folder of a shipped release (a string, e.g. "
                f"tickets/glyphs-v2), got {_shown(tickets)} ({type(tickets).__name__})"
            )
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
        raise ValueError(f"{where} must be a mapping of parameter: value(s), got {_shown(section)}")
    if "study" in section and "study" in allowed:  # runs of this file go to its own study
        raise ValueError(
            f"{where}: 'study' is not a parameter here; the file's top-level 'study' names "
            "the one folder (and lock) of all its runs"
        )
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
    if not grids or params["grid"] is None:
        raise ValueError(
            f"grid must be a mapping or a non-empty list of mappings of parameter: value(s), "
            f"got {_shown(params['grid'])}"
        )
    configs: dict[str, ExperimentConfig] = {}
    for i, grid in enumerate(grids):
        if not isinstance(grid, dict):
            raise ValueError(
                f"grid entry {i} must be a mapping of parameter: value(s), got {_shown(grid)}"
            )
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
    check_source_axis(list(configs.values()))
    return list(configs.values())
