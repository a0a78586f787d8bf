"""Backbones by name, features/head split, masks, and strict loading of dense and sparse files.

from lib.backbone import create_backbone, load_lottery_ticket, ticket_paths
model = create_backbone("resnet50", weights="imagenet")        # torchvision, offline cache
model = load_lottery_ticket("resnet50", *ticket_paths("ckpts", "resnet50", 4))
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from lib.utils import atomic_torch_save, atomic_write_json

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
# Wrappers and prefixes seen in published checkpoints (the paper's files use "model.").
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")
KEY_PREFIXES = ("module.", "model.")
CIFAR_RESNET = re.compile(r"cifar_resnet_(\d+)(?:_(\d+))?")


class CheckpointError(ValueError):
    """A checkpoint or mask file that cannot be used; the message names the file and the problem."""


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


def _transformer_arm(name: str) -> Any:
    """lib.clip or lib.vit when `name` is one of their archs (open_clip / timm), else None."""
    from lib import clip, vit

    return clip if clip.is_clip(name) else vit if vit.is_vit(name) else None


def _check_arch(name: str) -> str:
    match = CIFAR_RESNET.fullmatch(name)
    if name in TORCHVISION_ARCHS or (match and (int(match[1]) - 2) % 6 == 0 and int(match[1]) > 2):
        return name
    if isinstance(name, str) and _transformer_arm(name) is not None:
        return name
    from lib.clip import CLIP_ARCHS
    from lib.vit import VIT_ARCHS

    raise ValueError(
        f"unknown architecture {name!r}; choose one of: {', '.join(ARCHS)} "
        "(or cifar_resnet_N[_W] with N = 6D+2, W the first-stage width), "
        f"{', '.join(CLIP_ARCHS)} (open_clip), {', '.join(VIT_ARCHS)} (timm)"
    )


def source_size(arch: str) -> int:
    """Input size the architecture was trained at: 32 for CIFAR ResNets, the model config's
    for CLIP / timm archs, 224 otherwise."""
    arm = _transformer_arm(_check_arch(arch))
    if arm is not None:
        return arm.source_size(arch)
    return 32 if arch.startswith("cifar_resnet") else 224


def input_stats(arch: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) the source normalizes with: CLIP's for clip_* archs, ImageNet's otherwise."""
    from lib.clip import CLIP_MEAN, CLIP_STD, is_clip

    return (CLIP_MEAN, CLIP_STD) if is_clip(arch) else (IMAGENET_MEAN, IMAGENET_STD)


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


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[N,3,H,W] images in [0, 1] -> ImageNet-normalized, as every backbone expects."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


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
    if hasattr(model, "split_features"):  # lib.clip.CLIPClassifier
        return model.split_features()
    if type(model).__module__.startswith("timm."):
        from lib.vit import split_features as timm_split

        return timm_split(model)
    raise TypeError(f"unsupported model type {type(model).__name__}; build it by create_backbone")


# ---------------------------------------------------------------- masks and sparsity


def prunable_names(model: nn.Module) -> list[str]:
    """Names of conv and linear weights (and nn.MultiheadAttention's packed input projection,
    as in CLIP): the tensors pruning and masks act on."""
    names = []
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            names.append(f"{n}.weight")
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            names.append(f"{n}.in_proj_weight")
    return names


def _not_binary(t: torch.Tensor) -> bool:
    return bool(((t != 0) & (t != 1)).any())


class Mask(dict):
    """Validated mapping: prunable weight name -> 0/1 float tensor (1 = kept)."""

    def __init__(self, entries: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        for name, value in (entries or {}).items():
            self[name] = value

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"mask names must be non-empty strings, got {name!r}")
        value = torch.as_tensor(value)
        if _not_binary(value):
            bad = value[(value != 0) & (value != 1)].unique()[:5].tolist()
            raise ValueError(f"mask {name!r} has values other than 0 and 1 (e.g. {bad})")
        super().__setitem__(name, value.detach().to(torch.float32))

    @staticmethod
    def ones_like(model: nn.Module) -> Mask:
        params = dict(model.named_parameters())
        return Mask(
            {n: torch.ones_like(params[n], dtype=torch.float32) for n in prunable_names(model)}
        )

    @property
    def sparsity(self) -> float:
        """Fraction of masked-out entries over all tensors of the mask."""
        total = sum(v.numel() for v in self.values())
        return 1.0 - sum(float(v.sum()) for v in self.values()) / max(total, 1)

    def report(self) -> dict[str, Any]:
        total = sum(v.numel() for v in self.values())
        kept = sum(int(v.sum()) for v in self.values())
        layers = {n: 1.0 - float(v.mean()) for n, v in self.items()}
        return {"total": total, "unpruned": kept, "sparsity": self.sparsity, "layers": layers}

    def save(self, path: str | os.PathLike, prefix: str = "") -> Path:
        """Save the tensors (names prefixed by `prefix`, e.g. "model." for the paper's format)
        and a JSON sparsity report beside: `<name>.sparsity.json`."""
        path = Path(path)
        atomic_torch_save({prefix + n: v for n, v in self.items()}, path)
        atomic_write_json(path.with_name(path.stem + ".sparsity.json"), self.report())
        return path

    @staticmethod
    def load(path: str | os.PathLike) -> Mask:
        """Load a mask file: plain or wrapped dict, names with "model."/"module." prefixes and
        "weight_mask"/"_mask" suffixes (torch.nn.utils.prune style) are accepted."""
        raw = _unwrap(_safe_load(path), path)
        entries: dict[str, torch.Tensor] = {}
        for key, value in raw.items():
            name = _mask_name(key)
            if name in entries:
                raise CheckpointError(f"{path}: two entries map to the mask name {name!r}")
            entries[name] = value
        try:
            return Mask(entries)
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from err


