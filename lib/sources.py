"""The kinds of source network a run transfers from, as one registry: which files each needs,
how it loads, how it checks its config fields and names itself in run keys.

    from lib.sources import source_kind
    kind = source_kind(cfg)            # SOURCES[cfg.network]
    kind.files(cfg)                    # checkpoint files it needs (none for torchvision weights)
    model = kind.load(cfg, calibration)

This is the only module that branches on `network`; everything else asks the kind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib.backbone import (
    create_backbone,
    freeze,
    imagenet_classes,
    load_lottery_ticket,
    load_sparse_checkpoint,
    ticket_paths,
    torchvision_weights_file,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lib.config import ExperimentConfig


def _torchvision(cfg: ExperimentConfig) -> bool:
    """Dense from torchvision weights (a name such as IMAGENET1K_V2, or a file path)."""
    return bool(cfg.weights)


def _ticket_files(kind: str) -> Callable[[ExperimentConfig], list[Path]]:
    return lambda cfg: list(ticket_paths(cfg.pretrained_path, cfg.arch, cfg.sparsity, kind))


def _dense_files(cfg: ExperimentConfig) -> list[Path]:
    if _torchvision(cfg):
        return [] if not Path(cfg.weights).suffix else [Path(cfg.weights)]
    return _ticket_files("dyn4")(cfg)


def _dense_missing(cfg: ExperimentConfig) -> list[str]:
    """torchvision weights not in $TORCH_HOME's cache (they download where there is a network)."""
    if _torchvision(cfg) and not Path(cfg.weights).suffix:
        _, path = torchvision_weights_file(cfg.arch, cfg.weights)
        if not path.is_file():
            return [f"{path} (torchvision {cfg.arch} {cfg.weights})"]
    return []


def _load_ticket(kind: str) -> Callable[..., nn.Module]:
    def load(cfg: ExperimentConfig, calibration: list[torch.Tensor] | None = None) -> nn.Module:
        return load_lottery_ticket(
            cfg.arch, *ticket_paths(cfg.pretrained_path, cfg.arch, cfg.sparsity, kind)
        )

    return load


def _load_dense(cfg: ExperimentConfig, calibration: list[torch.Tensor] | None = None) -> nn.Module:
    if _torchvision(cfg):
        return create_backbone(cfg.arch, weights=cfg.weights)
    return _load_ticket("dyn4")(cfg)


def _load_quantized(
    cfg: ExperimentConfig, calibration: list[torch.Tensor] | None = None
) -> nn.Module:
    from lib.quant import quantize_backbone

    model = freeze(_load_ticket("dyn4")(cfg))
    return quantize_backbone(model, cfg.weight_bits, cfg.act_bits, calibration)


def _load_sparsezoo(
    cfg: ExperimentConfig, calibration: list[torch.Tensor] | None = None
) -> nn.Module:
    return load_sparse_checkpoint(cfg.arch, cfg.checkpoint)


def _check_dense(cfg: ExperimentConfig) -> None:
    if cfg.sparsity != 0:
        raise ValueError(f"network 'dense' has sparsity state 0, got {cfg.sparsity}")


def _check_quantized(cfg: ExperimentConfig) -> None:
    if max(cfg.weight_bits, cfg.act_bits) == 32 and cfg.weight_bits == cfg.act_bits:
        raise ValueError("network 'quantized' needs weight_bits or act_bits below 32")


def _check_sparsezoo(cfg: ExperimentConfig) -> None:
    if not cfg.checkpoint:
        raise ValueError("network 'sparsezoo' needs checkpoint=<path of the sparse file>")


def _no_check(cfg: ExperimentConfig) -> None:
    return None


@dataclass(frozen=True)
class SourceKind:
    """One kind of source network (a value of ExperimentConfig.network)."""

    name: str
    files: Callable[[ExperimentConfig], list[Path]]  # checkpoint files the config needs
    load: Callable[..., nn.Module]  # (cfg, calibration batches or None) -> source classifier
    check: Callable[[ExperimentConfig], None] = _no_check  # fields this kind constrains
    key_name: str = ""  # its name in run keys ("" = the kind's name)
    stated: bool = False  # run keys carry the sparsity state
    quantized: bool = False  # needs calibration batches; BN stays unfolded
    own_classes: bool = True  # its pretrained_dir may name the source classes (classes.json)
    missing_extra: Callable[[ExperimentConfig], list[str]] = lambda cfg: []

    def missing(self, cfg: ExperimentConfig) -> list[str]:
        """What the config needs and this machine lacks."""
        return [str(p) for p in self.files(cfg) if not p.is_file()] + self.missing_extra(cfg)

    def run_name(self, cfg: ExperimentConfig) -> str:
        """The network part of a run key: dense, lt8, random_pruned12, quantized0w4a4, ..."""
        name = self.key_name or self.name
        if self.stated:
            name += str(cfg.sparsity)
        if self.quantized:
            name += f"w{cfg.weight_bits}a{cfg.act_bits}"
        return name

    def classes(self, cfg: ExperimentConfig, num_source: int) -> list[str] | None:
        """Names of the source classes, when known: classes.json beside the tickets, or
        ImageNet's for a 1000-class source."""
        path = cfg.pretrained_path / "classes.json"
        if self.own_classes and not _torchvision(cfg) and path.is_file():
            return json.loads(path.read_text())
        return list(imagenet_classes()) if num_source == 1000 else None


SOURCES: dict[str, SourceKind] = {
    kind.name: kind
    for kind in (
        SourceKind("dense", _dense_files, _load_dense, _check_dense, missing_extra=_dense_missing),
        SourceKind(
            "ticket", _ticket_files("dyn4"), _load_ticket("dyn4"), key_name="lt", stated=True
        ),
        SourceKind("random_pruned", _ticket_files("random"), _load_ticket("random"), stated=True),
        SourceKind(
            "quantized",
            _ticket_files("dyn4"),
            _load_quantized,
            _check_quantized,
            stated=True,
            quantized=True,
        ),
        SourceKind(
            "sparsezoo",
            lambda cfg: [Path(cfg.checkpoint)],
            _load_sparsezoo,
            _check_sparsezoo,
            own_classes=False,
        ),
    )
}
NETWORKS = tuple(SOURCES)


def paper_source(
    network: str, arch: str, weights: str, sparsity: int | None, default_state: int
) -> tuple[str, int]:
    """(weights, sparsity) as the paper's scripts choose them for `network` (a name of
    SOURCES, aliases resolved): a dense torchvision arch gets the paper's ImageNet weights
    (V2 for resnet50); the sparsity state defaults to `default_state`, 0 for dense."""
    from lib.backbone import TORCHVISION_ARCHS, imagenet_weights

    dense = SOURCES.get(network) is SOURCES["dense"]
    if dense and not weights and arch in TORCHVISION_ARCHS:
        weights = imagenet_weights(arch)
    if sparsity is None:
        sparsity = 0 if dense else default_state
    return weights, sparsity


def source_kind(cfg: ExperimentConfig | Any) -> SourceKind:
    """The registered kind of `cfg.network` (ExperimentConfig validates the name)."""
    try:
        return SOURCES[cfg.network]
    except KeyError:
        raise ValueError(
            f"unknown network {cfg.network!r}; choose one of: {', '.join(NETWORKS)}"
        ) from None
