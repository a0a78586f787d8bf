"""The kinds of source network a run transfers from, as one registry: which files each needs,
how it loads, how it checks its config fields and names itself in run keys.

    from lib.models.sources import source_kind
    kind = source_kind(cfg)            # SOURCES[cfg.network]
    kind.files(cfg)                    # checkpoint files it needs (none for torchvision weights)
    model = kind.load(cfg, calibration)

This is the only module that branches on `network`; everything else asks the kind. A kind
also serves the CLIP (lib.models.clip, open_clip) and ViT (lib.models.vit, timm) archs it is
available for (`families`): their files, loading and source-class names are dispatched here
by arch family.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lib.models.archs import family
from lib.models.backbone import (
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


class SourceSpec(Protocol):
    """The fields of a run's config (lib.study.config.ExperimentConfig) a source kind reads; typed
    structurally so that the models never import the study."""

    network: str
    arch: str
    sparsity: int
    weights: str
    checkpoint: str
    prune_sparsity: float
    weight_bits: int
    act_bits: int

    @property
    def pretrained_path(self) -> Path: ...  # derived from pretrained_dir


def _torchvision(cfg: SourceSpec) -> bool:
    """Dense from torchvision weights (a name such as IMAGENET1K_V2, or a file path)."""
    return bool(cfg.weights)


def _ticket_files(kind: str) -> Callable[[SourceSpec], list[Path]]:
    return lambda cfg: list(ticket_paths(cfg.pretrained_path, cfg.arch, cfg.sparsity, kind))


def _dense_files(cfg: SourceSpec) -> list[Path]:
    if _torchvision(cfg):
        return [] if not Path(cfg.weights).suffix else [Path(cfg.weights)]
    return _ticket_files("dyn4")(cfg)


def _dense_missing(cfg: SourceSpec) -> list[str]:
    """torchvision weights not in $TORCH_HOME's cache (they download where there is a network)."""
    if _torchvision(cfg) and not Path(cfg.weights).suffix:
        _, path = torchvision_weights_file(cfg.arch, cfg.weights)
        if not path.is_file():
            return [f"{path} (torchvision {cfg.arch} {cfg.weights})"]
    return []


def _load_ticket(kind: str) -> Callable[..., nn.Module]:
    def load(cfg: SourceSpec, calibration: list[torch.Tensor] | None = None) -> nn.Module:
        return load_lottery_ticket(
            cfg.arch, *ticket_paths(cfg.pretrained_path, cfg.arch, cfg.sparsity, kind)
        )

    return load


def _load_dense(cfg: SourceSpec, calibration: list[torch.Tensor] | None = None) -> nn.Module:
    if _torchvision(cfg):
        return create_backbone(cfg.arch, weights=cfg.weights)
    return _load_ticket("dyn4")(cfg)


def _load_quantized(cfg: SourceSpec, calibration: list[torch.Tensor] | None = None) -> nn.Module:
    from lib.models.quant import quantize_backbone

    model = freeze(_load_ticket("dyn4")(cfg))
    return quantize_backbone(model, cfg.weight_bits, cfg.act_bits, calibration)


def _load_sparsezoo(cfg: SourceSpec, calibration: list[torch.Tensor] | None = None) -> nn.Module:
    return load_sparse_checkpoint(cfg.arch, cfg.checkpoint)


# ---------------------------------------------------------------- CLIP and ViT sources


def _arm_files(cfg: SourceSpec) -> list[Path]:
    """The one file a CLIP / ViT source reads (a CLIP hub tag: the weights' local copy)."""
    if family(cfg.arch) == "clip":
        from lib.core.utils import resolve_path
        from lib.models import clip

        if cfg.network == "sparsezoo":  # a given pruned checkpoint, open_clip format
            return [resolve_path(cfg.checkpoint)]
        return [clip.weights_file(cfg)]
    from lib.models import vit

    return [vit.source_file(cfg)]


def _from_hub(cfg: SourceSpec) -> bool:
    """CLIP hub weights: they may still download, so their local file is not required."""
    if family(cfg.arch) != "clip" or cfg.network == "sparsezoo":
        return False
    from lib.models import clip

    return clip.from_hub(cfg)


