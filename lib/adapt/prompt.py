"""Input-space visual prompts: ILM-VP's expansive prompt and Bahng et al.'s pad prompter.

Both take images in [0, 1] (the project convention) and return images normalized with the
source model's mean/std, ready for the frozen backbone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from lib.models.backbone import Normalize as _Normalize

Normalize = tuple[tuple[float, float, float], tuple[float, float, float]] | None

# learn_scale bounds, as a fraction of the source side: 0.1 admits the paper's 32-in-224
# (0.14); 0.9 keeps a prompt border of at least 5% of the side on every edge.
SCALE_BOUNDS: tuple[float, float] = (0.1, 0.9)


def pad_widths(source_size: int, target_size: int) -> tuple[int, int]:
    """(left/top, right/bottom) zero padding; ILM-VP gives the odd pixel to the left/top."""
    return (source_size - target_size + 1) // 2, (source_size - target_size) // 2


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear resize of a batch [N, 3, h, w] to [N, 3, size, size] (no-op when already there)."""
    if x.shape[-2:] == (size, size):
        return x
    # antialias only matters when shrinking; it approximates the PIL resize ILM-VP used.
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _check_batch(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W]; got shape {tuple(x.shape)}")


class ExpansiveVisualPrompt(nn.Module):
    """ILM-VP prompt: resize to target_size, zero-pad to source_size, add sigmoid(delta) * mask.

    The mask is 1 on the border and 0 where the image sits, so the prompt never overlaps the
    image and the sum stays in [0, 1] without clamping (ILM-VP does not clamp either).
    `learn_scale=True` (AutoVP-style) learns the inner image size as a fraction of the source
    side within `scale_bounds` (default SCALE_BOUNDS = (0.1, 0.9)), starting at
    target_size / source_size: the image is placed with affine_grid/grid_sample and the mask
    is 1 - the image's (soft, bilinear) footprint, so both follow the scale differentiably.
    `inner_mask` ([target_size, target_size] of 0/1, fixed scale only) also opens the prompt
    inside the image where it is 1: the paper's ABIDE mask is `lower_triangle_mask(200)`.
    """

    def __init__(
        self,
        source_size: int,
        target_size: int,
        normalize: Normalize = (IMAGENET_MEAN, IMAGENET_STD),
        learn_scale: bool = False,
        scale_bounds: tuple[float, float] = SCALE_BOUNDS,
        inner_mask: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not 0 < target_size <= source_size:
            raise ValueError(f"target_size {target_size} must be in 1..source_size ({source_size})")
        if inner_mask is not None and (
            learn_scale or tuple(inner_mask.shape) != (target_size, target_size)
        ):
            raise ValueError(
                f"inner_mask must be [{target_size}, {target_size}] with learn_scale False; got "
                f"{tuple(inner_mask.shape)} with learn_scale {learn_scale}"
            )
        self.source_size, self.target_size = source_size, target_size
        self.l_pad, self.r_pad = pad_widths(source_size, target_size)
        self.learn_scale = learn_scale
        self.delta = nn.Parameter(torch.zeros(3, source_size, source_size))
        mask = torch.ones(3, source_size, source_size)
        inner = slice(self.l_pad, self.l_pad + target_size)
        mask[:, inner, inner] = 0 if inner_mask is None else inner_mask.to(mask.dtype)
        # With learn_scale the mask is refreshed (detached) on every forward/pattern call.
        self.register_buffer("mask", mask)
        self.normalize = _Normalize(*normalize) if normalize is not None else nn.Identity()
        if learn_scale:
            lo, hi = scale_bounds
            init = target_size / source_size
            if not 0 < lo < init < hi <= 1:
                raise ValueError(
                    f"learn_scale needs scale_bounds {scale_bounds} to bracket "
                    f"target_size/source_size = {init:.3f} strictly, within (0, 1]"
                )
            self.scale_bounds = (float(lo), float(hi))
            frac = (init - lo) / (hi - lo)
            self.scale_logit = nn.Parameter(torch.tensor(math.log(frac / (1 - frac))))

    @property
    def scale(self) -> Tensor:
        """Inner image side as a fraction of the source side (fixed unless learn_scale)."""
        if not self.learn_scale:
            return torch.tensor(self.target_size / self.source_size)
        lo, hi = self.scale_bounds
        return lo + (hi - lo) * torch.sigmoid(self.scale_logit)

    def _place(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image on the source canvas and the border mask [1 or N, 3, S, S]."""
        if not self.learn_scale:
            pads = (self.l_pad, self.r_pad, self.l_pad, self.r_pad)
            return F.pad(x, pads, value=0.0), self.mask.unsqueeze(0)
        # Output coordinate u samples the image at u / scale: the image fills |u| <= scale.
        # At scale == target/source with an even size difference this reproduces F.pad exactly.
        inv = 1.0 / self.scale
        zero = torch.zeros_like(inv)
        theta = torch.stack([torch.stack([inv, zero, zero]), torch.stack([zero, inv, zero])])
        n, size = x.shape[0], self.source_size
        grid = F.affine_grid(theta.expand(n, 2, 3), [n, 3, size, size], align_corners=False)
        canvas = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        ones = torch.ones(1, 1, *x.shape[-2:], device=x.device, dtype=x.dtype)
        footprint = F.grid_sample(ones, grid[:1], mode="bilinear", align_corners=False)
        mask = (1.0 - footprint).expand(1, 3, size, size)
        with torch.no_grad():
            self.mask.copy_(mask[0])
        return canvas, mask

    def pattern(self) -> Tensor:
        """The additive prompt sigmoid(delta) * mask [3, S, S], for visualization."""
        if self.learn_scale:
            blank = torch.zeros(1, 3, self.target_size, self.target_size, device=self.delta.device)
            return torch.sigmoid(self.delta) * self._place(blank)[1][0]
        return torch.sigmoid(self.delta) * self.mask

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x)
        canvas, mask = self._place(resize(x, self.target_size))
        return self.normalize(canvas + torch.sigmoid(self.delta) * mask)


def lower_triangle_mask(size: int) -> Tensor:
    """1 on and below the diagonal: the paper's ABIDE.get_mask() (data/abide.py) for size 200,
    where the connectivity image fills the strict upper triangle."""
    return torch.tril(torch.ones(size, size))


class PadPrompter(nn.Module):
    """Bahng et al.'s pad prompt: a learnable frame of width `pad` added onto the full image.

    Unlike the expansive prompt the image is kept at source size and the frame overlaps its
    border. delta starts at zero (Bahng et al. used randn) and is added in [0, 1] pixel units
    before normalization (they added it after normalization).
    """

    def __init__(
        self,
        source_size: int,
        pad: int,
        normalize: Normalize = (IMAGENET_MEAN, IMAGENET_STD),
    ) -> None:
        super().__init__()
        if not 0 < 2 * pad < source_size:
            raise ValueError(f"pad {pad} must be in 1..{(source_size - 1) // 2} for {source_size}")
        self.source_size, self.pad = source_size, pad
        self.delta = nn.Parameter(torch.zeros(3, source_size, source_size))
        mask = torch.ones(3, source_size, source_size)
        mask[:, pad : source_size - pad, pad : source_size - pad] = 0
        self.register_buffer("mask", mask)
        self.normalize = _Normalize(*normalize) if normalize is not None else nn.Identity()

    def pattern(self) -> Tensor:
        """The additive frame delta * mask [3, S, S]."""
        return self.delta * self.mask

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x)
        return self.normalize(resize(x, self.source_size) + self.pattern())


# ---------------------------------------------------------------- SMM (Cai et al., ICML 2024)

# The reference's patch sizes (tmlr-group/SMM instance_model.py): the mask is one value per
# patch of this side, so the generator halves the resolution log2(patch) times.
SMM_PATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16)
SMM_PAPER_PATCH, SMM_PAPER_SIZE = 8, 224  # instancewise_vp.py: --patch_size 8 at 224 px


def smm_patch_size(source_size: int) -> int:
    """The paper's patch scaled to the source: the power of two in SMM_PATCH_SIZES nearest (in
    log scale) to 8 * source_size / 224, so the mask keeps about the paper's 28 patches per
    side (224 px: 8, 28x28 patches; 32 px: 1, 32x32)."""
    target = SMM_PAPER_PATCH * source_size / SMM_PAPER_SIZE
    return min(SMM_PATCH_SIZES, key=lambda p: (abs(math.log2(p / target)), p))


class MaskGenerator(nn.Module):
    """SMM's lightweight mask ConvNet f_mask (AttributeNet, 5 layers, 3 channels).

    As tmlr-group/SMM instance_model.py: 3x3 convolutions 3->8->16->32->64 each with BN and
    ReLU, a 2x2 max-pool after the first log2(patch_size) of them, then a 3x3 convolution
    64->3 with no activation: one unbounded mask value per patch and color channel,
    [N, 3, S / patch, S / patch].
    """

    def __init__(self, patch_size: int = SMM_PAPER_PATCH) -> None:
        super().__init__()
        if patch_size not in SMM_PATCH_SIZES:
            raise ValueError(
                f"unknown SMM patch_size {patch_size}; choose one of: "
                f"{', '.join(map(str, SMM_PATCH_SIZES))}"
            )
        self.patch_size = patch_size
        pools = int(math.log2(patch_size))
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(((3, 8), (8, 16), (16, 32), (32, 64))):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            if i < pools:
                layers.append(nn.MaxPool2d(2, 2))
        layers.append(nn.Conv2d(64, 3, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SampleSpecificMaskPrompt(nn.Module):
    """SMM: resize to the source size, normalize, add delta * f_mask(image) upsampled per patch.

    As tmlr-group/SMM (instance_model.py InstancewiseVisualPrompt, instancewise_vp.py): the
    target image is resized to the full source size (no padding), normalized, and the shared
    pattern delta [3, S, S] (zeros at start, no sigmoid) is multiplied by the sample's mask,
    whose patch values are repeated over patch x patch pixels ("patch-wise interpolation",
    nearest), then added: x + delta * mask(x). Unlike the expansive prompt the prompt overlaps
    the image everywhere; the mask decides where and how strongly. The reference trains delta
    and f_mask with two Adam optimizers at lr 0.01 and the same MultiStepLR (x0.1 at 50%, 72%);
    Adam is per-parameter, so one Adam over both at the run's lr is the same update.
    """

    def __init__(
        self,
        source_size: int,
        patch_size: int | None = None,
        normalize: Normalize = (IMAGENET_MEAN, IMAGENET_STD),
    ) -> None:
        super().__init__()
        patch_size = smm_patch_size(source_size) if patch_size is None else patch_size
        if patch_size not in SMM_PATCH_SIZES or source_size % patch_size:
            raise ValueError(
                f"SMM patch_size {patch_size} must be one of {SMM_PATCH_SIZES} and divide the "
                f"source size {source_size}"
            )
        self.source_size, self.patch_size = source_size, patch_size
        self.delta = nn.Parameter(torch.zeros(3, source_size, source_size))
        self.generator = MaskGenerator(patch_size)
        self.normalize = _Normalize(*normalize) if normalize is not None else nn.Identity()

    def mask(self, x: Tensor) -> Tensor:
        """Per-sample mask [N, 3, S, S] of the normalized source-size images `x`."""
        patches = self.generator(x)
        return patches.repeat_interleave(self.patch_size, 2).repeat_interleave(self.patch_size, 3)

    def pattern(self) -> Tensor:
        """The shared pattern delta [3, S, S], for visualization (the mask is per sample)."""
        return self.delta

    def forward(self, x: Tensor) -> Tensor:
        _check_batch(x)
        x = self.normalize(resize(x, self.source_size))
        return x + self.delta * self.mask(x)


PROMPTS: tuple[str, ...] = ("expansive", "pad", "smm")


def build_prompt(
    kind: str,
    source_size: int,
    target_size: int,
    normalize: Normalize = (IMAGENET_MEAN, IMAGENET_STD),
    learn_scale: bool = False,
    inner_mask: Tensor | None = None,
    pad: int = 30,
) -> nn.Module:
    """The visual prompt a VP run uses, by name (PROMPTS)."""
    if kind == "expansive":
        return ExpansiveVisualPrompt(
            source_size, target_size, normalize, learn_scale, inner_mask=inner_mask
        )
    if kind == "pad":
        return PadPrompter(source_size, pad, normalize)
    if kind == "smm":
        return SampleSpecificMaskPrompt(source_size, None, normalize)
    raise ValueError(f"unknown prompt {kind!r}; choose one of: {', '.join(PROMPTS)}")


def prompt_hyperparameters(prompt: nn.Module) -> dict[str, int | str]:
    """What a record says about the prompt's fixed hyperparameters (SMM: patch, generator)."""
    if isinstance(prompt, SampleSpecificMaskPrompt):
        return {"patch_size": prompt.patch_size, "generator": "smm-5-layer-3-channel"}
    return {}


class AdditivePrompt(PadPrompter):
    """ilm_clip.py's AdditiveVisualPrompt: a learnable frame of width `pad`, zero at start,
    added (unbounded) to the normalized image at the source size."""

    def forward(self, x: Tensor) -> Tensor:
        return self.normalize(resize(x, self.source_size)) + self.pattern()
