"""The 14 paper datasets, each loaded from a tiny fake copy in its native on-disk format.

Every fake image is a solid colour: red encodes its label, blue a unique image id, so a
test can tell which files landed in which split and whether each kept its label.
"""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from lib.datasets.paper import (
    CIFAR10_CLASSES,
    NO_DOWNLOAD_ENV,
    PAPER_DATASETS,
    DatasetNotFoundError,
)

SIZE = 32
MD5_WARNING = "ignore:.*MD5 checksums:UserWarning"


@pytest.fixture(autouse=True)
def _no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    # Online machines must not fetch real archives during tests.
    monkeypatch.setenv(NO_DOWNLOAD_ENV, "1")


class Fake:
    """Writes solid-colour images and remembers (id -> label) per expected split."""

    def __init__(self) -> None:
        self.next_id = 0
        # split -> {image id -> label}; a grayscale image has no blue to carry its id: "gray"
        self.splits: dict[str, dict[int | str, int]] = defaultdict(dict)

    def rgb(self, label: int, split: str, gray: bool = False) -> tuple[int, int, int]:
        image_id, self.next_id = self.next_id, self.next_id + 1
        self.splits[split]["gray" if gray else image_id] = label
        return (30 + 60 * label, 128, 10 + 6 * image_id)

    def image(self, path: Path, label: int, split: str, gray: bool = False) -> Path:
        red, green, blue = self.rgb(label, split, gray)
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (20 + 3 * (self.next_id % 3), 16 + 5 * (self.next_id % 2))  # variable sizes
        image = Image.new("L", size, red) if gray else Image.new("RGB", size, (red, green, blue))
        fmt = "PPM" if path.suffix == ".ppm" else "JPEG"
        image.save(path, fmt, **({"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}))
        return path

    def array(self, label: int, split: str) -> np.ndarray:
        return np.broadcast_to(np.array(self.rgb(label, split), np.uint8), (32, 32, 3))


def _read(ds: torch.utils.data.Dataset, num_classes: int) -> dict[int | str, int]:
    """id -> label of every item, checking shape, dtype, range and the label's colour."""
    found: dict[int | str, int] = {}
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert type(label) is int and 0 <= label < num_classes
        red, green, blue = (image[c].mean().item() * 255 for c in range(3))
        assert abs(red - (30 + 60 * label)) < 4, f"item {i}: colour of another label"
        gray = abs(green - red) < 4 and abs(blue - red) < 4
        image_id = "gray" if gray else round((blue - 10) / 6)
        assert image_id not in found, f"item {i}: image {image_id} appears twice"
        found[image_id] = label
    assert ds.targets == [ds[i][1] for i in range(len(ds))]
    return found


# --- fake copies, one per dataset ---------------------------------------------------------


def fake_cifar10(root: Path, fake: Fake) -> None:
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(name: str, labels: list[int], split: str) -> None:
        data = np.stack([fake.array(y, split).transpose(2, 0, 1).reshape(-1) for y in labels])
        with (folder / name).open("wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)

    for b in range(1, 6):
        batch(f"data_batch_{b}", [b % 3, (b + 1) % 3], "train")
    batch("test_batch", [0, 1, 2], "test")
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)


def fake_cifar100(root: Path, fake: Fake) -> None:
    folder = root / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, labels, split in (("train", [0, 1, 2, 2], "train"), ("test", [1, 0], "test")):
        data = np.stack([fake.array(y, split).transpose(2, 0, 1).reshape(-1) for y in labels])
        with (folder / name).open("wb") as f:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": labels}, f)
    with (folder / "meta").open("wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, f)


def fake_svhn(root: Path, fake: Fake) -> None:
    folder = root / "svhn"
    folder.mkdir(parents=True)
    for split, labels in (("train", [0, 1, 2, 1]), ("test", [2, 0])):
        images = np.stack([fake.array(y, split) for y in labels], axis=-1)  # [32, 32, 3, N]
        stored = np.array([[10 if y == 0 else y] for y in labels], np.uint8)  # 10 is digit 0
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": images, "y": stored})


def fake_gtsrb(root: Path, fake: Fake) -> None:
    base = root / "gtsrb" / "gtsrb"
    for label in range(3):
        for k in range(2):
            fake.image(base / f"GTSRB/Training/{label:05d}/00000_{k:05d}.ppm", label, "train")
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for k, label in enumerate([2, 0, 1]):
        fake.image(base / f"GTSRB/Final_Test/Images/{k:05d}.ppm", label, "test")
        rows.append(f"{k:05d}.ppm;20;16;1;1;19;15;{label}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")


def fake_dtd(root: Path, fake: Fake) -> None:
    data = root / "dtd" / "dtd" / "dtd"
    lists: dict[str, list[str]] = {"train1": [], "val1": [], "test1": []}
    for label, cls in enumerate(("banded", "dotted")):
        for k, (part, split) in enumerate(
            (("train1", "train"), ("val1", "train"), ("test1", "test"))
        ):
            fake.image(data / "images" / cls / f"{cls}_{k:04d}.jpg", label, split)
            lists[part].append(f"{cls}/{cls}_{k:04d}.jpg")
    (data / "labels").mkdir()
    for part, lines in lists.items():
        (data / "labels" / f"{part}.txt").write_text("\n".join(lines) + "\n")


def fake_flowers102(root: Path, fake: Fake) -> None:
    base = root / "flowers102" / "flowers-102"
    labels = [0, 1, 2] * 3  # ids 1-3 train, 4-6 val, 7-9 test
    for i, label in enumerate(labels, 1):
        fake.image(base / "jpg" / f"image_{i:05d}.jpg", label, "test" if i > 6 else "train")
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array(labels) + 1})
    ids = {"trnid": [1, 2, 3], "valid": [4, 5, 6], "tstid": [7, 8, 9]}
    scipy.io.savemat(base / "setid.mat", {k: np.array(v) for k, v in ids.items()})


def fake_food101(root: Path, fake: Fake) -> None:
    base = root / "food101" / "food-101"
    meta: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for label, cls in enumerate(("apple_pie", "bibimbap")):
        for k, split in enumerate(("train", "train", "test")):
            fake.image(base / "images" / cls / f"{100 + k}.jpg", label, split)
            meta[split].setdefault(cls, []).append(f"{cls}/{100 + k}")
    (base / "meta").mkdir()
    for split, table in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(table))


def fake_eurosat(root: Path, fake: Fake) -> None:
    for label, cls in enumerate(("AnnualCrop", "Forest")):
        for k in range(5):
            fake.image(root / f"eurosat/eurosat/2750/{cls}/{cls}_{k + 1}.jpg", label, "pool")


def fake_oxfordpets(root: Path, fake: Fake) -> None:
    base = root / "oxfordpets" / "oxford-iiit-pet"
    lists: dict[str, list[str]] = {"trainval": [], "test": []}
    for label, breed in enumerate(("Abyssinian", "beagle")):
        for k, part in enumerate(("trainval", "trainval", "test"), 1):
            fake.image(base / "images" / f"{breed}_{k}.jpg", label, part.replace("val", ""))
            lists[part].append(f"{breed}_{k} {label + 1} {label + 1} 1")
    (base / "annotations").mkdir()
    for part, lines in lists.items():
        (base / "annotations" / f"{part}.txt").write_text("\n".join(lines) + "\n")


def fake_stanfordcars(root: Path, fake: Fake) -> None:
    base = root / "stanfordcars" / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8"], object)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    for split, labels, mat in (
        ("train", [0, 1, 2, 0], base / "devkit" / "cars_train_annos.mat"),
        ("test", [2, 1], base / "cars_test_annos_withlabels.mat"),
    ):
        annotations = np.zeros(len(labels), dtype=[("fname", "O"), ("class", "O")])
        for k, label in enumerate(labels):
            fake.image(base / f"cars_{split}" / f"{k + 1:05d}.jpg", label, split)
            annotations[k] = (f"{k + 1:05d}.jpg", label + 1)
        scipy.io.savemat(mat, {"annotations": annotations})


