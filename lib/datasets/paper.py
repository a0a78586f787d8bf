"""The paper's 14 downstream datasets, read from a local data root.

    from lib.datasets.paper import PAPER_DATASETS
    ds = PAPER_DATASETS["dtd"]["load"]("train", Path("outputs/data"), 128)
    image, label = ds[0]          # float [3, 128, 128] in [0, 1], int

Each dataset lives in its own folder `<root>/<name>/`, handed to torchvision's own class
as its root (see each entry's `layout`). Loading first lets torchvision download (skipped
when $SPARSE_VP_NO_DOWNLOAD is set), then reads the files on disk; missing files raise
`DatasetNotFoundError` naming the dataset, the root and the expected layout.

Splits (`partition`, the config's `split`):
- cifar10, cifar100, svhn, gtsrb: the official train/test sets, under both partitions.
- abide: the paper's split, sklearn `train_test_split(test_size=0.1, stratify=labels,
  random_state=1)`, under both partitions.
- "coop" (default), for dtd, flowers102, food101, eurosat, oxfordpets, stanfordcars,
  sun397, caltech101, ucf101: CoOp's split file `<root>/<name>/split_zhou_*.json` when
  present ("train" = its train list, "test" = its test list; its val list is unused).
  Without it: the official split (dtd partition 1 and flowers102 train+val / test,
  food101 train / test, oxfordpets trainval / test, stanfordcars train / test), or, where
  there is none (eurosat, sun397, caltech101), a seeded stratified split keeping 30% of
  each class for test (CoOp's test share). ucf101 (mid-frames of the videos) needs
  CoOp's file.
- "seed", the paper's data/prepare_data.py: dtd and flowers102 torchvision's "train"
  (without "val") / "test"; oxfordpets trainval / test; food101, sun397, ucf101,
  stanfordcars CoOp's train / test lists (the paper read LMDB copies of CoOp's split:
  the file is required); eurosat a real stratified 90/10 split (`train_test_split(
  test_size=0.1, stratify=labels, random_state=1)` over torchvision's sample order): the
  paper's code meant that but assigned `.data`/`.targets`, which EuroSAT ignores, so its
  train and test sets were both all 27,000 images; that no-op is not reproduced.
  caltech101: the paper read a private npz (101 classes, unknown split); CoOp's split
  (100 classes) is used as under "coop".
A data root holding FAKE_MARKER (written by `python -m lib.fake_data`) never downloads.
Returned datasets expose `targets` (list of int labels) and `classes` (tuple of names).
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from torchvision import datasets

from lib.datasets.paper_files import (  # noqa: F401 - COOP_SPLIT_FILES, UnsafeDataFileError re-exported
    ABIDE_PHENOTYPES,
    COOP_SPLIT_FILES,
    LAYOUTS,
    ConnectivityImages,
    ImageSelection,
    UnsafeDataFileError,
    _connectivity_matrices,
    _LocalCIFAR10,
    _LocalCIFAR100,
    _LocalFlowers102,
    _LocalSVHN,
    load_array,
)
from lib.datasets.sampling import STREAM_PAPER_SPLIT, stratified_split

SPLITS = ("train", "test")
PARTITIONS = ("coop", "seed")  # the config's `split`: CoOp's files, or the paper's code
# Datasets whose "seed" partition is CoOp's lists (the paper's LMDB files hold them).
SEED_READS_COOP = ("food101", "sun397", "ucf101", "stanfordcars")
# `python -m lib.fake_data ROOT` leaves this file in ROOT: such a root never downloads.
FAKE_MARKER = ".sparse_vp_fake"
# The paper's test loaders (prepare_data.py): VP batches of 64 for these, 128 for the rest;
# LP's are --batch_size. Its legacy ECE sums per test batch, so it scales with 1 / batch.
SEED_VP_TEST_BATCH = {"oxfordpets": 64, "abide": 64}
SEED_VP_DEFAULT_TEST_BATCH = 128
# Set to skip torchvision's download attempt (air-gapped nodes where DNS hangs).
NO_DOWNLOAD_ENV = "SPARSE_VP_NO_DOWNLOAD"
# Datasets without an official split and without CoOp's file: per-class seeded split.
SPLIT_SEED = 0
TEST_FRACTION = 0.3
# CoOp drops these Caltech101 folders: background clutter, and a duplicate of "Faces".
CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")
CIFAR10_CLASSES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())


class DatasetNotFoundError(FileNotFoundError):
    """A paper dataset's files are missing; the message names the expected layout."""


