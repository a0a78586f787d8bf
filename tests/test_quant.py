"""Fake quantization: weight levels per channel, sparsity kept, W8A8 close to float."""

from __future__ import annotations

import pytest
import torch

from lib.models.backbone import Mask, apply_mask, create_backbone, sparsity, split_features
from lib.models.prune import random_prune
from lib.models.quant import QuantReLU, quantize_backbone, quantize_weight, weight_levels


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_backbone("cifar_resnet_20", num_classes=10).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
    return m


def _batches(n: int = 3, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 3, 32, 32, generator=g) for _ in range(n)]


def test_4bit_weights_have_at_most_16_values_per_channel(model) -> None:
    q = quantize_backbone(model, weight_bits=4, act_bits=None)
    levels = weight_levels(q)
    assert levels["max"] <= 16
    assert weight_levels(model)["max"] > 16  # the float model has many more
    w = torch.randn(5, 7)
    assert (quantize_weight(w, 3) - w).abs().max() <= w.abs().max() / 3 / 2 + 1e-6
    assert model.conv.weight.unique().numel() > 16  # the original is untouched


def test_quantization_keeps_ticket_zeros(model) -> None:
    mask = random_prune(Mask.ones_like(model), 0.8, seed=0)
    sparse = apply_mask(create_backbone("cifar_resnet_20"), mask)
    q = quantize_backbone(sparse, weight_bits=4, act_bits=4, calibration=_batches(1))
    params = dict(q.named_parameters())
    for name, m in mask.items():
        assert bool((params[name][m == 0] == 0).all()), name
    # Small survivors may round to zero too, so the quantized ticket is at least as sparse.
    assert sparsity(q) >= sparsity(sparse) == pytest.approx(0.8, abs=1e-4)


def test_w8a8_output_close_to_float(model) -> None:
    q = quantize_backbone(model, weight_bits=8, act_bits=8, calibration=_batches())
    x = _batches(1, seed=5)[0]
    with torch.no_grad():
        ref, out = model(x), q(x)
        coarse = quantize_backbone(model, 3, 3, calibration=_batches())(x)
    err = (out - ref).norm() / ref.norm()
    assert err < 0.05
    assert (coarse - ref).norm() / ref.norm() > err  # fewer bits, larger error
    relus = [m for m in q.modules() if isinstance(m, QuantReLU)]
    assert len(relus) == 1 + 2 * 9 and all(float(r.max_val) > 0 for r in relus)


def test_ranges_from_first_batch_then_frozen(model) -> None:
    q = quantize_backbone(model, weight_bits=None, act_bits=8)
    first, second = _batches(2)
    with torch.no_grad():
        q(first)
        ranges = [float(m.max_val) for m in q.modules() if isinstance(m, QuantReLU)]
        q(second * 10)
    assert ranges[0] > 0
    assert [float(m.max_val) for m in q.modules() if isinstance(m, QuantReLU)] == ranges


def test_torchvision_resnet_with_reused_relu() -> None:
    torch.manual_seed(0)
    model = create_backbone("resnet18", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    q = quantize_backbone(model, weight_bits=8, act_bits=8, calibration=[x])
    assert isinstance(q.layer1[0].relu, QuantReLU)  # one module, called twice per block
    features, head = split_features(q)
    with torch.no_grad():
        assert torch.allclose(head(features(x)), q(x))
        assert (q(x) - model(x)).norm() / model(x).norm() < 0.1
    x.requires_grad_(True)
    q(x).sum().backward()  # straight-through: prompts can learn through a quantized model
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bits_validation(model) -> None:
    with pytest.raises(ValueError, match="weight_bits must be an int in 2..16.*got 1"):
        quantize_backbone(model, 1, 8)
    with pytest.raises(ValueError, match="calibration has no batches"):
        quantize_backbone(model, 8, 8, calibration=[])
    same = quantize_backbone(model, 32, 32)
    assert torch.equal(same.conv.weight, model.conv.weight)
