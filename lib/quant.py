"""Fake-quantized backbones: k-bit per-output-channel weights and k-bit activations.

    from lib.quant import quantize_backbone, weight_levels
    q = quantize_backbone(model, weight_bits=4, act_bits=8, calibration=[x1, x2])
    weight_levels(q)["max"]   # <= 2**4 distinct values in any output channel

Weights: symmetric, per output channel, scale = max|w| / (2**(bits-1) - 1); the conv and
linear weights of the copy are replaced by their quantized values (zeros stay zero, so a
sparse ticket keeps its sparsity). Biases and BatchNorm stay in float.
Activations: every nn.ReLU becomes a QuantReLU: unsigned, `act_bits`, range [0, max] with the
max observed during calibration, then frozen. A module called several times per forward
(torchvision's blocks reuse one ReLU) shares one range: the max over all its call sites.
Rounding passes gradients straight through, so prompts can still be trained through it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from lib.backbone import prunable_names


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


def quantize_backbone(
    model: nn.Module,
    weight_bits: int | None,
    act_bits: int | None,
    calibration: Iterable[torch.Tensor] | None = None,
) -> nn.Module:
    """Fake-quantized deep copy of `model` (eval mode). `calibration`: batches of normalized
    inputs whose activation maxima set the ranges; None = ranges from the first forward
    batch of the returned model, then frozen. Bits None or 32 leave that part in float."""
    weight_bits, act_bits = _bits("weight_bits", weight_bits), _bits("act_bits", act_bits)
    q = copy.deepcopy(model).eval()
    if weight_bits is not None:
        params = dict(q.named_parameters())
        for name in prunable_names(q):
            params[name].data = quantize_weight(params[name].data, weight_bits)
    if act_bits is None:
        return q
    observer = _Observer(freeze_after_first_batch=calibration is None)
    relus = [(n, m) for n, m in q.named_modules() if isinstance(m, nn.ReLU)]
    for i, (name, _) in enumerate(relus):
        q.set_submodule(name, QuantReLU(act_bits, observer, leader=i == 0))
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