# --- opening -----------------------------------------------------------------------------


def _missing(name: str, root: Path, problems: Sequence[str] = ()) -> str:
    layout = PAPER_DATASETS[name]["layout"]
    details = "".join(f"\n  ({p})" for p in problems)
    return f"dataset '{name}' not found under root {root}; expected layout: {layout}{details}"


def seed_test_batch_size(dataset: str, method: str, batch_size: int) -> int:
    """The batch size of the paper's test loader for this dataset and method."""
    if method == "lp":
        return batch_size
    return SEED_VP_TEST_BATCH.get(dataset, SEED_VP_DEFAULT_TEST_BATCH)


def _is_fake(root: Path) -> bool:
    return (root / FAKE_MARKER).is_file()


def _downloads_allowed(root: Path) -> bool:
    return os.environ.get(NO_DOWNLOAD_ENV, "") in ("", "0") and not _is_fake(root)


def _open(
    name: str,
    root: Path,
    make: Callable[[bool], Any],
    relaxed: Callable[[], Any] | None = None,
    download: bool = True,
) -> Any:
    """make(download=True), then make(False) from disk, then `relaxed()`, else a clear error."""
    problems = []
    if download and _downloads_allowed(root):
        try:
            return make(True)
        except Exception as error:  # offline, dead URL (StanfordCars), bad checksum: use disk
            problems.append(f"download failed: {type(error).__name__}: {error}")
    try:
        return make(False)
    except (RuntimeError, OSError) as error:
        problems.append(f"{type(error).__name__}: {error}")
        if relaxed is None:
            raise DatasetNotFoundError(_missing(name, root, problems)) from error
    try:
        opened = relaxed()
    except (RuntimeError, OSError) as error:
        raise DatasetNotFoundError(_missing(name, root, problems)) from error
    if _is_fake(root):  # fake copies never match the checksums: nothing to warn about
        return opened
    warnings.warn(
        f"{name}: files under {root / name} do not match torchvision's MD5 checksums; "
        "loading them anyway (re-download them if results look wrong)",
        stacklevel=3,
    )
    return opened