def fake_sun397(root: Path, fake: Fake) -> None:
    base = root / "sun397" / "SUN397"
    classes = ("a/abbey", "b/beach/outdoor")
    for label, cls in enumerate(classes):
        for k in range(5):
            fake.image(base / cls / f"sun_{cls[0]}{k:04d}.jpg", label, "pool")
    (base / "ClassName.txt").write_text("".join(f"/{c}\n" for c in classes))


def fake_caltech101(root: Path, fake: Fake) -> None:
    base = root / "caltech101" / "caltech101" / "101_ObjectCategories"
    # sorted: BACKGROUND_Google, Faces (label 0), Faces_easy, accordion (label 1)
    for cls, label, count in (("Faces", 0, 4), ("accordion", 1, 4)):
        for k in range(1, count + 1):
            fake.image(
                base / cls / f"image_{k:04d}.jpg", label, "pool", gray=cls == "Faces" and k == 1
            )
    for cls in CALTECH_DROPPED:  # red of label 3: out of range if wrongly kept
        for k in range(1, 3):
            fake.image(base / cls / f"image_{k:04d}.jpg", 3, "dropped")


CALTECH_DROPPED = ("BACKGROUND_Google", "Faces_easy")


def fake_ucf101(root: Path, fake: Fake) -> None:
    base = root / "ucf101"
    table: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, cls in enumerate(("Apply_Eye_Makeup", "Archery")):
        for g, part in ((8, "train"), (9, "train"), (10, "val"), (1, "test")):
            name = f"{cls}/v_{cls.replace('_', '')}_g{g:02d}_c01.jpg"
            fake.image(
                base / "UCF-101-midframes" / name, label, "dropped" if part == "val" else part
            )
            table[part].append([name, label, cls.replace("_", " ")])
    (base / "split_zhou_UCF101.json").write_text(json.dumps(table))


