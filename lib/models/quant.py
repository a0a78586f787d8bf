"""Fake-quantized backbones: k-bit per-output-channel weights and k-bit activations.

    from lib.models.quant import quantize_backbone, weight_levels
    q = quantize_backbone(model, weight_bits=4, act_bits=8, calibration=[x1, x2])
    weight_levels(q)["max"]   # <= 2**4 distinct values in any output channel

Weights: symmetric, per output channel, scale = max|w| / (2**(bits-1) - 1); the conv and
linear weights of the copy are replaced by their quantized values (zeros stay zero, so a
sparse ticket keeps its sparsity). Biases and BatchNorm stay in float.
Activations: every nn.ReLU becomes a QuantReLU: unsigned, `act_bits`, range [0, max] with the
max observed during calibration, then frozen. A module called several times per forward
(torchvision's blocks reuse one ReLU) shares one range: the max over all its call sites.
Rounding passes gradients straight through, so prompts can still be trained through it.
Models without ReLUs (vision transformers) quantize the inputs of every nn.Linear instead
(QuantLinear): signed symmetric per tensor, range max|x| from calibration (unsigned [0, max]
when nothing negative was seen). QAT checkpoints give their own per-layer rules (`rules`):
LSQ step sizes for weights and inputs, StatsQ weights, learned input shifts (lib.models.vit
maps them).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lib.models.backbone import prunable_names


def _bits(name: str, bits: int | None) -> int | None:
    """Validated bit width; None or 32 (float) mean: leave this part unquantized."""
    if bits is None or bits == 32:
        return None
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"{name} must be an int in 2..16, or 32/None for float; got {bits!r}")
    return bits


@torch.no_grad()
def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel quantization of a weight [out, ...] to `bits` bits."""
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().flatten(1).amax(1).clamp_min(torch.finfo(w.dtype).tiny) / qmax
    scale = scale.view(-1, *([1] * (w.ndim - 1)))
    return (w / scale).round().clamp(-qmax, qmax) * scale


@torch.no_grad()
def quantize_weight_step(w: torch.Tensor, bits: int, step: torch.Tensor) -> torch.Tensor:
    """LSQ weights: round(w / step) clamped to [-2**(bits-1), 2**(bits-1) - 1], times step
    (a scalar or one step per output channel)."""
    step = step.to(w).clamp_min(1e-5).reshape(-1, *([1] * (w.ndim - 1)))
    return (w / step).round().clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * step


@torch.no_grad()
def quantize_weight_statsq(w: torch.Tensor, bits: int, clip: float = 2.0) -> torch.Tensor:
    """OFQ's StatsQ: per row scale 2 * mean|w|, clipped to +-clip/2, 2**bits mid-rise levels."""
    scale = 2 * w.abs().flatten(1).mean(1).clamp_min(1e-12).reshape(-1, *([1] * (w.ndim - 1)))
    clipped = (w / scale).clamp(-clip / 2, clip / 2 - 1e-6)
    n = float(2 ** (bits - 1))
    return scale * ((torch.round(clipped * n - 0.5) + 0.5) / n)


class _Observer:
    """Calibration switch shared by the QuantReLUs of one quantized model."""

    def __init__(self, freeze_after_first_batch: bool) -> None:
        self.active = True
        self.freeze_after_first_batch = freeze_after_first_batch
        self.batches = 0


