"""Backbones by name, features/head split, masks, and strict loading of dense and sparse files.

from lib.models.backbone import create_backbone, load_lottery_ticket, ticket_paths
model = create_backbone("resnet50", weights="imagenet")        # torchvision, offline cache
model = load_lottery_ticket("resnet50", *ticket_paths("ckpts", "resnet50", 4))
"""

from __future__ import annotations

import collections
import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.fx
import torchvision
from torch import nn

from lib.core.utils import atomic_torch_save
from lib.models import archs
from lib.models.checkpoints import (  # noqa: F401 - re-exported: lib.models.backbone's names stay importable
    KEY_PREFIXES,
    STATE_DICT_KEYS,
    CheckpointError,
    few,
    safe_load,
    strip_prefixes,
    unwrap,
)
from lib.models.masks import (  # noqa: F401 - re-exported
    Mask,
    apply_mask,
    prunable_names,
    sparsity,
    sparsity_report,
)

ARCHS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg11",
    "vgg16",
    "vgg19",
    "cifar_resnet_20",
)
TORCHVISION_ARCHS = ARCHS[:6]
# Every backbone, the mini cifar_resnet_20 included, sees ImageNet-normalized inputs.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CIFAR_RESNET = re.compile(r"cifar_resnet_(\d+)(?:_(\d+))?")


# ---------------------------------------------------------------- architectures


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (a 1x1 conv shortcut when the shape changes)."""

    def __init__(self, f_in: int, f_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(f_out, f_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False), nn.BatchNorm2d(f_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """The lottery-ticket literature's CIFAR ResNet-N (open_lth's cifar_resnet_N_W): 3 stages of
    W/2W/4W channels, (N-2)/6 BasicBlocks each, global average pool, linear classifier."""

    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        blocks_per_stage = (depth - 2) // 6
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        blocks, f_in = [], width
        for stage, f_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(f_in, f_out, 2 if stage > 0 and i == 0 else 1))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(f_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _check_arch(name: str) -> str:
    match = CIFAR_RESNET.fullmatch(name)
    if name in TORCHVISION_ARCHS or (match and (int(match[1]) - 2) % 6 == 0 and int(match[1]) > 2):
        return name
    if isinstance(name, str) and archs.family(name) != "cnn":  # built by models.clip / .vit
        return name
    raise ValueError(
        f"unknown architecture {name!r}; choose one of: {', '.join(ARCHS)} "
        "(or cifar_resnet_N[_W] with N = 6D+2, W the first-stage width), "
        f"{', '.join(archs.CLIP_ARCHS)} (open_clip), {', '.join(archs.VIT_ARCHS)} (timm)"
    )


def source_size(arch: str) -> int:
    """Input size the architecture was trained at: 32 for CIFAR ResNets, the model config's
    for CLIP / timm archs, 224 otherwise."""
    if archs.family(_check_arch(arch)) != "cnn":
        return archs.source_size(arch)
    return 32 if arch.startswith("cifar_resnet") else 224


def input_stats(arch: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) the source normalizes with: CLIP's for clip_* archs, ImageNet's otherwise."""
    if archs.is_clip(arch):
        return archs.CLIP_MEAN, archs.CLIP_STD
    return IMAGENET_MEAN, IMAGENET_STD


def _build(arch: str, num_classes: int) -> nn.Module:
    if arch in TORCHVISION_ARCHS:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    match = CIFAR_RESNET.fullmatch(arch)
    return CifarResNet(int(match[1]), int(match[2] or 16), num_classes)


def _head_key(arch: str) -> str:
    """State-dict key of the classifier weight, from the name alone."""
    return "classifier.6.weight" if arch.startswith("vgg") else "fc.weight"


def _head_name(model: nn.Module) -> str:
    """Dotted name of the final nn.Linear (the classifier)."""
    if isinstance(model, torchvision.models.VGG):
        return f"classifier.{len(model.classifier) - 1}"
    if isinstance(model, torchvision.models.ResNet | CifarResNet):
        return "fc"
    raise TypeError(f"unsupported model type {type(model).__name__}; build it by create_backbone")


