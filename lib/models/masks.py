"""Masks: which prunable weights a sparse network keeps, and the one function that applies them.

from lib.models.masks import Mask, apply_mask
mask = Mask.load("ticket_mask.pth")
apply_mask(model, mask)      # checks names, shapes and 0/1 values, then multiplies in place
smaller = prune(model, mask, 0.2)   # one global magnitude threshold over the surviving weights

The pure pruning functions live here (lib.models.prune runs IMP with them), so the CLIP / ViT arms
prune one-shot without importing IMP's training stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lib.core.utils import atomic_torch_save, atomic_write_json
from lib.models.checkpoints import CheckpointError, few, safe_load, strip_prefixes, unwrap


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
        as bool, a quarter of float32's bytes (the paper's `mask * weight` still works, and
        load() gives float32 back), and a JSON sparsity report beside: `<name>.sparsity.json`."""
        path = Path(path)
        atomic_torch_save({prefix + n: v.to(torch.bool) for n, v in self.items()}, path)
        atomic_write_json(path.with_name(path.stem + ".sparsity.json"), self.report())
        return path

    @staticmethod
    def load(path: str | os.PathLike) -> Mask:
        """Load a mask file: plain or wrapped dict, names with "model."/"module." prefixes and
        "weight_mask"/"_mask" suffixes (torch.nn.utils.prune style) are accepted."""
        raw = unwrap(safe_load(path), path)
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
    name = strip_prefixes(key)
    for suffix in ("_mask", ".mask"):
        name = name.removesuffix(suffix)
    return name if name.endswith((".weight", ".in_proj_weight")) else name + ".weight"


def apply_mask(
    target: nn.Module | MutableMapping[str, torch.Tensor], mask: Mask, check: bool = True
) -> Any:
    """The one function that applies masks: multiply the masked tensors of `target` (a model's
    prunable weights, or a state dict's tensors by name) by `mask` in place, after checking
    names, shapes and 0/1 values (`check=False` skips that for a mask already checked against
    this target, e.g. after every optimizer step). Tensors absent from the mask stay dense.
    Returns `target`."""
    if isinstance(target, nn.Module):
        tensors, allowed = dict(target.named_parameters()), set(prunable_names(target))
        what = "prunable weights of the model"
    else:
        tensors, allowed, what = target, set(target), "tensors of the state dict"
    if check:
        unknown = sorted(set(mask) - allowed)
        if unknown:
            raise ValueError(f"mask names are not {what}: {few(unknown)}")
        wrong = [
            f"{n} {tuple(m.shape)} vs {tuple(tensors[n].shape)}"
            for n, m in mask.items()
            if m.shape != tensors[n].shape
        ]
        if wrong:
            raise ValueError(f"mask shapes differ from the model's (mask vs model): {few(wrong)}")
        not_binary = [n for n, m in mask.items() if _not_binary(m)]
        if not_binary:
            raise ValueError(f"mask entries other than 0 and 1 in: {few(not_binary)}")
    with torch.no_grad():
        for name, m in mask.items():
            tensors[name].mul_(m.to(tensors[name].device, tensors[name].dtype))
    return target


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


# ---------------------------------------------------------------- pruning (pure functions)


def _count(mask: Mask, fraction: float) -> int:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    surviving = sum(int(m.sum()) for m in mask.values())
    return round(fraction * surviving)


def _remove(mask: Mask, scores: torch.Tensor, n: int) -> Mask:
    """Zero the `n` surviving entries with the lowest scores (flat order over the mask)."""
    flat = torch.cat([m.flatten() for m in mask.values()])
    alive = flat.nonzero().squeeze(1)
    drop = alive[torch.topk(scores[alive], n, largest=False).indices]
    flat[drop] = 0.0
    out, offset = Mask(), 0
    for name, m in mask.items():
        out[name] = flat[offset : offset + m.numel()].view_as(m).clone()  # own storage
        offset += m.numel()
    return out


def prune(model: nn.Module, mask: Mask, fraction: float) -> Mask:
    """New mask removing `fraction` of the surviving weights: those of smallest magnitude
    under one global ranking over every tensor in `mask` (exactly round(fraction * surviving)
    weights, ties broken by position)."""
    params = dict(model.named_parameters())
    scores = torch.cat([params[n].detach().abs().flatten().cpu().float() for n in mask])
    return _remove(mask, scores, _count(mask, fraction))


def random_prune(mask: Mask, fraction: float, seed: int) -> Mask:
    """Random control: remove round(fraction * surviving) weights drawn uniformly over all
    surviving weights (global, so each layer loses `fraction` of its weights in expectation)."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(sum(m.numel() for m in mask.values()), generator=generator)
    return _remove(mask, scores, _count(mask, fraction))