class QuantReLU(nn.Module):
    """ReLU followed by unsigned fake quantization to `bits` bits over [0, max_val]."""

    def __init__(self, bits: int, observer: _Observer, leader: bool = False) -> None:
        super().__init__()
        self.bits = bits
        self.observer = observer
        # The stem ReLU runs first and once per forward: it counts batches for the observer.
        self.leader = leader
        self.register_buffer("max_val", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        obs = self.observer
        if self.leader:
            obs.batches += 1
            if obs.freeze_after_first_batch and obs.batches > 1:
                obs.active = False
        if obs.active:
            self.max_val = torch.maximum(self.max_val, x.detach().max().to(self.max_val))
        # A zero range (nothing observed yet) quantizes everything to ~0 without a branch.
        scale = self.max_val.clamp_min(torch.finfo(x.dtype).tiny) / (2**self.bits - 1)
        q = (x / scale).round().clamp(0, 2**self.bits - 1) * scale
        return x + (q - x).detach()  # straight-through estimator

    def extra_repr(self) -> str:
        return f"bits={self.bits}, max_val={float(self.max_val):.4g}"


def _fake_quant(x: torch.Tensor, step: torch.Tensor, low: int, high: int) -> torch.Tensor:
    q = (x / step).round().clamp(low, high) * step
    return x + (q - x).detach()  # straight-through estimator


class QuantLinear(nn.Linear):
    """nn.Linear whose input is fake-quantized to `bits` (the weight is quantized in place).

    Signed symmetric [-2**(b-1), 2**(b-1) - 1] * step, or unsigned [0, 2**b - 1] * step; the
    step comes from the observed range (max|x| over the calibration batches) unless a QAT
    checkpoint gave one (`step`, a scalar or one per input feature). `shift_before`/
    `shift_after` are OFQ's learned biases around the quantizer (empty: none).
    """

    def __init__(self, linear: nn.Linear, bits: int, observer: _Observer, leader: bool) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)
        self.weight, self.bias = linear.weight, linear.bias
        self.bits, self.observer, self.leader = bits, observer, leader
        self.unsigned: bool | None = None  # None: from the observed minimum
        self.register_buffer("max_abs", torch.zeros(()))
        self.register_buffer("min_val", torch.zeros(()))
        for name in ("step", "shift_before", "shift_after"):
            self.register_buffer(name, torch.zeros(0))

    def _range(self) -> tuple[torch.Tensor, int, int]:
        unsigned = self.unsigned if self.unsigned is not None else bool(self.min_val >= 0)
        half = 2 ** (self.bits - 1)
        low, high = (0, 2**self.bits - 1) if unsigned else (-half, half - 1)
        if self.step.numel():
            return self.step.clamp_min(1e-5), low, high
        return self.max_abs.clamp_min(torch.finfo(torch.float32).tiny) / high, low, high

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the layer sees it: shifted, fake-quantized (then shifted back)."""
        if self.shift_before.numel():
            x = x + self.shift_before
        obs = self.observer
        if self.leader:
            obs.batches += 1
            if obs.freeze_after_first_batch and obs.batches > 1:
                obs.active = False
        if obs.active and not self.step.numel():
            self.max_abs = torch.maximum(self.max_abs, x.detach().abs().max().to(self.max_abs))
            self.min_val = torch.minimum(self.min_val, x.detach().min().to(self.min_val))
        step, low, high = self._range()
        x = _fake_quant(x, step.to(x), low, high)
        return x + self.shift_after if self.shift_after.numel() else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantize_input(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        given = "QAT step" if self.step.numel() else f"max|x|={float(self.max_abs):.4g}"
        return f"{super().extra_repr()}, act_bits={self.bits}, {given}"


ACTIVATION_SITES = ("auto", "relu", "linear")


def _apply_weight_rules(
    model: nn.Module, weight_bits: int | None, rules: Mapping[str, Mapping[str, Any]]
) -> set[str]:
    """Quantize the weights a QAT rule covers; returns their parameter names."""
    done = set()
    for module_name, rule in rules.items():
        module = model.get_submodule(module_name)
        bits = weight_bits or 8
        if "weight_step" in rule:
            module.weight.data = quantize_weight_step(module.weight.data, bits, rule["weight_step"])
        elif rule.get("weight_rule") == "statsq":
            module.weight.data = quantize_weight_statsq(module.weight.data, bits, rule["clip"])
        else:
            continue
        done.add(f"{module_name}.weight")
    return done


def quantize_backbone(
    model: nn.Module,
    weight_bits: int | None,
    act_bits: int | None,
    calibration: Iterable[torch.Tensor] | None = None,
    activations: str = "auto",
    rules: Mapping[str, Mapping[str, Any]] | None = None,
) -> nn.Module:
    """Fake-quantized deep copy of `model` (eval mode). `calibration`: batches of normalized
    inputs whose activation maxima set the ranges; None = ranges from the first forward
    batch of the returned model, then frozen. Bits None or 32 leave that part in float.
    `activations`: relu (outputs of every nn.ReLU), linear (inputs of every nn.Linear), auto
    (relu when the model has ReLUs). `rules`: per-module QAT parameters (module name ->
    weight_step | weight_rule "statsq" + clip, act_step, unsigned, shift_before, shift_after)."""
    weight_bits, act_bits = _bits("weight_bits", weight_bits), _bits("act_bits", act_bits)
    if activations not in ACTIVATION_SITES:
        raise ValueError(
            f"unknown activations {activations!r}; choose one of: {', '.join(ACTIVATION_SITES)}"
        )
    rules = rules or {}
    q = copy.deepcopy(model).eval()
    done = _apply_weight_rules(q, weight_bits, rules)
    if weight_bits is not None:
        params = dict(q.named_parameters())
        for name in prunable_names(q):
            if name not in done:
                params[name].data = quantize_weight(params[name].data, weight_bits)
    if act_bits is None:
        return q
    observer = _Observer(freeze_after_first_batch=calibration is None)
    if activations == "auto":
        has_relu = any(isinstance(m, nn.ReLU) for m in q.modules())
        activations = "relu" if has_relu else "linear"
    if activations == "relu":
        relus = [n for n, m in q.named_modules() if isinstance(m, nn.ReLU)]
        for i, name in enumerate(relus):
            q.set_submodule(name, QuantReLU(act_bits, observer, leader=i == 0))
    else:
        linears = [n for n, m in q.named_modules() if type(m) is nn.Linear]
        for i, name in enumerate(linears):
            new = QuantLinear(q.get_submodule(name), act_bits, observer, leader=i == 0)
            rule = rules.get(name, {})
            for key, buffer in (
                ("act_step", "step"),
                ("shift_before", "shift_before"),
                ("shift_after", "shift_after"),
            ):
                if key in rule:
                    setattr(new, buffer, torch.as_tensor(rule[key], dtype=torch.float32).clone())
            new.unsigned = rule.get("unsigned")
            q.set_submodule(name, new)
    if calibration is not None:
        device = next(q.parameters()).device
        count = 0
        with torch.no_grad():
            for batch in calibration:
                q(batch.to(device))
                count += 1
        if count == 0:
            raise ValueError("calibration has no batches; pass some batches or None")
        observer.active = False
    return q


@torch.no_grad()
def weight_levels(model: nn.Module) -> dict[str, object]:
    """Distinct weight values per output channel of conv/linear weights:
    {"max": int, "mean": float, "layers": {name: max over that layer's channels}}."""
    params = dict(model.named_parameters())
    layers, counts = {}, []
    for name in prunable_names(model):
        rows = params[name].detach().flatten(1).sort(dim=1).values
        distinct = (rows[:, 1:] != rows[:, :-1]).sum(1) + 1
        layers[name] = int(distinct.max())
        counts.append(distinct)
    all_counts = torch.cat(counts).float()
    return {"max": int(all_counts.max()), "mean": float(all_counts.mean()), "layers": layers}