def _load_arm(cfg: SourceSpec, calibration: list[torch.Tensor] | None = None) -> nn.Module:
    """A (compressed) CLIP classifier over the dataset's text prompts, or a timm classifier."""
    path = _arm_files(cfg)[0]
    if family(cfg.arch) == "clip":
        from lib.models import clip

        if cfg.network == "sparsezoo":
            model = clip.create_clip(cfg.arch, path)
        else:
            model = clip.create_clip(cfg.arch, cfg.weights, cfg.pretrained_path)
        if cfg.network == "magnitude_pruned":
            clip.prune_image_tower(model, cfg.prune_sparsity)
        return clip.classifier_for(cfg, model)
    from lib.models import vit

    if cfg.network == "quantized" and cfg.checkpoint:  # a QAT checkpoint
        return vit.load_qat(cfg.arch, path, cfg.weight_bits, cfg.act_bits, calibration)
    model = vit.create_vit(cfg.arch, path)
    if cfg.network == "magnitude_pruned":
        vit.prune_magnitude(model, cfg.prune_sparsity)
    if cfg.network == "quantized":
        from lib.models.quant import quantize_backbone

        model = quantize_backbone(model, cfg.weight_bits, cfg.act_bits, calibration, "linear")
    return model


def _by_family(cnn: Callable[..., Any], arm: Callable[..., Any] = _arm_files) -> Callable[..., Any]:
    """`cnn` for lib.models.backbone's archs, `arm` for CLIP / ViT ones."""
    return lambda cfg, *args: (cnn if family(cfg.arch) == "cnn" else arm)(cfg, *args)


def _check_arm(cfg: SourceSpec) -> None:
    """What CLIP and ViT sources need besides their network's own rules."""
    if family(cfg.arch) == "clip" and cfg.network == "sparsezoo" and cfg.weights:
        raise ValueError("network 'sparsezoo' reads checkpoint=<file>; leave weights empty")
    if family(cfg.arch) != "vit":
        return
    from lib.models import vit

    if cfg.network != "sparsezoo" and not (cfg.weights or cfg.checkpoint):
        raise ValueError(vit.needs_weights_message(cfg.arch))
    if cfg.checkpoint and cfg.network not in ("quantized", "sparsezoo"):
        raise ValueError(
            f"checkpoint is read by networks 'quantized' (QAT) and 'sparsezoo', got network "
            f"{cfg.network!r}"
        )


def _check_dense(cfg: SourceSpec) -> None:
    if cfg.sparsity != 0:
        raise ValueError(f"network 'dense' has sparsity state 0, got {cfg.sparsity}")


def _check_quantized(cfg: SourceSpec) -> None:
    if max(cfg.weight_bits, cfg.act_bits) == 32 and cfg.weight_bits == cfg.act_bits:
        raise ValueError("network 'quantized' needs weight_bits or act_bits below 32")


def _check_sparsezoo(cfg: SourceSpec) -> None:
    if not cfg.checkpoint:
        raise ValueError("network 'sparsezoo' needs checkpoint=<path of the sparse file>")


def _no_check(cfg: SourceSpec) -> None:
    return None


def _check_sparsezoo_arm(cfg: SourceSpec) -> None:
    _check_sparsezoo(cfg)
    _check_arm(cfg)


def _check_quantized_arm(cfg: SourceSpec) -> None:
    _check_quantized(cfg)
    _check_arm(cfg)


def _check_dense_arm(cfg: SourceSpec) -> None:
    _check_dense(cfg)
    _check_arm(cfg)