def _replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the classifier for a freshly initialised one when the class count differs."""
    name = _head_name(model)
    head = model.get_submodule(name)
    if head.out_features != num_classes:
        model.set_submodule(name, nn.Linear(head.in_features, num_classes))
    return model


def create_backbone(
    name: str, num_classes: int | None = None, weights: str | os.PathLike | None = None
) -> nn.Module:
    """Build `name`; weights None = random init, "IMAGENET1K_V1"/"IMAGENET1K_V2" = torchvision's
    ImageNet weights ("imagenet" = the paper's: V2 for resnet50, else V1; offline: from
    $TORCH_HOME/hub/checkpoints), or a path to a
    state-dict file. A differing `num_classes` replaces the head after loading."""
    arch = _check_arch(name)
    default_classes = 10 if arch.startswith("cifar_resnet") else 1000
    if weights is None:
        return _build(arch, num_classes or default_classes)
    if isinstance(weights, str) and not Path(weights).suffix and os.sep not in weights:
        # A name, not a file: torchvision's ImageNet weights (the name is checked there).
        if arch not in TORCHVISION_ARCHS:
            raise ValueError(f"{arch} has no ImageNet weights; use weights=None or a file path")
        model = _build(arch, 1000)
        _load_strict(model, *_torchvision_state(arch, weights))
    else:
        state = _read_state_dict(weights)
        model = _build(arch, _num_classes_in(state, arch, weights))
        _load_strict(model, state, weights)
    return _replace_head(model, num_classes) if num_classes else model


# The paper's dense sources (ilm_vp.py, linear_probing.py): ResNet-50 IMAGENET1K_V2, every
# other architecture IMAGENET1K_V1. "imagenet" means these.
SEED_IMAGENET_WEIGHTS = {"resnet50": "IMAGENET1K_V2"}


def imagenet_weights(arch: str) -> str:
    """The torchvision ImageNet weights the paper's code used for `arch`."""
    return SEED_IMAGENET_WEIGHTS.get(_check_arch(arch), "IMAGENET1K_V1")


def torchvision_weights_file(arch: str, weights: str) -> tuple[str, Path]:
    """(url, path in $TORCH_HOME/hub/checkpoints) of torchvision's ImageNet `weights`."""
    enum = torchvision.models.get_model_weights(arch)
    member = imagenet_weights(arch) if weights == "imagenet" else weights
    if member not in enum.__members__:
        raise ValueError(
            f"unknown weights {weights!r} for {arch}; choose one of: imagenet, "
            + ", ".join(m for m in enum.__members__ if m.startswith("IMAGENET1K"))
        )
    url = enum[member].url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _torchvision_state(arch: str, weights: str) -> tuple[dict[str, torch.Tensor], Path]:
    """torchvision's weight file from the hub cache (downloaded when online); never random."""
    member = imagenet_weights(arch) if weights == "imagenet" else weights
    url, path = torchvision_weights_file(arch, weights)
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except Exception as err:  # offline machines land here: say exactly what to do
            raise CheckpointError(
                f"{path}: ImageNet weights {arch} {member} are not available and the download "
                f"failed ({err}); download {url} elsewhere and place it at {path} "
                "(the folder is $TORCH_HOME/hub/checkpoints)"
            ) from err
    return _read_state_dict(path), path


