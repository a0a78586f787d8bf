"""Visual prompts: geometry, border-only prompt, normalization, learnable scale."""

from __future__ import annotations

import pytest
import torch

from lib.adapt.prompt import ExpansiveVisualPrompt, PadPrompter, pad_widths
from lib.models.backbone import IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.parametrize("source,target", [(32, 24), (32, 23), (224, 128), (224, 32)])
def test_expansive_shapes_and_padding(source: int, target: int) -> None:
    vp = ExpansiveVisualPrompt(source, target)
    out = vp(torch.rand(2, 3, 40, 40))  # any input size: resized to target first
    assert out.shape == (2, 3, source, source)
    left, right = pad_widths(source, target)
    assert left + target + right == source and left - right in (0, 1)  # odd pixel: left/top
    assert vp.delta.shape == (3, source, source) and (vp.delta == 0).all()
    inner = slice(left, left + target)
    assert (vp.mask[:, inner, inner] == 0).all()
    assert vp.mask.sum() == 3 * (source**2 - target**2)


def test_odd_difference_puts_extra_pixel_top_left() -> None:
    vp = ExpansiveVisualPrompt(8, 5, normalize=None)
    assert pad_widths(8, 5) == (2, 1)
    rows = vp.mask[0].sum(dim=1)  # border rows are all ones
    assert rows.tolist() == [8, 8, 3, 3, 3, 3, 3, 8]


def test_image_region_ignores_delta() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 20, 20)
    vp = ExpansiveVisualPrompt(32, 20)
    reference = vp(x).detach()
    with torch.no_grad():
        vp.delta.normal_(0, 3)
    out = vp(x)
    left, _ = pad_widths(32, 20)
    inner = (..., slice(left, left + 20), slice(left, left + 20))
    assert torch.equal(out[inner], reference[inner])
    assert not torch.allclose(out, reference)  # the border did change
    out[inner].sum().backward()
    assert (vp.delta.grad == 0).all()
    vp.delta.grad = None
    out = vp(x)
    (out * (1 - vp.mask)).sum().backward()  # image region only, through the full output
    assert (vp.delta.grad == 0).all()
    vp.delta.grad = None
    vp(x).sum().backward()
    assert (vp.delta.grad[vp.mask.bool()] != 0).all()


def test_zero_delta_border_is_half_and_image_unchanged() -> None:
    x = torch.rand(2, 3, 24, 24)
    vp = ExpansiveVisualPrompt(32, 24, normalize=None)
    out = vp(x)
    border = vp.mask.bool().expand_as(out)
    assert torch.allclose(out[border], torch.tensor(0.5))
    assert torch.equal(out[:, :, 4:28, 4:28], x)  # already at target size: no resampling
    assert torch.allclose(vp.pattern(), 0.5 * vp.mask)


def test_normalization_applied() -> None:
    x = torch.rand(2, 3, 24, 24)
    plain = ExpansiveVisualPrompt(32, 24, normalize=None)(x)
    normed = ExpansiveVisualPrompt(32, 24)(x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normed, (plain - mean) / std)
    custom = ExpansiveVisualPrompt(32, 24, normalize=((0.5,) * 3, (0.25,) * 3))(x)
    torch.testing.assert_close(custom, (plain - 0.5) / 0.25)


def test_imagenet_constants() -> None:
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


def test_resize_is_bilinear_to_target() -> None:
    x = torch.rand(1, 3, 48, 48)
    vp = ExpansiveVisualPrompt(32, 24, normalize=None)
    expected = torch.nn.functional.interpolate(
        x, size=(24, 24), mode="bilinear", align_corners=False, antialias=True
    )
    torch.testing.assert_close(vp(x)[:, :, 4:28, 4:28], expected)


def test_bad_sizes_rejected() -> None:
    with pytest.raises(ValueError, match="target_size 40"):
        ExpansiveVisualPrompt(32, 40)
    with pytest.raises(ValueError, match="expected images"):
        ExpansiveVisualPrompt(32, 24)(torch.rand(3, 24, 24))
    with pytest.raises(ValueError, match="scale_bounds"):
        ExpansiveVisualPrompt(32, 31, learn_scale=True)  # 0.97 is above the 0.9 bound


def test_learn_scale_matches_fixed_at_init() -> None:
    # Even size difference: the grid-sampled placement lands exactly on pixels.
    torch.manual_seed(0)
    fixed = ExpansiveVisualPrompt(32, 24, normalize=None)
    learned = ExpansiveVisualPrompt(32, 24, normalize=None, learn_scale=True)
    with torch.no_grad():
        fixed.delta.normal_()
        learned.delta.copy_(fixed.delta)
    x = torch.rand(2, 3, 24, 24)
    torch.testing.assert_close(learned(x), fixed(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(learned.mask, fixed.mask, atol=1e-5, rtol=0)
    assert learned.scale.item() == pytest.approx(0.75)


def test_learn_scale_gradient_and_mask_follow_scale() -> None:
    torch.manual_seed(0)
    vp = ExpansiveVisualPrompt(32, 16, learn_scale=True)
    x = torch.rand(2, 3, 16, 16)
    out = vp(x)
    (out**2).mean().backward()
    assert vp.scale_logit.grad is not None and vp.scale_logit.grad.abs() > 0
    lo, hi = vp.scale_bounds
    assert (lo, hi) == (0.1, 0.9)
    with torch.no_grad():
        vp.scale_logit.fill_(3.0)  # grow the image: less border
    grown = vp.scale.item()
    assert 0.5 < grown < hi
    vp(x)
    border_fraction = vp.mask[0].mean().item()
    assert border_fraction == pytest.approx(1 - grown**2, abs=0.05)
    assert torch.allclose(vp.pattern(), torch.sigmoid(vp.delta) * vp.mask)
    with torch.no_grad():
        vp.scale_logit.fill_(-50.0)
    assert vp.scale.item() == pytest.approx(lo)


def test_pad_prompter() -> None:
    pp = PadPrompter(32, 4, normalize=None)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(pp(x), x)  # zero init: identity before training
    assert pp.mask.sum() == 3 * (32**2 - 24**2)
    with torch.no_grad():
        pp.delta.normal_()
    out = pp(x)
    assert torch.equal(out[:, :, 4:28, 4:28], x[:, :, 4:28, 4:28])
    assert not torch.equal(out[:, :, :4], x[:, :, :4])
    assert PadPrompter(32, 4)(torch.rand(1, 3, 20, 20)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="pad 16"):
        PadPrompter(32, 16)
