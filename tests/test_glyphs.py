"""The procedural glyph corpus: classes, fonts, determinism, caching, the sample grid."""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch
from PIL import Image

from lib.datasets import glyphs
from lib.datasets.glyphs import GLYPH_CLASSES, glyph_tensors, render_glyphs


def test_classes_digits_first_without_ambiguous_letters() -> None:
    assert len(GLYPH_CLASSES) == 45 and len(set(GLYPH_CLASSES)) == 45
    assert GLYPH_CLASSES[:10] == tuple(string.digits)
    assert "I" not in GLYPH_CLASSES and "O" not in GLYPH_CLASSES
    assert set(GLYPH_CLASSES[10:34]) == set(string.ascii_uppercase) - {"I", "O"}


def test_fonts_exclude_symbol_fonts_and_hold_out_test_fonts() -> None:
    names = {p.name for p in glyphs.usable_fonts()}
    assert {"DejaVuSans.ttf", "cmr10.ttf", "STIXGeneral.ttf"} <= names
    # These map ASCII code points to symbols or to one placeholder glyph.
    assert not names & {"cmex10.ttf", "cmsy10.ttf", "LastResortHE-Regular.ttf"}
    assert not any(n.startswith(("STIXSiz", "STIXNonUni")) for n in names)
    train, test = glyphs.split_fonts("train"), glyphs.split_fonts("test")
    assert not set(train) & set(test)
    assert {p.name for p in test} == set(glyphs.TEST_FONTS)
    assert set(train) | set(test) == set(glyphs.usable_fonts())


def test_render_shapes_labels_and_contrast() -> None:
    images, labels = render_glyphs("train", num_classes=12, per_class=3, seed=1)
    assert images.shape == (36, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.long
    assert torch.bincount(labels).tolist() == [3] * 12
    # Every image shows a glyph: foreground and background differ in luminance.
    luma = (images.float() / 255 * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1)
    spread = luma.flatten(1).quantile(0.99, dim=1) - luma.flatten(1).quantile(0.01, dim=1)
    assert spread.min() > 0.2
    # Random colours: the corner pixels (background) differ between images.
    assert len({tuple(img[:, 0, 0].tolist()) for img in images}) > 30


def test_render_is_deterministic_per_seed_and_split() -> None:
    a, la = render_glyphs("train", num_classes=5, per_class=4, seed=3)
    b, lb = render_glyphs("train", num_classes=5, per_class=4, seed=3)
    c, _ = render_glyphs("train", num_classes=5, per_class=4, seed=4)
    d, _ = render_glyphs("test", num_classes=5, per_class=4, seed=3)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    assert not torch.equal(a, d)


def test_glyph_tensors_caches_under_root(tmp_path) -> None:
    images, labels = glyph_tensors("test", num_classes=4, per_class=5, seed=0, root=tmp_path)
    files = list((tmp_path / "glyphs").glob("*.pt"))
    assert len(files) == 1 and files[0] == glyphs.cache_path("test", 4, 5, 0, tmp_path)
    assert images.shape == (20, 3, 32, 32)
    # Put a recognisable payload in the cache file: the second call must return it.
    torch.save({"images": torch.zeros_like(images), "labels": labels}, files[0])
    again, labels_again = glyph_tensors("test", num_classes=4, per_class=5, seed=0, root=tmp_path)
    assert again.sum() == 0 and torch.equal(labels_again, labels)
    # Other parameters get another file.
    glyph_tensors("test", num_classes=4, per_class=5, seed=1, root=tmp_path)
    assert len(list((tmp_path / "glyphs").glob("*.pt"))) == 2
    assert not list((tmp_path / "glyphs").glob(".*.tmp"))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(split="val"),
        dict(split="train", num_classes=46),
        dict(split="train", num_classes=1),
        dict(split="train", per_class=0),
        dict(split="train", seed=-1),
    ],
)
def test_bad_arguments_are_rejected(kwargs, tmp_path) -> None:
    with pytest.raises(ValueError):
        glyph_tensors(root=tmp_path, **kwargs)


def test_grid_png(tmp_path) -> None:
    path = tmp_path / "grid.png"
    glyphs.main(["--grid", str(path)])
    with Image.open(path) as img:
        assert img.width > 12 * 32 and img.height > 8 * 32
        assert len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 50
    assert path.stat().st_size < 200_000