def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in label order (torchvision's weights metadata)."""
    return tuple(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


class Normalize(nn.Module):
    """(x - mean) / std per channel, mean and std as buffers (they follow the module's device):
    the one input normalization (LP's extractor, the prompts, pretraining, the benches)."""

    def __init__(
        self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] images in [0, 1] -> ImageNet-normalized, as every backbone expects."""
    return Normalize().to(images.device)(images)


class PreLogits(nn.Module):
    """timm model -> pre-logits features [N, D] (forward_head with pre_logits=True)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def split_features(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """(features, head) with head(features(x)) == model(x); features shares the model's modules
    (no copies) and maps normalized images to [N, D]. For VGG the features end after the
    classifier's second ReLU/Dropout (4096-d) and the head is the last Linear."""
    if isinstance(model, torchvision.models.ResNet):
        m = model
        parts = [m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4]
        return nn.Sequential(*parts, m.avgpool, nn.Flatten(1)), m.fc
    if isinstance(model, torchvision.models.VGG):
        body = [model.features, model.avgpool, nn.Flatten(1), *model.classifier[:-1]]
        return nn.Sequential(*body), model.classifier[-1]
    if isinstance(model, CifarResNet):
        m = model
        return nn.Sequential(m.conv, m.bn, m.relu, m.blocks, m.pool, nn.Flatten(1)), m.fc
    if hasattr(model, "split_features"):  # lib.models.clip.CLIPClassifier
        return model.split_features()
    if type(model).__module__.startswith("timm."):  # lib.models.vit's models
        head = model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise TypeError(
                f"{type(model).__name__}: classifier is {type(head).__name__}, not Linear"
            )
        return PreLogits(model), head
    raise TypeError(f"unsupported model type {type(model).__name__}; build it by create_backbone")


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode (BN statistics fixed), no gradients, channels_last."""
    model.eval().requires_grad_(False)
    return model.to(memory_format=torch.channels_last)


class _LeafTracer(torch.fx.Tracer):
    """Traces module calls only: every module without children (QuantReLU too) is a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return next(m.children(), None) is None


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` with every eval-mode BatchNorm2d that directly follows a
    Conv2d folded into that convolution's weight and bias (the BN becomes an Identity).

    Same function up to float rounding, one memory pass less per BN in every forward and
    backward through the frozen backbone. Zeros of a pruned weight stay zero. The module
    tree is kept (names, quantizer modules); a model fx cannot trace comes back unfolded.
    """
    folded = freeze(copy.deepcopy(model))
    try:
        graph = _LeafTracer().trace(folded)
    except Exception:  # data-dependent control flow: skip the optimization, not the run
        return folded
    modules = dict(folded.named_modules())
    calls = collections.Counter(n.target for n in graph.nodes if n.op == "call_module")
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if not (
            isinstance(prev, torch.fx.Node)
            and prev.op == "call_module"
            and isinstance(modules[prev.target], nn.Conv2d)
            and len(prev.users) == 1
            and len(node.args) == 1
            and calls[prev.target] == calls[node.target] == 1  # modules used once only
        ):
            continue
        conv, bn = modules[prev.target], modules[node.target]
        if bn.running_var is None or not bn.affine:
            continue
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1))))
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
        folded.set_submodule(node.target, nn.Identity())
    return freeze(folded)


# ---------------------------------------------------------------- checkpoint files


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict with "model."/"module." prefixes stripped and
    torch.nn.utils.prune pairs (X_orig, X_mask) folded into X = X_orig * X_mask."""
    state = {strip_prefixes(k): v for k, v in unwrap(safe_load(path), path).items()}
    pairs = [k[:-5] for k in state if k.endswith("_orig") and k[:-5] + "_mask" in state]
    if not pairs:
        return state
    mask = Mask({base: state.pop(base + "_mask") for base in pairs})
    for base in pairs:
        state[base] = state.pop(base + "_orig")
    try:
        return apply_mask(state, mask)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err


def _num_classes_in(state: Mapping[str, torch.Tensor], arch: str, path: Any) -> int:
    """Classes of the file's classifier (the last Linear's weight rows)."""
    head = _head_key(arch)
    if head not in state or state[head].ndim != 2:
        raise CheckpointError(f"{path}: no classifier weight {head!r} for {arch}; is it a {arch}?")
    return int(state[head].shape[0])


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Any) -> nn.Module:
    """load_state_dict that names every missing/unexpected/mis-shaped key and the file.
    Only BatchNorm's num_batches_tracked counters may be absent (older torchvision files)."""
    own = model.state_dict()
    state = dict(state)
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = [
        f"{label}: {few(items)}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (file vs model)", shapes),
        )
        if items
    ]
    if problems:
        raise CheckpointError(
            f"{path}: does not fit {type(model).__name__}: " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return model


def load_sparse_checkpoint(
    arch: str, path: str | os.PathLike, num_classes: int | None = None
) -> nn.Module:
    """A (sparse) state-dict file, plain or {"state_dict": ...}; its sparsity is its zeros."""
    return create_backbone(arch, num_classes=num_classes, weights=path)


def load_lottery_ticket(
    arch: str,
    checkpoint_path: str | os.PathLike,
    mask_path: str | os.PathLike,
    num_classes: int | None = None,
) -> nn.Module:
    """The paper's ticket files: weights = mask * checkpoint weight, loaded strictly.
    num_classes None keeps the checkpoint's classifier; another count replaces the head."""
    arch = _check_arch(arch)
    state = _read_state_dict(checkpoint_path)
    mask = Mask.load(mask_path)
    model = _build(arch, _num_classes_in(state, arch, checkpoint_path))
    # A checkpoint of another architecture is named as such, before the mask is compared to it.
    _load_strict(model, state, checkpoint_path)
    try:
        apply_mask(model, mask)  # lib.models.masks: the one function that applies masks
    except ValueError as err:
        raise CheckpointError(f"{mask_path}: does not fit {checkpoint_path}: {err}") from err
    return _replace_head(model, num_classes) if num_classes else model


def ticket_paths(
    pretrained_dir: str | os.PathLike, arch: str, state: int, kind: str = "dyn4"
) -> tuple[Path, Path]:
    """(checkpoint, mask) paths: {arch}_{kind}_{state}_checkpoint.pth / _mask.pth."""
    if kind not in ("dyn4", "random"):
        raise ValueError(f"unknown ticket kind {kind!r}; choose one of: dyn4, random")
    stem = Path(pretrained_dir) / f"{arch}_{kind}_{int(state)}"
    return stem.with_name(stem.name + "_checkpoint.pth"), stem.with_name(stem.name + "_mask.pth")


def save_ticket(model: nn.Module, mask: Mask, ckpt_path: Path, mask_path: Path) -> None:
    """Write a ticket in the paper's format: "model."-prefixed state dict and mask."""
    atomic_torch_save(
        {"model." + k: v.detach().cpu() for k, v in model.state_dict().items()}, ckpt_path
    )
    mask.save(mask_path, prefix="model.")