def _mask_name(key: str) -> str:
    name = _strip_prefixes(key)
    for suffix in ("_mask", ".mask"):
        name = name.removesuffix(suffix)
    return name if name.endswith((".weight", ".in_proj_weight")) else name + ".weight"


def apply_mask(model: nn.Module, mask: Mask) -> nn.Module:
    """Multiply the model's prunable weights by `mask` in place, after checking names, shapes
    and 0/1 values; tensors absent from the mask stay dense. Returns the model."""
    params = dict(model.named_parameters())
    prunable = set(prunable_names(model))
    unknown = sorted(set(mask) - prunable)
    if unknown:
        raise ValueError(f"mask names are not prunable weights of the model: {_few(unknown)}")
    wrong = [
        f"{n} {tuple(m.shape)} vs {tuple(params[n].shape)}"
        for n, m in mask.items()
        if m.shape != params[n].shape
    ]
    if wrong:
        raise ValueError(f"mask shapes differ from the model's (mask vs model): {_few(wrong)}")
    not_binary = [n for n, m in mask.items() if _not_binary(m)]
    if not_binary:
        raise ValueError(f"mask entries other than 0 and 1 in: {_few(not_binary)}")
    with torch.no_grad():
        for name, m in mask.items():
            params[name].mul_(m.to(params[name].device, params[name].dtype))
    return model


def sparsity_report(model: nn.Module) -> dict[str, Any]:
    """Zeros per prunable layer and overall: {"total", "zeros", "sparsity", "layers": {...}}."""
    params = dict(model.named_parameters())
    layers = {}
    for name in prunable_names(model):
        w = params[name]
        zeros = int((w == 0).sum())
        layers[name] = {"numel": w.numel(), "zeros": zeros, "sparsity": zeros / w.numel()}
    total = sum(v["numel"] for v in layers.values())
    zeros = sum(v["zeros"] for v in layers.values())
    return {"total": total, "zeros": zeros, "sparsity": zeros / max(total, 1), "layers": layers}


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over all conv and linear weights."""
    return sparsity_report(model)["sparsity"]


# ---------------------------------------------------------------- checkpoint files


def _few(items: list[str], n: int = 8) -> str:
    more = f" ... and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _safe_load(path: str | os.PathLike) -> Any:
    """torch.load(weights_only=True); any failure -> CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    _check_crc(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(err)
        if reason.startswith("Unsupported operand"):  # garbage, or a pickle it cannot check
            raise CheckpointError(
                f"{path}: refused to load: not a file of tensors that the safe loader "
                f"(weights_only=True) reads: corrupted, or a pickle it cannot check: {reason}"
            ) from err
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain "
            f"containers, which could run code when unpickled (weights_only=True): {reason}"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable, truncated or corrupted file: {err}") from err


def _unpickling_reason(err: Exception) -> str:
    """The line of torch's weights-only error that says what was refused."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].split(". Please", 1)[0] if lines else type(err).__name__


def _check_crc(path: Path) -> None:
    """torch.load does not verify the zip checksums, so flipped bytes inside a tensor would
    load silently as wrong weights; check them (one read of the file)."""
    if not zipfile.is_zipfile(path):
        return  # legacy torch format: no checksums to verify
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable, truncated or corrupted file: {err}") from err
    if bad is not None:
        raise CheckpointError(f"{path}: corrupted file: checksum mismatch in entry {bad!r}")


def _strip_prefixes(key: str) -> str:
    while key.startswith(KEY_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _unwrap(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: plain, or under one of STATE_DICT_KEYS."""
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            odd = [
                f"{k} ({type(v).__name__})"
                for k, v in obj.items()
                if not isinstance(v, torch.Tensor)
            ]
            raise CheckpointError(
                f"{path}: not a state dict: entries that are not tensors: {_few(odd)}; "
                f"wrapped state dicts are read from the keys {', '.join(STATE_DICT_KEYS)}"
            )
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return dict(obj)


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict with "model."/"module." prefixes stripped and
    torch.nn.utils.prune pairs (X_orig, X_mask) folded into X = X_orig * X_mask."""
    state = {_strip_prefixes(k): v for k, v in _unwrap(_safe_load(path), path).items()}
    for key in [k for k in state if k.endswith("_orig") and k[:-5] + "_mask" in state]:
        base = key[:-5]
        state[base] = state.pop(key) * state.pop(base + "_mask")
    return state


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
        f"{label}: {_few(items)}"
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
        apply_mask(model, mask)  # the one place masks are checked and applied
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
