"""The paper datasets' files as they lie on disk (LAYOUTS, CoOp's split files) and reading
them: image selections, ABIDE's connectivity matrices, pickles without code execution, and
torchvision classes that check files are present instead of their MD5 on every load
(lib.datasets.paper opens them).
"""

from __future__ import annotations

import codecs
import math
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, transforms
from torchvision.datasets.vision import VisionDataset
from torchvision.transforms import functional as TF

COOP_SPLIT_FILES = {
    "dtd": "split_zhou_DescribableTextures.json",
    "flowers102": "split_zhou_OxfordFlowers.json",
    "food101": "split_zhou_Food101.json",
    "eurosat": "split_zhou_EuroSAT.json",
    "oxfordpets": "split_zhou_OxfordPets.json",
    "stanfordcars": "split_zhou_StanfordCars.json",
    "sun397": "split_zhou_SUN397.json",
    "caltech101": "split_zhou_Caltech101.json",
    "ucf101": "split_zhou_UCF101.json",
}
ABIDE_PHENOTYPES = "Phenotypic_V1_0b_preprocessed1.csv"


class UnsafeDataFileError(ValueError):
    """A data file of unknown integrity holds something other than plain data."""


class DatasetUnreadable(ValueError):
    """A dataset's files are there but cannot be read (truncated, corrupt), or its data root
    is not a folder; the message names the file or the root, on one line."""


# What a damaged file raises from torchvision, gzip, pickle or PIL (missing files are
# FileNotFoundError, which callers treat as "not there yet").
READ_ERRORS = (OSError, EOFError, RuntimeError, AssertionError, pickle.UnpicklingError, zlib.error)


def unreadable(what: str | Path, error: BaseException, fix: str = "") -> DatasetUnreadable:
    """DatasetUnreadable naming `what` and the error's first line."""
    text = str(error).strip().splitlines()
    detail = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return DatasetUnreadable(f"{what}: cannot be read ({detail}){'; ' + fix if fix else ''}")


def load_array(path: Path) -> np.ndarray:
    """np.load of a plain array (an object array would be unpickled); a damaged file is named."""
    try:
        return np.load(path, allow_pickle=False)
    except (*READ_ERRORS, ValueError) as error:
        raise unreadable(path, error, "a truncated or damaged .npy file?") from None


class ImageSelection(Dataset):
    """Samples of torchvision datasets, picked by (part, index) and relabelled, as tensors."""

    def __init__(
        self,
        parts: Sequence[Dataset],
        refs: list[tuple[int, int]] | None,
        targets: Sequence[int],
        classes: Sequence[str],
        image_size: int | None,
    ) -> None:
        self.parts = list(parts)
        self.refs = refs  # None: every sample of parts[0], in order
        self.targets = [int(t) for t in targets]
        self.classes = tuple(classes)
        steps = [] if image_size is None else [transforms.Resize((image_size, image_size))]
        self.transform = transforms.Compose([*steps, transforms.ToTensor()])
        if len(self.parts[0] if refs is None else refs) != len(self.targets):
            raise ValueError("one target per selected sample is required")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        part, index = (0, i) if self.refs is None else self.refs[i]
        image: Image.Image = self.parts[part][index][0]  # torchvision's PIL image
        return self.transform(image.convert("RGB")), self.targets[i]


class ConnectivityImages(Dataset):
    """ABIDE connectivity matrices [N, R, R] in [0, 1] as 3-channel images of size S."""

    def __init__(self, matrices: torch.Tensor, targets: Sequence[int], image_size: int | None):
        self.matrices = matrices
        self.targets = [int(t) for t in targets]
        self.classes = ("non ASD", "ASD")
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.matrices[i].unsqueeze(0)
        size = self.image_size
        if size is not None and tuple(image.shape[-2:]) != (size, size):
            image = TF.resize(image, [size, size], antialias=True).clamp_(0.0, 1.0)
        return image.repeat(3, 1, 1), self.targets[i]


# --- torchvision classes that verify MD5s on every load --------------------------------
# Their files can be present yet fail the checksum (a re-packed copy, a test fixture). Only
# the offline fallback of `_open` uses these variants, which check that the files exist,
# and it warns when it does. A file that fails the checksum may be anything, so the CIFAR
# variants never hand it to pickle as torchvision does: _PlainDataUnpickler reads the
# containers, strings, numbers and numpy arrays a CIFAR batch is made of and refuses every
# other global (the way a pickle runs code), before any of it is built.

_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array rebuilder, whatever its module


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Protocol-2 pickles spell bytes as _codecs.encode(text, 'latin1'); nothing else."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not plain data")
    return codecs.encode(text, "latin1")


class _PlainDataUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}") from None


def read_plain_pickle(path: Path) -> Any:
    """A pickle of plain data (dicts, lists, strings, numbers, numpy arrays) read without
    running anything; any other content raises UnsafeDataFileError naming the file."""
    try:
        with path.open("rb") as f:
            return _PlainDataUnpickler(f, encoding="latin1").load()
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever it is, the file is not plain data
        raise UnsafeDataFileError(
            f"{path}: does not match torchvision's MD5 checksum and is not a plain data "
            f"pickle ({error}); refused without running it (re-download the dataset)"
        ) from None


