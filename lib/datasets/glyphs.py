"""Procedural glyph corpus: letters and digits drawn with matplotlib's fonts (the mini "ImageNet").

    python -m lib.datasets.glyphs --grid docs/glyphs.png   # a labelled grid of samples
    python -m lib.datasets.glyphs                          # render and cache both default splits

Train and test use disjoint fonts (TEST_FONTS are held out), so test accuracy measures
generalisation to unseen type faces. Same parameters -> same bytes; results are cached
under `{root}/glyphs/<param-hash>.pt`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import string
import warnings
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from fontTools import agl
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

from lib.core.utils import atomic_torch_save, data_root, progress

# Digits first, so the class index of digit d is d (ILM's mapping-quality metric relies on it).
# I and O are left out: in many fonts they are indistinguishable from 1, l and 0.
GLYPH_CLASSES: tuple[str, ...] = (
    tuple(string.digits)
    + tuple(c for c in string.ascii_uppercase if c not in "IO")
    + tuple("abdefghnqrt")
)
SPLITS = ("train", "test")
SIZE = 32  # output images are 3 x SIZE x SIZE uint8
# One font per family, held out for the test split.
TEST_FONTS = (
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSerif-Bold.ttf",
    "STIXGeneralItalic.ttf",
    "cmss10.ttf",
)
VERSION = 1  # bump when rendering changes: it is part of the cache key

# Rendering and augmentation. Glyphs are drawn on a 2x canvas and pooled down, which gives
# smooth edges; geometry is in grid_sample's normalised coordinates (the canvas spans [-1, 1]).
CANVAS = 2 * SIZE
CAP_HEIGHT = 34  # canvas pixels of an "H" before scaling: ~17 px at 32, like MNIST's digits
SCALE = (0.7, 1.15)
ROTATION_DEG = 20.0
SHEAR = 0.2
SHIFT = 0.15
ELASTIC_P, ELASTIC_AMP = 0.5, 0.06  # mild smooth warps on half of the images
STROKE_WIDTHS, STROKE_P = (0, 1, 2), (0.6, 0.25, 0.15)  # extra outline (canvas px): bolder
MNIST_STYLE_P = 0.2  # white strokes on black, like MNIST
MIN_CONTRAST = 0.35  # luminance gap between foreground and background colours
NOISE_STD = 0.04  # per-image noise std drawn from [0, NOISE_STD]
CHUNK = 1024  # images warped per batch (fixed: the random stream depends on it)


def font_dir() -> Path:
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _names_char(glyph_name: str, char: str) -> bool:
    """Whether a glyph name denotes `char` ("A", "zero", "sevenoldstyle", "a.alt", "uni0041")."""
    return agl.toUnicode(glyph_name.split(".")[0].removesuffix("oldstyle")) == char


def _ink(font: ImageFont.FreeTypeFont, char: str, stroke: int = 0) -> np.ndarray:
    """The glyph's coverage cropped to its ink (uint8 2-D array; empty when nothing is drawn)."""
    size = int(font.size) * 3 + 2 * stroke
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).text(
        (size // 3, size // 6), char, font=font, fill=255, stroke_width=stroke, stroke_fill=255
    )
    a = np.asarray(img)
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    if rows.size == 0:
        return np.zeros((0, 0), np.uint8)
    return a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


@lru_cache
def usable_fonts(classes: tuple[str, ...] = GLYPH_CLASSES) -> tuple[Path, ...]:
    """Fonts of matplotlib's ttf folder that draw every class as its own visible glyph, sorted.

    Symbol fonts (cmex10, cmsy10, STIXSize*) map ASCII code points to other symbols and
    LastResort draws one placeholder for everything: the glyph names in the cmap catch the
    first, a render check (non-empty and pairwise distinct) catches the rest.
    """
    fonts = []
    for path in sorted(font_dir().glob("*.ttf")):
        cmap = TTFont(path, lazy=True).getBestCmap() or {}
        if not all(ord(c) in cmap and _names_char(cmap[ord(c)], c) for c in classes):
            continue
        inks = [_ink(ImageFont.truetype(path, 24), c) for c in classes]
        distinct = {(a.shape, a.tobytes()) for a in inks}
        if all(a.size and a.max() > 0 for a in inks) and len(distinct) == len(classes):
            fonts.append(path)
    return tuple(fonts)


def split_fonts(split: str) -> tuple[Path, ...]:
    """The fonts a split draws from: TEST_FONTS for "test", every other usable font for "train"."""
    _check_split(split)
    fonts = tuple(p for p in usable_fonts() if (p.name in TEST_FONTS) == (split == "test"))
    if not fonts:
        raise RuntimeError(f"no usable {split} fonts in {font_dir()} (held out: {TEST_FONTS})")
    return fonts


@lru_cache(maxsize=64)
def _font(path: Path) -> ImageFont.FreeTypeFont:
    """The font at the size whose "H" is CAP_HEIGHT canvas pixels tall (fonts differ per em)."""
    probe = _ink(ImageFont.truetype(path, 100), "H").shape[0]
    return ImageFont.truetype(path, max(8, round(100 * CAP_HEIGHT / probe)))


@lru_cache(maxsize=8192)
def _glyph(path: Path, char: str, stroke: int) -> np.ndarray:
    """Coverage in [0, 1] on the CANVAS x CANVAS canvas, ink centred (clipped if larger)."""
    ink = _ink(_font(path), char, stroke).astype(np.float32) / 255
    out = np.zeros((CANVAS, CANVAS), np.float32)
    h, w = min(ink.shape[0], CANVAS), min(ink.shape[1], CANVAS)
    top, left = (CANVAS - h) // 2, (CANVAS - w) // 2
    out[top : top + h, left : left + w] = ink[:h, :w]
    return out


def _warp(masks: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random rotation, scale, shear, shift and elastic warp on [B, 1, CANVAS, CANVAS] -> SIZE."""
    n = masks.shape[0]
    angle = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG, n))
    scale = rng.uniform(*SCALE, n)
    shear = rng.uniform(-SHEAR, SHEAR, n)
    shift = rng.uniform(-SHIFT, SHIFT, (n, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shearing = np.tile(np.eye(2), (n, 1, 1))
    shearing[:, 0, 1] = shear
    forward = rotation @ shearing * scale[:, None, None]  # glyph -> image
    # affine_grid maps output pixels to input pixels: the inverse of the forward transform.
    inverse = np.linalg.inv(forward)
    theta = np.concatenate([inverse, -inverse @ shift[:, :, None]], axis=2)
    grid = F.affine_grid(torch.tensor(theta, dtype=torch.float32), list(masks.shape), False)
    elastic = (rng.random(n) < ELASTIC_P) * rng.uniform(0, ELASTIC_AMP, n)
    field = rng.normal(size=(n, 2, 4, 4)) * elastic[:, None, None, None]
    field = torch.tensor(field, dtype=torch.float32)
    grid = grid + F.interpolate(field, size=masks.shape[-2:], mode="bicubic").permute(0, 2, 3, 1)
    warped = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(warped, CANVAS // SIZE)


def _colors(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background RGB in [0, 1] whose luminances differ by >= MIN_CONTRAST."""
    luma = np.array([0.299, 0.587, 0.114])
    fg, bg = rng.random((n, 3)), rng.random((n, 3))
    low = np.abs((fg - bg) @ luma) < MIN_CONTRAST
    while low.any():  # redraw only the low-contrast pairs; deterministic for a given rng
        k = int(low.sum())
        fg[low], bg[low] = rng.random((k, 3)), rng.random((k, 3))
        low = np.abs((fg - bg) @ luma) < MIN_CONTRAST
    mnist = rng.random(n) < MNIST_STYLE_P
    k = int(mnist.sum())
    fg[mnist] = rng.uniform(0.85, 1.0, (k, 1))
    bg[mnist] = rng.uniform(0.0, 0.1, (k, 1))
    return fg, bg


def render_glyphs(
    split: str, num_classes: int = len(GLYPH_CLASSES), per_class: int = 400, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render (uncached) `per_class` images of each of the first `num_classes` glyph classes."""
    _check_args(split, num_classes, per_class, seed)
    fonts = split_fonts(split)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    labels = np.repeat(np.arange(num_classes), per_class)
    n = len(labels)
    font_ids = rng.integers(len(fonts), size=n)
    strokes = rng.choice(STROKE_WIDTHS, size=n, p=STROKE_P)
    images = torch.empty((n, 3, SIZE, SIZE), dtype=torch.uint8)
    starts = range(0, n, CHUNK)
    for start in progress(starts, desc=f"glyphs {split}", total=len(starts), leave=False):
        idx = range(start, min(start + CHUNK, n))
        masks = np.stack(
            [_glyph(fonts[font_ids[i]], GLYPH_CLASSES[labels[i]], int(strokes[i])) for i in idx]
        )
        ink = _warp(torch.from_numpy(masks)[:, None], rng).numpy()  # [b, 1, SIZE, SIZE]
        fg, bg = _colors(rng, len(idx))
        img = bg[:, :, None, None] * (1 - ink) + fg[:, :, None, None] * ink
        noise = rng.normal(size=img.shape) * rng.uniform(0, NOISE_STD, (len(idx), 1, 1, 1))
        img = np.clip(np.rint((img + noise) * 255), 0, 255).astype(np.uint8)
        images[start : start + len(idx)] = torch.from_numpy(img)
    return images, torch.from_numpy(labels).long()


def cache_path(
    split: str, num_classes: int, per_class: int, seed: int, root: str | Path | None = None
) -> Path:
    """Where glyph_tensors caches these parameters (the hash covers fonts and VERSION too)."""
    key = dict(
        version=VERSION,
        split=split,
        classes=list(GLYPH_CLASSES[:num_classes]),
        per_class=per_class,
        seed=seed,
        fonts=[p.name for p in split_fonts(split)],
    )
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(data_root() if root is None else root) / "glyphs" / f"{digest}.pt"


def glyph_tensors(
    split: str,
    num_classes: int = len(GLYPH_CLASSES),
    per_class: int = 400,
    seed: int = 0,
    root: str | Path | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 [N, 3, 32, 32], LongTensor [N]) for a split, rendered once then loaded from cache."""
    _check_args(split, num_classes, per_class, seed)
    path = cache_path(split, num_classes, per_class, seed, root)
    if path.is_file():
        try:
            cached = torch.load(path, weights_only=True)
            return cached["images"], cached["labels"]
        except Exception as error:  # noqa: BLE001 - derived data: a damaged cache is re-rendered
            warnings.warn(f"{path}: unusable glyph cache ({error}); rendering again", stacklevel=2)
    images, labels = render_glyphs(split, num_classes, per_class, seed)
    atomic_torch_save({"images": images, "labels": labels}, path)
    return images, labels


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")


def _check_args(split: str, num_classes: int, per_class: int, seed: int) -> None:
    _check_split(split)
    if not 2 <= num_classes <= len(GLYPH_CLASSES):
        raise ValueError(f"num_classes={num_classes}; choose 2..{len(GLYPH_CLASSES)}")
    if per_class < 1:
        raise ValueError(f"per_class={per_class}; choose a positive number")
    if seed < 0:
        raise ValueError(f"seed={seed}; choose a non-negative int")


def save_grid(
    path: str | Path, rows: int = 8, cols: int = 12, split: str = "train", seed: int = 0
) -> Path:
    """A PNG grid of random samples, each labelled with its class, for a quick visual check."""
    per_class = math.ceil(rows * cols / len(GLYPH_CLASSES))
    images, labels = render_glyphs(split, per_class=per_class, seed=seed)
    pick = np.random.default_rng(seed).permutation(len(labels))[: rows * cols]
    zoom, band = 3, 16
    tile = SIZE * zoom
    sheet = Image.new("RGB", (cols * (tile + 4) + 4, rows * (tile + band + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    label_font = ImageFont.truetype(font_dir() / "DejaVuSans.ttf", 12)
    for k, i in enumerate(pick):
        x, y = 4 + (k % cols) * (tile + 4), 4 + (k // cols) * (tile + band + 4)
        img = Image.fromarray(images[i].permute(1, 2, 0).numpy()).resize(
            (tile, tile), Image.NEAREST
        )
        sheet.paste(img, (x, y))
        draw.text(
            (x + tile // 2, y + tile + 1), GLYPH_CLASSES[labels[i]], "black", label_font, "ma"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # An adaptive palette keeps the committed PNG small; the samples stay recognisable.
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=Path, help="write a sample grid PNG here and stop")
    parser.add_argument("--split", choices=SPLITS, default="train", help="split shown by --grid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=None, help="cache root (default: data_root)")
    args = parser.parse_args(argv)
    if args.grid:
        print(save_grid(args.grid, split=args.split, seed=args.seed))
        return
    for split, per_class in (("train", 400), ("test", 100)):
        images, _ = glyph_tensors(split, per_class=per_class, seed=args.seed, root=args.root)
        path = cache_path(split, len(GLYPH_CLASSES), per_class, args.seed, args.root)
        print(f"{split}: {len(images)} images -> {path}")


if __name__ == "__main__":
    main()
