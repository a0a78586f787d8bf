"""Validation before compute: what the sweep and the CLI ask of the run side, and all they ask.

    from lib.study.checks import validate
    validate(configs)    # missing checkpoint files, too many shots: an error before any training

Also the transfer notebook's parameters (notebook_parameters <-> configs_from_parameters),
which the sweep and the CLI hand to papermill and the notebook turns back into configs.

Everything here reads file names and dataset labels only; no model is built, so the process
that plans and launches notebooks never loads the training stack (lib.adapt.train).
"""

from __future__ import annotations

import ast
from dataclasses import fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from lib.datasets.registry import dataset_labels, get_dataset, get_spec
from lib.datasets.sampling import Splits, draw_splits, stratified_subset
from lib.models.archs import family
from lib.models.sources import source_kind
from lib.study.config import ExperimentConfig, check_source_axis


def source_files(cfg: ExperimentConfig) -> list[Path]:
    """Checkpoint files the config needs (none for torchvision weights)."""
    return source_kind(cfg).files(cfg)


def missing_files(cfg: ExperimentConfig) -> list[str]:
    """What the config needs and this machine lacks: checkpoint files, and torchvision weights
    not in $TORCH_HOME's cache (those download on first use where there is a network)."""
    return source_kind(cfg).missing(cfg)


def check_files(cfg: ExperimentConfig) -> None:
    """Fail before any compute when a checkpoint the config needs is missing."""
    kind = source_kind(cfg)
    missing = [p for p in kind.required(cfg) if not p.is_file()]
    if missing and family(cfg.arch) != "cnn":  # CLIP / ViT: one named file
        raise FileNotFoundError(
            f"{cfg.arch} {cfg.network}: missing {kind.file_role(cfg)} "
            f"{', '.join(map(str, missing))}"
        )
    root = cfg.pretrained_path
    if missing and (root / "packed.npz").is_file() and (root.parent / "manifest.json").is_file():
        from lib.study.tickets import verify  # a shipped release: rebuild its packed .pth files

        verify(root.parent)
        missing = [p for p in missing if not p.is_file()]
    if missing:
        found = sorted(p.name for p in root.glob("*_checkpoint.pth")) if root.is_dir() else []
        raise FileNotFoundError(
            f"{cfg.network} sparsity state {cfg.sparsity} of {cfg.arch}: missing "
            f"{', '.join(map(str, missing))}; checkpoints in {root}: "
            f"{', '.join(found) or 'none'} (run notebooks/pretrain_source.ipynb or set "
            f"pretrained_dir)"
        )


@lru_cache(maxsize=32)
def _pool_labels(dataset: str, root: str, train_pool: int, partition: str) -> torch.Tensor:
    """Labels of the training pool lib.study.experiment.load_data builds (only labels are kept)."""
    size = get_spec(dataset).image_size or 224  # labels do not depend on it; some sets need one
    pool = get_dataset(dataset, "train", root, image_size=size, partition=partition)
    labels = dataset_labels(pool)
    return labels[stratified_subset(labels, train_pool)]


def make_splits(cfg: ExperimentConfig, labels: torch.Tensor) -> Splits:
    """The run's training sample and validation set (lib.datasets.sampling.draw_splits)."""
    return draw_splits(
        labels,
        cfg.n_shot,
        cfg.seed,
        policy=cfg.n_shot_policy,
        selection=cfg.selection,
        val_shots=cfg.val_shots,
        val_fraction=cfg.val_fraction,
        max_val=cfg.max_val,
        max_train=cfg.max_train,
    )


def validate(configs: list[ExperimentConfig], sources: bool = True) -> None:
    """Everything about the configs that can fail, checked before any data or training:
    checkpoint files (when `sources`) and n-shots against the class sizes (labels only)."""
    checked = set()
    for cfg in configs:
        if sources:
            check_files(cfg)
        # the splits depend on these alone: a paper grid has few distinct ones
        key = (cfg.dataset, str(cfg.root), cfg.train_pool, cfg.val_fraction, cfg.max_val)
        key += (cfg.max_train, cfg.n_shot, cfg.seed, cfg.split, cfg.n_shot_policy)
        key += (cfg.selection, cfg.val_shots)
        if key in checked:
            continue
        checked.add(key)
        try:
            make_splits(cfg, _pool_labels(cfg.dataset, str(cfg.root), cfg.train_pool, cfg.split))
        except ValueError as error:
            raise ValueError(f"{cfg.dataset} (seed {cfg.seed}): {error}") from None


# ---------------------------------------------------------------- the transfer notebook

# The transfer notebook's parameters cell: the config fields, with n-shots, seeds and source
# models as lists (one execution runs their product).
LIST_PARAMETERS = {"n_shot": "n_shots", "seed": "seeds", "source_seed": "source_seeds"}
NOTEBOOK_PARAMETERS = frozenset(
    {f.name for f in fields(ExperimentConfig)} - set(LIST_PARAMETERS)
    | set(LIST_PARAMETERS.values())
    | {"threads"}
)


def injected_parameters(namespace: dict[str, Any]) -> list[str]:
    """Names papermill injected into this kernel (its "# Parameters" cell); [] when none.

    The kernel's input history (`In`) holds the injected cell as it was executed.
    """
    for source in reversed(namespace.get("In") or []):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                body = ast.parse(source).body
            except SyntaxError:
                return []
            return [
                target.id
                for node in body
                if isinstance(node, ast.Assign | ast.AnnAssign)
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Name)
            ]
    return []


def check_injected(namespace: dict[str, Any], allowed: frozenset[str]) -> None:
    """A parameter the notebook does not have (`-p datset x`) is an error, not ignored."""
    unknown = sorted(
        name
        for name in injected_parameters(namespace)
        if name not in allowed and not name.startswith("PAPERMILL_")  # --inject-paths
    )
    if unknown:
        raise ValueError(
            f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}; "
            f"choose from: {', '.join(sorted(allowed))}"
        )


def notebook_parameters(configs: list[ExperimentConfig]) -> dict[str, Any]:
    """The transfer notebook's parameters for `configs` (equal but for the list fields, and
    their product): what `configs_from_parameters` turns back into the same configs."""
    params = {k: v for k, v in configs[0].to_dict().items() if k not in LIST_PARAMETERS}
    for field_name, name in LIST_PARAMETERS.items():
        params[name] = sorted({getattr(c, field_name) for c in configs})
    return params


def configs_from_parameters(namespace: dict[str, Any]) -> list[ExperimentConfig]:
    """The configs of one transfer-notebook execution: its parameters over source models x
    n-shots x seeds.

    `namespace` is the notebook's globals(); every ExperimentConfig field found there is used,
    and a name papermill injected that is not a parameter is an error.
    """
    check_injected(namespace, NOTEBOOK_PARAMETERS)
    names = NOTEBOOK_PARAMETERS - set(LIST_PARAMETERS.values()) - {"threads"}
    base = ExperimentConfig.from_dict({k: namespace[k] for k in names if k in namespace})
    lists = {}
    for field_name, name in LIST_PARAMETERS.items():
        values = namespace.get(name, [getattr(base, field_name)])
        if not isinstance(values, list) or not values:
            raise ValueError(f"{name} must be a non-empty list, got {values!r}")
        lists[field_name] = values
    configs = [
        replace(base, source_seed=src, n_shot=n, seed=s)
        for src in lists["source_seed"]
        for n in lists["n_shot"]
        for s in lists["seed"]
    ]
    check_source_axis(configs)  # source seeds that would all load the same files
    validate(configs)  # missing tickets and too many shots fail here, not mid-notebook
    return configs