FAKES = {name: fn for name, fn in globals().items() if name.startswith("fake_")}
FAKES = {name.removeprefix("fake_"): fn for name, fn in FAKES.items()}
FALLBACK_SPLIT = ("eurosat", "sun397", "caltech101")


def test_every_paper_dataset_has_an_entry_and_a_fake() -> None:
    assert set(PAPER_DATASETS) == set(FAKES) | {"abide"}
    assert len(PAPER_DATASETS) == 14
    for name, entry in PAPER_DATASETS.items():
        assert entry["vp_size"] == (32 if name in ("cifar10", "cifar100", "svhn", "gtsrb")
                                    else 200 if name == "abide" else 128)  # fmt: skip
        assert entry["classes"] is None or len(entry["classes"]) == entry["num_classes"]
        assert f"<root>/{name}/" in entry["layout"]


@pytest.mark.filterwarnings(MD5_WARNING)
@pytest.mark.parametrize("name", sorted(FAKES))
def test_fake_copy_loads_through_the_real_code_path(name: str, tmp_path: Path) -> None:
    fake = Fake()
    FAKES[name](tmp_path, fake)
    entry = PAPER_DATASETS[name]
    train = _read(entry["load"]("train", tmp_path, SIZE), entry["num_classes"])
    test = _read(entry["load"]("test", tmp_path, SIZE), entry["num_classes"])
    if name in FALLBACK_SPLIT:  # seeded stratified split of the pool: a partition per class
        assert not set(train) & set(test)
        assert {**train, **test} == fake.splits["pool"]
        for label in set(fake.splits["pool"].values()):
            n = sum(1 for y in fake.splits["pool"].values() if y == label)
            n_test = sum(1 for y in test.values() if y == label)
            assert 1 <= n_test < n and abs(n_test - 0.3 * n) <= 0.5
        again = entry["load"]("test", tmp_path, SIZE)
        assert _read(again, entry["num_classes"]) == test  # same split every time
    else:
        assert train == fake.splits["train"]
        assert test == fake.splits["test"]


def test_cifar10_native_size_and_class_names(tmp_path: Path) -> None:
    fake_cifar10(tmp_path, Fake())
    with pytest.warns(UserWarning, match="MD5"):  # fake files: only the offline fallback reads them
        ds = PAPER_DATASETS["cifar10"]["load"]("test", tmp_path, None)
    assert ds[0][0].shape == (3, 32, 32)
    assert ds.classes == PAPER_DATASETS["cifar10"]["classes"]


def test_stanfordcars_falls_back_to_disk_when_download_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchvision's StanfordCars download always fails (dead URL) without touching the network.
    monkeypatch.delenv(NO_DOWNLOAD_ENV)
    fake = Fake()
    fake_stanfordcars(tmp_path, fake)
    ds = PAPER_DATASETS["stanfordcars"]["load"]("train", tmp_path, SIZE)
    assert _read(ds, 196) == fake.splits["train"]
    with pytest.raises(DatasetNotFoundError, match="download failed"):
        PAPER_DATASETS["stanfordcars"]["load"]("train", tmp_path / "empty", SIZE)


