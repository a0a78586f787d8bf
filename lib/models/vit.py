"""Vision transformers through timm (DeiT-Tiny, Swin-Tiny): weights from file, LP features,
fake quantization (lib.models.quant: Linear weights and inputs) and given QAT checkpoints.

    from lib.models.vit import create_vit, load_qat
    model = create_vit("deit_tiny", "pretrained/vit/deit_tiny_patch16_224-a1311bcf.pth")
    q = load_qat("deit_tiny", "pretrained/vit/deit_t_w4a4.pth", weight_bits=4, act_bits=4)

The paper's quantization arm: W3A3 / W4A4 QAT DeiT-T and Swin-T (OFQ's releases), 224-px
source, ILM-VP with images at 32 or 128 padded to 224, LP on the pre-logits features.
A QAT state dict is mapped key by key: the float weights go to timm's modules; LSQ step sizes
(`<linear>.input_quant_fn.s`, `.quan_a_fn.s` for inputs; `.lsqw_fn.s`, `.quan_w_fn.s` for
weights), StatsQ weights (`.statsq_fn.clip_val`) and OFQ's shifts (`.move_b4.bias`,
`.move_aft.bias`) to lib.models.quant's QuantLinear. Anything else (quantizers inside attention on
q/k/v or softmax, re-parameterized q/k weights, ...) has no counterpart in timm's modules:
the loader refuses, naming those keys, rather than drop them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lib.models.archs import VIT_ARCHS, is_vit, source_size  # noqa: F401 - re-exported
from lib.models.archs import timm_module as _timm
from lib.models.backbone import (  # noqa: F401 - PreLogits, split_features re-exported
    PreLogits,
    _load_strict,
    _read_state_dict,
    split_features,
)
from lib.models.checkpoints import CheckpointError
from lib.models.checkpoints import few as _few
from lib.models.masks import Mask, apply_mask, prunable_names, prune

# Quantizer parameters a QAT state dict may hold, by the suffix after a Linear's name.
ACT_STEP_KEYS = ("input_quant_fn.s", "quan_a_fn.s", "act_quant.s", "act_quantizer.s")
WEIGHT_STEP_KEYS = ("lsqw_fn.s", "quan_w_fn.s", "weight_quant.s", "weight_quantizer.s")
STATSQ_KEYS = ("statsq_fn.clip_val",)
SHIFT_KEYS = {"move_b4.bias": "shift_before", "move_aft.bias": "shift_after"}
IGNORED_KEYS = ("input_quant_fn.signed",)  # a flag OFQ's image quantizer sets on the fly
# OFQ quantizes fc2's input unsigned (all_positive: after GELU), every other input signed.
UNSIGNED_INPUTS = ("fc2",)


def register_vit(arch: str, timm_name: str, **kwargs: Any) -> None:
    """Make `arch` build timm's `timm_name` with `kwargs` (tests: a tiny DeiT)."""
    VIT_ARCHS[arch] = (timm_name, dict(kwargs))