def _check_args(
    name: str, split: str, root: str | Path, image_size: int | None, partition: str = "coop"
) -> Path:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for '{name}'; choose one of: train, test")
    if partition not in PARTITIONS:
        raise ValueError(
            f"unknown partition {partition!r} for '{name}'; choose one of: {', '.join(PARTITIONS)}"
        )
    if image_size is None and PAPER_DATASETS[name]["image_size"] is None:
        raise ValueError(f"'{name}' has variable-size images: pass image_size (e.g. 128)")
    if image_size is not None and (type(image_size) is not int or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    return Path(root).expanduser()


# --- fixed-size datasets with official splits ---------------------------------------------


def _load_cifar(
    name: str, split: str, root: str | Path, image_size: int | None, partition: str = "coop"
) -> Dataset:
    root = _check_args(name, split, root, image_size, partition)
    strict, relaxed = {
        "cifar10": (datasets.CIFAR10, _LocalCIFAR10),
        "cifar100": (datasets.CIFAR100, _LocalCIFAR100),
    }[name]
    folder, train = root / name, split == "train"
    ds = _open(
        name,
        root,
        lambda download: strict(folder, train=train, download=download),
        lambda: relaxed(folder, train=train),
    )
    return ImageSelection([ds], None, ds.targets, ds.classes, image_size)


def _load_svhn(
    name: str, split: str, root: str | Path, image_size: int | None, partition: str = "coop"
) -> Dataset:
    root = _check_args(name, split, root, image_size, partition)
    folder = root / name
    ds = _open(
        name,
        root,
        lambda download: datasets.SVHN(folder, split=split, download=download),
        lambda: _LocalSVHN(folder, split=split),
    )
    return ImageSelection([ds], None, ds.labels.tolist(), [str(d) for d in range(10)], image_size)


def _load_gtsrb(
    name: str, split: str, root: str | Path, image_size: int | None, partition: str = "coop"
) -> Dataset:
    root = _check_args(name, split, root, image_size, partition)
    folder = root / name
    ds = _open(name, root, lambda download: datasets.GTSRB(folder, split=split, download=download))
    targets = [label for _, label in ds._samples]
    return ImageSelection([ds], None, targets, [str(c) for c in range(43)], image_size)


# --- file-based datasets: a pool of every sample, then CoOp's / the official split ------

# (official split of its samples: train | val | test, or None; dataset). "val" samples count
# as training data except under the "seed" partition, where the paper's code dropped them.
Parts = list[tuple[str | None, Dataset]]


def _dtd_parts(folder: Path, download: bool) -> Parts:
    return [(s, datasets.DTD(folder, split=s, download=download)) for s in ("train", "val", "test")]


def _flowers_parts(folder: Path, download: bool, cls: type = datasets.Flowers102) -> Parts:
    return [(s, cls(folder, split=s, download=download)) for s in ("train", "val", "test")]


def _food_parts(folder: Path, download: bool) -> Parts:
    return [(s, datasets.Food101(folder, split=s, download=download)) for s in SPLITS]


def _pets_parts(folder: Path, download: bool) -> Parts:
    return [
        ("train" if s == "trainval" else s, datasets.OxfordIIITPet(folder, s, download=download))
        for s in ("trainval", "test")
    ]


def _cars_parts(folder: Path, download: bool) -> Parts:
    return [(s, datasets.StanfordCars(folder, split=s, download=download)) for s in SPLITS]


def _eurosat_parts(folder: Path, download: bool) -> Parts:
    return [(None, datasets.EuroSAT(folder, download=download))]


def _sun_parts(folder: Path, download: bool) -> Parts:
    return [(None, datasets.SUN397(folder, download=download))]


def _caltech_parts(folder: Path, download: bool) -> Parts:
    return [(None, datasets.Caltech101(folder, download=download))]


def _ucf_parts(folder: Path, download: bool) -> Parts:
    return [(None, datasets.ImageFolder(folder / "UCF-101-midframes"))]


_PARTS: dict[str, Callable[[Path, bool], Parts]] = {
    "dtd": _dtd_parts,
    "flowers102": _flowers_parts,
    "food101": _food_parts,
    "eurosat": _eurosat_parts,
    "oxfordpets": _pets_parts,
    "stanfordcars": _cars_parts,
    "sun397": _sun_parts,
    "caltech101": _caltech_parts,
    "ucf101": _ucf_parts,
}


def _relative(files: Sequence[str | Path], base: str | Path) -> list[str]:
    return [Path(f).relative_to(base).as_posix() for f in files]


def _index(ds: Dataset) -> tuple[list[str], list[int], list[str]]:
    """Keys (paths relative to CoOp's image folder), labels (-1 = dropped), class names."""
    # torchvision 0.29 keeps file lists in private attributes; read them to avoid decoding.
    if isinstance(ds, datasets.Caltech101):
        kept = [c for c in ds.categories if c not in CALTECH_IGNORED]
        new = {c: i for i, c in enumerate(kept)}
        keys = [
            f"{ds.categories[y]}/image_{k:04d}.jpg" for y, k in zip(ds.y, ds.index, strict=True)
        ]
        return keys, [new.get(ds.categories[y], -1) for y in ds.y], kept
    if isinstance(ds, datasets.StanfordCars):
        files = [path for path, _ in ds._samples]
        labels = [label for _, label in ds._samples]
        return _relative(files, ds._base_folder), labels, list(ds.classes)
    if isinstance(ds, datasets.ImageFolder):  # EuroSAT and the UCF101 frames
        base = ds._data_folder if isinstance(ds, datasets.EuroSAT) else ds.root
        files = [path for path, _ in ds.samples]
        return _relative(files, base), list(ds.targets), list(ds.classes)
    if isinstance(ds, datasets.OxfordIIITPet):
        return _relative(ds._images, ds._images_folder), list(ds._labels), list(ds.classes)
    if isinstance(ds, datasets.SUN397):
        return _relative(ds._image_files, ds._data_dir), list(ds._labels), list(ds.classes)
    # DTD, Flowers102, Food101
    return _relative(ds._image_files, ds._images_folder), list(ds._labels), list(ds.classes)


def _stratified_split(keys: Sequence[str], labels: Sequence[int]) -> dict[str, list[int]]:
    """Seeded per-class split (TEST_FRACTION to test); independent of file listing order."""
    order = sorted(range(len(keys)), key=keys.__getitem__)
    kept, held = stratified_split(
        [labels[i] for i in order], TEST_FRACTION, SPLIT_SEED, STREAM_PAPER_SPLIT
    )
    return {s: [order[j] for j in part.tolist()] for s, part in (("train", kept), ("test", held))}


def _seed_split(
    name: str, split: str, labels: Sequence[int], tags: Sequence[str | None]
) -> list[int]:
    """The paper's prepare_data.py partition of the pool (see the module docstring)."""
    if name == "eurosat":
        from sklearn.model_selection import train_test_split  # slow import, eurosat only

        train, test = train_test_split(
            np.arange(len(labels)), test_size=0.1, stratify=labels, random_state=1
        )
        return sorted((train if split == "train" else test).tolist())
    return [i for i, tag in enumerate(tags) if tag == split]  # dtd, flowers102, oxfordpets


def _coop_split(
    name: str, root: Path, path: Path, split: str, keys: Sequence[str]
) -> tuple[list[int], list[int], list[str]]:
    """(pool indices, labels, class names) of CoOp's [image, label, class name] rows."""
    table = json.loads(path.read_text())
    if split not in table:
        raise ValueError(f"{path} has no {split!r} list; it has: {', '.join(table)}")
    where = {key: i for i, key in enumerate(keys)}
    rows = table[split]
    missing = [row[0] for row in rows if row[0] not in where]
    if missing:
        problem = f"{len(missing)} of {len(rows)} '{split}' images in {path.name} are missing"
        raise DatasetNotFoundError(_missing(name, root, [f"{problem}, e.g. {missing[0]}"]))
    names = {int(label): cname for part in table.values() for _, label, cname in part}
    classes = [names.get(i, str(i)) for i in range(max(names) + 1)]
    return [where[row[0]] for row in rows], [int(row[1]) for row in rows], classes


def _load_files(
    name: str, split: str, root: str | Path, image_size: int | None, partition: str = "coop"
) -> Dataset:
    root = _check_args(name, split, root, image_size, partition)
    folder = root / name
    split_file = folder / COOP_SPLIT_FILES[name]
    if name == "ucf101" and not split_file.is_file():
        raise DatasetNotFoundError(_missing(name, root, [f"{split_file} not found"]))
    if partition == "seed" and name in SEED_READS_COOP and not split_file.is_file():
        problem = f"{split_file} not found; split 'seed' reads it (the paper's LMDB copy of it)"
        raise DatasetNotFoundError(_missing(name, root, [problem]))
    relaxed = partial(_flowers_parts, folder, False, _LocalFlowers102)
    parts: Parts = _open(
        name,
        root,
        partial(_PARTS[name], folder),
        relaxed if name == "flowers102" else None,
        download=name != "ucf101",  # the mid-frames exist only as CoOp's archive
    )
    refs, keys, labels, tags = [], [], [], []
    for p, (tag, ds) in enumerate(parts):
        part_keys, part_labels, classes = _index(ds)
        keep = [i for i, label in enumerate(part_labels) if label >= 0]
        refs += [(p, i) for i in keep]
        keys += [part_keys[i] for i in keep]
        labels += [part_labels[i] for i in keep]
        tags += [tag] * len(keep)
    if partition == "seed" and name in ("dtd", "flowers102", "oxfordpets", "eurosat"):
        chosen = _seed_split(name, split, labels, tags)
        targets = [labels[i] for i in chosen]
    elif split_file.is_file():
        chosen, targets, classes = _coop_split(name, root, split_file, split, keys)
    else:
        if parts[0][0] is None:
            chosen = _stratified_split(keys, labels)[split]
        else:  # the official split; its val part is training data here
            chosen = [
                i for i, tag in enumerate(tags) if ("train" if tag == "val" else tag) == split
            ]
        targets = [labels[i] for i in chosen]
    return ImageSelection(
        [ds for _, ds in parts], [refs[i] for i in chosen], targets, classes, image_size
    )


# --- ABIDE: functional-connectivity matrices as images ------------------------------------


def _abide_vectors(name: str, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Upper-triangle connectivity vectors [N, R(R-1)/2] and labels (1 = ASD, 0 = control)."""
    folder = root / name
    matrices, labels = folder / "connectivity.npy", folder / "labels.npy"
    h5, phenotypes = folder / "abide.hdf5", folder / ABIDE_PHENOTYPES
    if matrices.is_file() and labels.is_file():
        # plain arrays only: an object array would be unpickled
        x, y = load_array(matrices), load_array(labels)
        if x.ndim == 3 and x.shape[1] == x.shape[2]:
            x = x[:, *np.triu_indices(x.shape[1], k=1)]
        elif x.ndim != 2:
            raise ValueError(
                f"{matrices} must hold [N, R, R] matrices or [N, R(R-1)/2] "
                f"upper triangles, got shape {x.shape}"
            )
    elif h5.is_file() and phenotypes.is_file():  # ILM-VP's files (acerta-abide download)
        try:
            import h5py
        except ImportError as error:
            raise ImportError(
                f"reading {h5} needs h5py (pip install h5py), or convert it to "
                "connectivity.npy + labels.npy"
            ) from error
        with phenotypes.open(newline="") as f:
            groups = {row["FILE_ID"]: int(row["DX_GROUP"]) for row in csv.DictReader(f)}
        with h5py.File(h5, "r") as f:
            ids = sorted(f["patients"].keys())
            x = np.stack([np.asarray(f["patients"][i]["cc200"], dtype=np.float64) for i in ids])
        unknown = [i for i in ids if i not in groups]
        if unknown:
            raise ValueError(
                f"{len(unknown)} subjects of {h5} missing in {phenotypes}, e.g. {unknown[0]}"
            )
        y = np.array([2 - groups[i] for i in ids])  # DX_GROUP: 1 = autism, 2 = control
    else:
        raise DatasetNotFoundError(_missing(name, root))
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if len(y) != len(x) or not np.isin(y, (0, 1)).all():
        raise ValueError(
            f"ABIDE needs one label in {{0, 1}} per subject: {len(x)} subjects, "
            f"labels {np.unique(y).tolist()} x {len(y)}"
        )
    return x.astype(np.float64), y


def _load_abide(
    name: str, split: str, root: str | Path, image_size: int | None, partition: str = "coop"
) -> Dataset:
    root = _check_args(name, split, root, image_size, partition)
    vectors, labels = _abide_vectors(name, root)
    from sklearn.model_selection import train_test_split  # slow import, ABIDE only

    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.1, stratify=labels, random_state=1
    )
    chosen = train if split == "train" else test
    matrices = _connectivity_matrices(vectors[chosen])
    return ConnectivityImages(matrices, labels[chosen].tolist(), image_size)


# name: (num_classes, native square size (None: variable), ILM-VP inner size, names, loader)
_TABLE: dict[str, tuple[int, int | None, int, tuple[str, ...] | None, Callable[..., Dataset]]] = {
    "cifar10": (10, 32, 32, CIFAR10_CLASSES, _load_cifar),
    "cifar100": (100, 32, 32, None, _load_cifar),
    "svhn": (10, 32, 32, tuple(str(d) for d in range(10)), _load_svhn),
    "gtsrb": (43, None, 32, None, _load_gtsrb),
    "dtd": (47, None, 128, None, _load_files),
    "flowers102": (102, None, 128, None, _load_files),
    "food101": (101, None, 128, None, _load_files),
    "eurosat": (10, 64, 128, None, _load_files),
    "oxfordpets": (37, None, 128, None, _load_files),
    "stanfordcars": (196, None, 128, None, _load_files),
    "sun397": (397, None, 128, None, _load_files),
    "caltech101": (100, None, 128, None, _load_files),  # CoOp's 100 classes
    "ucf101": (101, None, 128, None, _load_files),
    # ILM-VP feeds the 200 x 200 CC200 matrix unresized, so its inner size is 200.
    "abide": (2, 200, 200, ("non ASD", "ASD"), _load_abide),
}

PAPER_DATASETS: dict[str, dict] = {
    name: {
        "num_classes": num_classes,
        "image_size": image_size,
        "vp_size": vp_size,
        "classes": classes,
        "load": partial(load, name),
        "layout": LAYOUTS[name],
    }
    for name, (num_classes, image_size, vp_size, classes, load) in _TABLE.items()
}