@pytest.mark.parametrize("name", sorted(PAPER_DATASETS))
def test_missing_files_raise_a_clear_error(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        PAPER_DATASETS[name]["load"]("train", tmp_path, SIZE)
    message = str(caught.value)
    assert f"'{name}'" in message and str(tmp_path) in message
    assert PAPER_DATASETS[name]["layout"] in message
    assert isinstance(caught.value, FileNotFoundError)


def test_bad_arguments_name_the_allowed_values(tmp_path: Path) -> None:
    load = PAPER_DATASETS["dtd"]["load"]
    with pytest.raises(ValueError, match="choose one of: train, test"):
        load("val", tmp_path, SIZE)
    with pytest.raises(ValueError, match="variable-size"):
        load("train", tmp_path, None)


def test_coop_split_file_overrides_the_fallback_split(tmp_path: Path) -> None:
    fake = Fake()
    fake_eurosat(tmp_path, fake)
    files = {cls: [f"{cls}/{cls}_{k}.jpg" for k in range(1, 6)] for cls in ("AnnualCrop", "Forest")}
    names = {"AnnualCrop": "Annual Crop Land", "Forest": "Forest"}
    table = {
        split: [[f, label, names[cls]] for label, cls in enumerate(files) for f in files[cls][part]]
        for split, part in (("train", slice(0, 2)), ("val", slice(2, 3)), ("test", slice(3, 5)))
    }
    (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps(table))
    pool = sorted(fake.splits["pool"])  # ids were written class by class, file by file
    expected_test = {i: fake.splits["pool"][i] for i in pool[3:5] + pool[8:10]}
    ds = PAPER_DATASETS["eurosat"]["load"]("test", tmp_path, SIZE)
    assert _read(ds, 10) == expected_test
    assert ds.classes == ("Annual Crop Land", "Forest")
    table["test"].append(["Forest/Forest_99.jpg", 1, "Forest"])
    (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps(table))
    with pytest.raises(DatasetNotFoundError, match="Forest_99.jpg"):
        PAPER_DATASETS["eurosat"]["load"]("test", tmp_path, SIZE)


# --- ABIDE ----------------------------------------------------------------------------------


def _abide_subjects(n: int = 20, regions: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    signals = rng.normal(size=(n, regions, 30))
    matrices = np.stack([np.corrcoef(s) for s in signals])
    return matrices, np.array([0, 1] * (n // 2))


def _ilm_vp_image(matrix: np.ndarray) -> np.ndarray:
    """ILM-VP's recipe written out: row by row, each value right of the diagonal, min-max."""
    rows, cols = np.triu_indices(len(matrix), k=1)
    values = matrix[rows, cols]
    image = np.zeros_like(matrix)
    image[rows, cols] = (values - values.min()) / (values.max() - values.min())
    return image


def test_abide_matrices_become_ilm_vp_images(tmp_path: Path) -> None:
    from sklearn.model_selection import train_test_split

    matrices, labels = _abide_subjects()
    (tmp_path / "abide").mkdir()
    np.save(tmp_path / "abide" / "connectivity.npy", matrices)
    np.save(tmp_path / "abide" / "labels.npy", labels)
    load = PAPER_DATASETS["abide"]["load"]
    train, test = load("train", tmp_path, None), load("test", tmp_path, None)
    assert (len(train), len(test)) == (18, 2) and sorted(test.targets) == [0, 1]
    order, _ = train_test_split(np.arange(20), test_size=0.1, stratify=labels, random_state=1)
    for position in (0, 7):
        image, label = train[position]
        subject = order[position]
        assert label == labels[subject] and image.shape == (3, 200, 200)
        expected = torch.from_numpy(_ilm_vp_image(matrices[subject])).float()
        assert torch.allclose(image, expected.expand(3, -1, -1), atol=1e-6)
    # the upper-triangle vector format gives the same images
    rows, cols = np.triu_indices(200, k=1)
    np.save(tmp_path / "abide" / "connectivity.npy", matrices[:, rows, cols])
    assert torch.equal(load("train", tmp_path, None)[7][0], train[7][0])
    small = load("test", tmp_path, SIZE)
    for i in range(len(small)):
        image, label = small[i]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1 and label in (0, 1)
        assert torch.equal(image[0], image[2])


def test_abide_reads_ilm_vp_hdf5_and_phenotypes(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    matrices, labels = _abide_subjects()
    rows, cols = np.triu_indices(200, k=1)
    folder = tmp_path / "abide"
    folder.mkdir()
    ids = [f"Site_{50000 + i}" for i in range(len(labels))]
    with h5py.File(folder / "abide.hdf5", "w") as f:
        for i, subject in enumerate(ids):
            f.create_dataset(f"patients/{subject}/cc200", data=matrices[i][rows, cols])
    lines = ["SUB_ID,FILE_ID,DX_GROUP"] + [
        f"{50000 + i},{s},{2 - y}" for i, (s, y) in enumerate(zip(ids, labels, strict=True))
    ]
    (folder / "Phenotypic_V1_0b_preprocessed1.csv").write_text("\n".join(lines) + "\n")
    from_h5 = PAPER_DATASETS["abide"]["load"]("train", tmp_path, None)
    np.save(folder / "connectivity.npy", matrices)
    np.save(folder / "labels.npy", labels)
    from_npy = PAPER_DATASETS["abide"]["load"]("train", tmp_path, None)
    assert from_h5.targets == from_npy.targets
    assert torch.equal(from_h5[3][0], from_npy[3][0])