def _build(arch: str, num_classes: int | None = None) -> nn.Module:
    if arch not in VIT_ARCHS:
        raise ValueError(f"unknown ViT arch {arch!r}; choose one of: {', '.join(VIT_ARCHS)}")
    name, kwargs = VIT_ARCHS[arch]
    kwargs = dict(kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return _timm().create_model(name, pretrained=False, **kwargs)


def _filter(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm's own conversion of the architecture's released format (Swin's, DeiT's)."""
    module = importlib.import_module(type(model).__module__)
    convert = getattr(module, "checkpoint_filter_fn", None)
    return dict(convert(state, model)) if convert is not None else state


def _num_classes(state: dict[str, Tensor], path: Any) -> int:
    for key in ("head.weight", "head.fc.weight"):
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    raise CheckpointError(f"{path}: no classifier weight head.weight or head.fc.weight")


def create_vit(arch: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """timm model of `arch`: random init (None) or a checkpoint file in the release format
    (plain or {"model": ...} state dict), converted by timm and loaded strictly."""
    if weights is None:
        return _build(arch).eval()
    state = _read_state_dict(weights)
    model = _build(arch, _num_classes(state, weights))
    return _load_strict(model, _filter(model, state), weights).eval()


def is_timm_model(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


# ---------------------------------------------------------------- QAT checkpoints


def qat_rules(
    model: nn.Module, state: dict[str, Tensor], path: Any
) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]]]:
    """Split a QAT state dict into timm's float state and lib.models.quant rules per Linear/Conv;
    refuse (CheckpointError naming them) keys that map to neither."""
    modules = dict(model.named_modules())
    own = set(model.state_dict())
    base: dict[str, Tensor] = {}
    rules: dict[str, dict[str, Any]] = {}
    unmapped = []
    for key, value in state.items():
        if key in own:
            base[key] = value
            continue
        owner, rest = _owner(key, modules)
        if owner is None or not isinstance(modules[owner], nn.Linear | nn.Conv2d):
            unmapped.append(key)
            continue
        rule = rules.setdefault(owner, {})
        if rest in ACT_STEP_KEYS and isinstance(modules[owner], nn.Linear):
            rule["act_step"] = value.float().reshape(-1) if value.numel() > 1 else value.reshape(())
            rule["unsigned"] = owner.rsplit(".", 1)[-1] in UNSIGNED_INPUTS
        elif rest in WEIGHT_STEP_KEYS:
            rule["weight_step"] = value.float().reshape(-1)
        elif rest in STATSQ_KEYS:
            rule["weight_rule"], rule["clip"] = "statsq", float(value.reshape(-1)[0])
        elif rest in SHIFT_KEYS and isinstance(modules[owner], nn.Linear):
            rule[SHIFT_KEYS[rest]] = value.float().reshape(-1)
        elif rest in IGNORED_KEYS:
            continue
        else:
            unmapped.append(key)
    if unmapped:
        raise CheckpointError(
            f"{path}: {len(unmapped)} QAT parameter(s) have no counterpart in timm's "
            f"{type(model).__name__} with lib.models.quant's QuantLinear, refused rather than "
            f"dropped: {_few(sorted(unmapped))}; mappable per Linear: "
            + ", ".join(ACT_STEP_KEYS + WEIGHT_STEP_KEYS + STATSQ_KEYS + tuple(SHIFT_KEYS))
        )
    _check_rule_shapes(modules, rules, path)
    return base, {k: v for k, v in rules.items() if v}


def _owner(key: str, modules: dict[str, nn.Module]) -> tuple[str | None, str]:
    """The longest module name that prefixes `key`, and the rest of the key."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        if name in modules:
            return name, ".".join(parts[cut:])
    return None, key


def _check_rule_shapes(modules: dict[str, nn.Module], rules: dict[str, dict], path: Any) -> None:
    bad = []
    for name, rule in rules.items():
        m = modules[name]
        fan_in = m.in_features if isinstance(m, nn.Linear) else None
        for key, size in (
            ("act_step", fan_in),
            ("shift_before", fan_in),
            ("shift_after", fan_in),
            ("weight_step", m.weight.shape[0]),
        ):
            if key in rule and rule[key].numel() not in (1, size):
                bad.append(f"{name} {key} has {rule[key].numel()} values, expected 1 or {size}")
    if bad:
        raise CheckpointError(f"{path}: quantizer shapes do not fit: {_few(bad)}")


def load_qat(
    arch: str,
    path: str | os.PathLike,
    weight_bits: int,
    act_bits: int,
    calibration: Iterable[Tensor] | None = None,
) -> nn.Module:
    """A QAT checkpoint as a fake-quantized timm model: float weights loaded strictly, the
    checkpoint's quantizers where it has them; layers without a given step get one from
    `calibration` (as lib.models.quant.quantize_backbone)."""
    from lib.models.quant import quantize_backbone

    state = _read_state_dict(path)
    model = _build(arch, _num_classes(state, path))
    base, rules = qat_rules(model, state, path)
    _load_strict(model, _filter(model, base), path)
    return quantize_backbone(model.eval(), weight_bits, act_bits, calibration, "linear", rules)


# ---------------------------------------------------------------- compression


def prune_magnitude(model: nn.Module, sparsity: float) -> nn.Module:
    """One-shot global magnitude pruning of every prunable weight but the source classifier's
    (lib.models.masks.prune: one threshold over all of them), in place."""
    params = dict(model.named_parameters())
    head = model.get_classifier().weight  # the source classifier stays dense
    names = [n for n in prunable_names(model) if params[n] is not head]
    ones = Mask({n: torch.ones_like(params[n]) for n in names})
    apply_mask(model, prune(model, ones, sparsity))
    return model


def needs_weights_message(arch: str) -> str:
    return (
        f"{arch} needs weights=<timm checkpoint file> (e.g. pretrained/vit/"
        f"{VIT_ARCHS[arch][0]}.pth), or checkpoint=<QAT file> for network 'quantized'"
    )


def source_file(cfg: Any) -> Path:
    """The checkpoint a ViT config reads: `checkpoint` (QAT, sparse) or else `weights`."""
    from lib.core.utils import resolve_path

    return resolve_path(cfg.checkpoint or cfg.weights)