class _PresenceCheckedCIFAR:
    base_folder: str
    root: str
    train_list: list
    test_list: list
    meta: dict

    def __init__(self, root: str | Path, train: bool = True) -> None:
        # torchvision's own __init__, reading the batches with read_plain_pickle
        VisionDataset.__init__(self, root)  # type: ignore[arg-type]
        self.train = train
        if not self._check_integrity():
            raise RuntimeError(f"CIFAR batch files not found in {Path(root) / self.base_folder}")
        data, self.targets = [], []
        for name, _ in self.train_list if train else self.test_list:
            path = Path(self.root) / self.base_folder / name
            entry = read_plain_pickle(path)
            labels = (
                entry.get("labels", entry.get("fine_labels")) if isinstance(entry, dict) else None
            )
            rows = entry.get("data") if isinstance(entry, dict) else None
            if not (isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.shape[1] == 3072):
                raise UnsafeDataFileError(f"{path}: no 'data' array of [N, 3072] image rows")
            if not (isinstance(labels, list) and len(labels) == len(rows)):
                raise UnsafeDataFileError(f"{path}: no list of one label per image row")
            data.append(rows.astype(np.uint8, copy=False))
            self.targets.extend(int(label) for label in labels)
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self._load_meta()

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        if not path.is_file():
            raise RuntimeError(f"CIFAR metadata file {path} not found")
        meta = read_plain_pickle(path)
        if not isinstance(meta, dict) or not isinstance(meta.get(self.meta["key"]), list):
            raise UnsafeDataFileError(f"{path}: no list {self.meta['key']!r} of class names")
        self.classes = meta[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _LocalCIFAR10(_PresenceCheckedCIFAR, datasets.CIFAR10):
    pass


class _LocalCIFAR100(_PresenceCheckedCIFAR, datasets.CIFAR100):
    pass


class _LocalSVHN(datasets.SVHN):
    def _check_integrity(self) -> bool:
        return (Path(self.root) / self.filename).is_file()


class _LocalFlowers102(datasets.Flowers102):
    def _check_integrity(self) -> bool:
        files = (self._base_folder / self._file_dict[k][0] for k in ("label", "setid"))
        return self._images_folder.is_dir() and all(f.is_file() for f in files)


def _connectivity_matrices(vectors: np.ndarray) -> torch.Tensor:
    """ILM-VP's image: per-subject min-max scaled vector on the strict upper triangle."""
    n, length = vectors.shape
    size = (1 + math.isqrt(1 + 8 * length)) // 2
    if size * (size - 1) // 2 != length:
        raise ValueError(f"{length} values are not the upper triangle of a square matrix")
    low = vectors.min(axis=1, keepdims=True)
    span = vectors.max(axis=1, keepdims=True) - low
    images = np.zeros((n, size, size), dtype=np.float32)
    images[:, *np.triu_indices(size, k=1)] = (vectors - low) / np.where(span > 0, span, 1.0)
    return torch.from_numpy(images)


# Where each dataset's files lie under the data root (named in DatasetNotFoundError).
_COOP = "; optional CoOp split <root>/{name}/{file}"
LAYOUTS: dict[str, str] = {
    "cifar10": "<root>/cifar10/cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, "
    "batches.meta} (cifar-10-python.tar.gz extracted)",
    "cifar100": "<root>/cifar100/cifar-100-python/{train, test, meta} "
    "(cifar-100-python.tar.gz extracted)",
    "svhn": "<root>/svhn/{train_32x32.mat, test_32x32.mat} (cropped digits, label 10 = digit 0)",
    "gtsrb": "<root>/gtsrb/gtsrb/GTSRB/Training/<00000..00042>/*.ppm, "
    "<root>/gtsrb/gtsrb/GTSRB/Final_Test/Images/*.ppm, "
    "<root>/gtsrb/gtsrb/GT-final_test.csv (';'-separated, columns Filename, ClassId)",
    "dtd": "<root>/dtd/dtd/dtd/images/<class>/*.jpg, <root>/dtd/dtd/dtd/labels/"
    "{train1,val1,test1}.txt (dtd-r1.0.1.tar.gz extracted into <root>/dtd/dtd)" + _COOP,
    "flowers102": "<root>/flowers102/flowers-102/{jpg/image_00001.jpg.., imagelabels.mat, "
    "setid.mat}" + _COOP,
    "food101": "<root>/food101/food-101/{images/<class>/<id>.jpg, meta/train.json, "
    "meta/test.json}" + _COOP,
    "eurosat": "<root>/eurosat/eurosat/2750/<Class>/<Class>_<n>.jpg (RGB EuroSAT.zip)" + _COOP,
    "oxfordpets": "<root>/oxfordpets/oxford-iiit-pet/{images/<Breed>_<n>.jpg, "
    "annotations/trainval.txt, annotations/test.txt}" + _COOP,
    "stanfordcars": "<root>/stanfordcars/stanford_cars/{cars_train/*.jpg, cars_test/*.jpg, "
    "devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat}" + _COOP,
    "sun397": "<root>/sun397/SUN397/{ClassName.txt, <letter>/<class>[/<sub>]/sun_*.jpg}" + _COOP,
    "caltech101": "<root>/caltech101/caltech101/101_ObjectCategories/<category>/image_<nnnn>.jpg"
    " (BACKGROUND_Google and Faces_easy are dropped, as in CoOp)" + _COOP,
    "ucf101": "<root>/ucf101/UCF-101-midframes/<Class>/<video>.jpg and "
    "<root>/ucf101/{file} (CoOp's mid-frame images and split, both required)",
    "abide": "<root>/abide/connectivity.npy (float [N, 200, 200] correlation matrices, or "
    "[N, 19900] upper triangles) + <root>/abide/labels.npy (int [N], 1 = ASD, 0 = control); "
    f"or ILM-VP's <root>/abide/abide.hdf5 (patients/<FILE_ID>/cc200) + <root>/abide/"
    f"{ABIDE_PHENOTYPES} (columns FILE_ID, DX_GROUP), which needs h5py",
}
LAYOUTS = {
    name: text.replace("{name}", name).replace("{file}", COOP_SPLIT_FILES.get(name, ""))
    for name, text in LAYOUTS.items()
}