@dataclass(frozen=True)
class SourceKind:
    """One kind of source network (a value of SourceSpec.network)."""

    name: str
    files: Callable[[SourceSpec], list[Path]]  # checkpoint files the config needs
    load: Callable[..., nn.Module]  # (cfg, calibration batches or None) -> source classifier
    check: Callable[[SourceSpec], None] = _no_check  # fields this kind constrains
    key_name: str = ""  # its name in run keys ("" = the kind's name)
    stated: bool = False  # run keys carry the sparsity state
    quantized: bool = False  # needs calibration batches; BN stays unfolded
    own_classes: bool = True  # its pretrained_dir may name the source classes (classes.json)
    missing_extra: Callable[[SourceSpec], list[str]] = lambda cfg: []
    families: tuple[str, ...] = ("cnn",)  # arch families it exists for (lib.models.archs.family)
    one_shot: bool = False  # pruned at load time to `prune_sparsity` (no IMP state)

    def validate(self, cfg: SourceSpec) -> None:
        """The config's fields as this kind needs them: the arch family, prune_sparsity, then
        the kind's own rules."""
        arch_family = family(cfg.arch)
        if arch_family not in self.families:
            if arch_family == "cnn":
                raise ValueError(
                    f"network {self.name!r} is for clip_* and ViT archs, got {cfg.arch!r}; "
                    "CNN sources use ticket / random_pruned"
                )
            allowed = [k.name for k in SOURCES.values() if arch_family in k.families]
            raise ValueError(
                f"network {self.name!r} is not available for {cfg.arch}; choose one of: "
                + ", ".join(allowed)
            )
        if self.one_shot != (cfg.prune_sparsity != 0):
            one_shot = [k.name for k in SOURCES.values() if k.one_shot]
            raise ValueError(
                f"prune_sparsity (in (0, 1)) goes with network {', '.join(map(repr, one_shot))} "
                f"only, got network {self.name!r} and prune_sparsity {cfg.prune_sparsity!r}"
            )
        self.check(cfg)

    def required(self, cfg: SourceSpec) -> list[Path]:
        """The files that must exist before a run (CLIP hub weights may still download)."""
        return [] if _from_hub(cfg) else self.files(cfg)

    def missing(self, cfg: SourceSpec) -> list[str]:
        """What the config needs and this machine lacks."""
        note = ""
        if _from_hub(cfg):
            from lib.models.clip import hub_note

            note = hub_note(cfg)
        missing = [str(p) + note for p in self.files(cfg) if not p.is_file()]
        return missing + self.missing_extra(cfg)

    def file_role(self, cfg: SourceSpec) -> str:
        """What a CLIP / ViT source's file is, for error messages."""
        return "QAT checkpoint" if self.quantized and cfg.checkpoint else "checkpoint"

    def run_name(self, cfg: SourceSpec) -> str:
        """The network part of a run key: dense, lt8, random_pruned12, quantized0w4a4, mag50"""
        if self.one_shot:
            return f"mag{round(100 * cfg.prune_sparsity)}"
        name = self.key_name or self.name
        if self.stated:
            name += str(cfg.sparsity)
        if self.quantized:
            name += f"w{cfg.weight_bits}a{cfg.act_bits}"
        return name

    def classes(self, cfg: SourceSpec, num_source: int) -> list[str] | None:
        """Names of the source classes, when known: classes.json beside the tickets, or
        ImageNet's for a 1000-class source."""
        if family(cfg.arch) == "clip":
            from lib.models.clip import source_class_names

            return source_class_names(cfg, num_source)
        path = cfg.pretrained_path / "classes.json"
        if (
            self.own_classes
            and family(cfg.arch) == "cnn"
            and not _torchvision(cfg)
            and path.is_file()
        ):
            return json.loads(path.read_text())
        return list(imagenet_classes()) if num_source == 1000 else None


ARMS = ("cnn", "clip", "vit")
SOURCES: dict[str, SourceKind] = {
    kind.name: kind
    for kind in (
        SourceKind(
            "dense",
            _by_family(_dense_files),
            _by_family(_load_dense, _load_arm),
            _check_dense_arm,
            missing_extra=_by_family(_dense_missing, lambda cfg: []),
            families=ARMS,
        ),
        SourceKind(
            "ticket", _ticket_files("dyn4"), _load_ticket("dyn4"), key_name="lt", stated=True
        ),
        SourceKind("random_pruned", _ticket_files("random"), _load_ticket("random"), stated=True),
        SourceKind(
            "quantized",
            _by_family(_ticket_files("dyn4")),
            _by_family(_load_quantized, _load_arm),
            _check_quantized_arm,
            stated=True,
            quantized=True,
            families=("cnn", "vit"),
        ),
        SourceKind(
            "sparsezoo",
            _by_family(lambda cfg: [Path(cfg.checkpoint)]),
            _by_family(_load_sparsezoo, _load_arm),
            _check_sparsezoo_arm,
            own_classes=False,
            families=ARMS,
        ),
        SourceKind(
            "magnitude_pruned",
            _arm_files,
            _load_arm,
            _check_arm,
            families=("clip", "vit"),
            one_shot=True,
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
    from lib.models.backbone import TORCHVISION_ARCHS, imagenet_weights

    dense = SOURCES.get(network) is SOURCES["dense"]
    if dense and not weights and arch in TORCHVISION_ARCHS:
        weights = imagenet_weights(arch)
    if sparsity is None:
        sparsity = 0 if dense else default_state
    return weights, sparsity


def source_kind(cfg: SourceSpec | Any) -> SourceKind:
    """The registered kind of `cfg.network` (SourceSpec validates the name)."""
    try:
        return SOURCES[cfg.network]
    except KeyError:
        raise ValueError(
            f"unknown network {cfg.network!r}; choose one of: {', '.join(NETWORKS)}"
        ) from None
