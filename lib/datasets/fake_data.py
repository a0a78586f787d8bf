"""Tiny fake copies of the 14 paper datasets, each in its native on-disk format and with the
real per-class counts of the splits the project reads: dry runs and tests of the paper grid.

    python -m lib.fake_data ROOT                        # all 14
    python -m lib.fake_data ROOT --datasets dtd abide   # some
    SPARSE_VP_DATA=ROOT python -m lib.sweep params/paper.yaml --dry-run

Every image of a class is a hard link to one 8x8 image of that class's colour, so ~270,000
files cost a few MB; CIFAR's pickles and SVHN's .mat arrays are 32x32 by format (about
0.4 GB for the two CIFARs; SVHN's are compressed). The root gets lib.datasets.paper's
FAKE_MARKER, so loading never downloads, and an existing folder without it is never touched.

Counts: CIFAR-10/100, SVHN and the GTSRB test set are the official ones; the nine
file-based sets have CoOp's split file with CoOp's per-class counts (lib/fake_counts.json)
and the official partition files the project and the paper's code read (dtd partition 1
40/40/40, flowers102 10/10/rest, food101 750/250, oxfordpets trainval/test, stanfordcars
train/test = CoOp's train+val/test). Approximate, and said so where written: the GTSRB
training counts (torchvision's 26,640 images; scaled from the 39,209-image final set),
ABIDE's 1,035 subjects (505 ASD), SUN397 (only the 100 images per class CoOp's split names,
under made-up class names) and Caltech101's dropped folders (467 and 435 images).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np
import scipy.io
from PIL import Image

from lib.core.cli import HelpFormatter, run_main
from lib.core.utils import atomic_write_bytes, atomic_write_json, atomic_write_text

SIZE = 8  # side of every fake image file (CIFAR and SVHN: 32, their formats' fixed size)
COUNTS_FILE = Path(__file__).with_name("fake_counts.json")
CIFAR_PER_CLASS = {"cifar10": (5000, 1000), "cifar100": (500, 100)}
SVHN_COUNTS = {  # digits 0..9
    "train": (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659),
    "test": (1744, 5099, 4149, 2882, 2523, 2384, 1977, 2019, 1660, 1595),
}
GTSRB_TEST = (60, 720, 750, 450, 660, 630, 150, 450, 450, 480, 660, 420, 690, 720, 270, 210,
              150, 360, 390, 60, 90, 90, 120, 150, 90, 480, 180, 60, 150, 90, 150, 270, 60,
              210, 120, 390, 120, 60, 690, 90, 90, 60, 90)  # fmt: skip
# The 39,209-image final training set; torchvision's training download holds 26,640.
GTSRB_FINAL_TRAIN = (210, 2220, 2250, 1410, 1980, 1860, 420, 1440, 1410, 1470, 2010, 1320,
                     2100, 2160, 780, 630, 420, 1110, 1200, 210, 360, 330, 390, 510, 270,
                     1500, 600, 240, 540, 270, 450, 780, 240, 689, 420, 1200, 390, 210, 2070,
                     300, 360, 240, 240)  # fmt: skip
GTSRB_TRAIN_TOTAL = 26640
FOOD101_CLASSES = tuple(
    "apple_pie baby_back_ribs baklava beef_carpaccio beef_tartare beet_salad beignets bibimbap "
    "bread_pudding breakfast_burrito bruschetta caesar_salad cannoli caprese_salad carrot_cake "
    "ceviche cheese_plate cheesecake chicken_curry chicken_quesadilla chicken_wings "
    "chocolate_cake chocolate_mousse churros clam_chowder club_sandwich crab_cakes creme_brulee "
    "croque_madame cup_cakes deviled_eggs donuts dumplings edamame eggs_benedict escargots "
    "falafel filet_mignon fish_and_chips foie_gras french_fries french_onion_soup french_toast "
    "fried_calamari fried_rice frozen_yogurt garlic_bread gnocchi greek_salad "
    "grilled_cheese_sandwich grilled_salmon guacamole gyoza hamburger hot_and_sour_soup hot_dog "
    "huevos_rancheros hummus ice_cream lasagna lobster_bisque lobster_roll_sandwich "
    "macaroni_and_cheese macarons miso_soup mussels nachos omelette onion_rings oysters "
    "pad_thai paella pancakes panna_cotta peking_duck pho pizza pork_chop poutine prime_rib "
    "pulled_pork_sandwich ramen ravioli red_velvet_cake risotto samosa sashimi scallops "
    "seaweed_salad shrimp_and_grits spaghetti_bolognese spaghetti_carbonara spring_rolls steak "
    "strawberry_shortcake sushi tacos takoyaki tiramisu tuna_tartare waffles".split()
)
FOOD101_OFFICIAL, FOOD101_COOP = (750, 250), (500, 200, 300)  # per class, of 1,000
SUN397_COOP = (40, 10, 50)  # per class: CoOp's 50 train (split 80/20 into val) + 50 test
DTD_OFFICIAL = 40  # per class in each of train1, val1, test1
FLOWERS_OFFICIAL = 10  # per class in train and in val; the rest is test
CALTECH_DROPPED = {"BACKGROUND_Google": 467, "Faces_easy": 435}
ABIDE_SUBJECTS = {1: 505, 0: 530}  # ASD, control (ABIDE I preprocessed, CC200)
ABIDE_REGIONS = 200


def _colour(label: int) -> tuple[int, int, int]:
    return (40 + 53 * label) % 256, (90 + 97 * label) % 256, 128


class Images:
    """One small image file per (class, format); every other file of the class links to it."""

    def __init__(self) -> None:
        self.first: dict[tuple[int, str], Path] = {}

    def write(self, path: Path, label: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = "PPM" if path.suffix == ".ppm" else "JPEG"
        source = self.first.get((label, fmt))
        if source is not None:
            try:
                os.link(source, path)  # a directory entry, no data: real counts for free
                return
            except OSError:  # no hard links here (another filesystem): copy the bytes
                shutil.copyfile(source, path)
                return
        buffer = io.BytesIO()
        Image.new("RGB", (SIZE, SIZE), _colour(label)).save(buffer, fmt)
        atomic_write_bytes(path, buffer.getvalue())
        self.first[(label, fmt)] = path


def _coop_rows() -> dict[str, list[list]]:
    return {k: v for k, v in json.loads(COUNTS_FILE.read_text()).items() if k != "_source"}


def _write_coop(folder: Path, name: str, members: list[list[str]], rows: list[list]) -> None:
    """CoOp's split file: per class, its files shuffled (seed 0) into train / val / test."""
    from lib.datasets.paper import COOP_SPLIT_FILES  # torchvision: not for --help

    rng = np.random.default_rng(0)
    table: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, (files, (_, cname, n_train, n_val, n_test)) in enumerate(
        zip(members, rows, strict=True)
    ):
        if len(files) != n_train + n_val + n_test:
            raise RuntimeError(f"{name} class {label}: {len(files)} files for CoOp's counts")
        order = [files[i] for i in rng.permutation(len(files))]
        for split, part in (
            ("train", order[:n_train]),
            ("val", order[n_train : n_train + n_val]),
            ("test", order[n_train + n_val :]),
        ):
            table[split] += [[f, label, cname] for f in part]
    atomic_write_text(folder / COOP_SPLIT_FILES[name], json.dumps(table))


# ---------------------------------------------------------------- fixed-size formats


def _cifar(root: Path, name: str, images: Images) -> None:
    from lib.datasets.paper import PAPER_DATASETS  # torchvision: not for --help

    per_train, per_test = CIFAR_PER_CLASS[name]
    classes = 10 if name == "cifar10" else 100
    rng = np.random.default_rng(0)
    colours = np.array([_colour(c) for c in range(classes)], np.uint8)

    def rows(labels: np.ndarray) -> np.ndarray:  # [N, 3072] in CHW order
        return np.repeat(colours[labels], 32 * 32, axis=1).reshape(len(labels), -1)

    train = rng.permutation(np.repeat(np.arange(classes), per_train))
    test = np.repeat(np.arange(classes), per_test)
    if name == "cifar10":
        folder = root / "cifar10" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for b, part in enumerate(np.array_split(train, 5), start=1):
            _pickle(folder / f"data_batch_{b}", {"data": rows(part), "labels": part.tolist()})
        _pickle(folder / "test_batch", {"data": rows(test), "labels": test.tolist()})
        _pickle(folder / "batches.meta", {"label_names": list(PAPER_DATASETS[name]["classes"])})
        return
    folder = root / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, labels in (("train", train), ("test", test)):
        coarse = (labels // 5).tolist()
        entry = {"data": rows(labels), "fine_labels": labels.tolist(), "coarse_labels": coarse}
        _pickle(folder / split, entry)
    names = [f"class_{c:02d}" for c in range(100)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": names[:20]})


def _pickle(path: Path, value: dict) -> None:
    atomic_write_bytes(path, pickle.dumps(value, protocol=4))


def _savemat(path: Path, value: dict, compress: bool = False) -> None:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, value, do_compression=compress)
    atomic_write_bytes(path, buffer.getvalue())


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def _svhn(root: Path, name: str, images: Images) -> None:
    folder = root / "svhn"
    folder.mkdir(parents=True)
    for split, counts in SVHN_COUNTS.items():
        labels = np.repeat(np.arange(10), counts)
        x = np.zeros((32, 32, 3, len(labels)), np.uint8)  # zeros compress to almost nothing
        stored = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]  # 10 is digit 0
        _savemat(folder / f"{split}_32x32.mat", {"X": x, "y": stored}, compress=True)


def _gtsrb_train_counts() -> list[int]:
    scaled = [round(c * GTSRB_TRAIN_TOTAL / sum(GTSRB_FINAL_TRAIN)) for c in GTSRB_FINAL_TRAIN]
    scaled[scaled.index(max(scaled))] += GTSRB_TRAIN_TOTAL - sum(scaled)
    return scaled


def _gtsrb(root: Path, name: str, images: Images) -> None:
    base = root / "gtsrb" / "gtsrb"
    for label, count in enumerate(_gtsrb_train_counts()):
        for k in range(count):
            images.write(base / f"GTSRB/Training/{label:05d}/{k // 30:05d}_{k % 30:05d}.ppm", label)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    labels = np.repeat(np.arange(43), GTSRB_TEST)
    for k, label in enumerate(np.random.default_rng(0).permutation(labels).tolist()):
        images.write(base / f"GTSRB/Final_Test/Images/{k:05d}.ppm", label)
        rows.append(f"{k:05d}.ppm;{SIZE};{SIZE};0;0;{SIZE - 1};{SIZE - 1};{label}")
    atomic_write_text(base / "GT-final_test.csv", "\n".join(rows) + "\n")


def _abide(root: Path, name: str, images: Images) -> None:
    folder = root / "abide"
    folder.mkdir(parents=True)
    labels = np.random.default_rng(0).permutation(
        np.repeat(list(ABIDE_SUBJECTS), list(ABIDE_SUBJECTS.values()))
    )
    # [N, R(R-1)/2] upper triangles, float16 zeros: the format at a quarter of the size
    vectors = np.zeros((len(labels), ABIDE_REGIONS * (ABIDE_REGIONS - 1) // 2), np.float16)
    _save_npy(folder / "connectivity.npy", vectors)
    _save_npy(folder / "labels.npy", labels.astype(np.int64))


# ---------------------------------------------------------------- image folders


def _dtd(root: Path, name: str, images: Images) -> None:
    data = root / "dtd" / "dtd" / "dtd"
    rows = _coop_rows()[name]
    lists: dict[str, list[str]] = {"train1": [], "val1": [], "test1": []}
    members = []
    for label, (cls, _, *coop) in enumerate(rows):
        files = [f"{cls}/{cls}_{k:04d}.jpg" for k in range(1, sum(coop) + 1)]
        for k, file in enumerate(files):
            images.write(data / "images" / file, label)
            lists[("train1", "val1", "test1")[min(k // DTD_OFFICIAL, 2)]].append(file)
        members.append(files)
    (data / "labels").mkdir()
    for part, lines in lists.items():
        atomic_write_text(data / "labels" / f"{part}.txt", "\n".join(lines) + "\n")
    _write_coop(root / "dtd", name, members, rows)


def _flowers102(root: Path, name: str, images: Images) -> None:
    base = root / "flowers102" / "flowers-102"
    rows = _coop_rows()[name]
    labels, ids, members = [], {"trnid": [], "valid": [], "tstid": []}, []
    for label, (_, _, *coop) in enumerate(rows):
        files = []
        for k in range(sum(coop)):
            image_id = len(labels) + 1
            labels.append(label + 1)
            files.append(f"image_{image_id:05d}.jpg")
            images.write(base / "jpg" / files[-1], label)
            ids[("trnid", "valid", "tstid")[min(k // FLOWERS_OFFICIAL, 2)]].append(image_id)
        members.append(files)
    _savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    _savemat(base / "setid.mat", {k: np.array([v]) for k, v in ids.items()})
    _write_coop(root / "flowers102", name, members, rows)


def _food101(root: Path, name: str, images: Images) -> None:
    base = root / "food101" / "food-101"
    meta: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    members = []
    for label, cls in enumerate(FOOD101_CLASSES):
        files = []
        for k in range(sum(FOOD101_OFFICIAL)):
            stem = f"{cls}/{100000 + k}"
            images.write(base / "images" / f"{stem}.jpg", label)
            meta["train" if k < FOOD101_OFFICIAL[0] else "test"].setdefault(cls, []).append(stem)
            files.append(f"{stem}.jpg")
        members.append(files)
    (base / "meta").mkdir()
    for split, table in meta.items():
        atomic_write_text(base / "meta" / f"{split}.json", json.dumps(table))
    atomic_write_text(base / "meta" / "classes.txt", "\n".join(FOOD101_CLASSES) + "\n")
    rows = [[c, c.replace("_", " "), *FOOD101_COOP] for c in FOOD101_CLASSES]
    _write_coop(root / "food101", name, members, rows)


def _eurosat(root: Path, name: str, images: Images) -> None:
    rows = _coop_rows()[name]
    members = []
    for label, (cls, _, *coop) in enumerate(rows):
        files = [f"{cls}/{cls}_{k}.jpg" for k in range(1, sum(coop) + 1)]
        for file in files:
            images.write(root / "eurosat" / "eurosat" / "2750" / file, label)
        members.append(files)
    _write_coop(root / "eurosat", name, members, rows)


def _oxfordpets(root: Path, name: str, images: Images) -> None:
    base = root / "oxfordpets" / "oxford-iiit-pet"
    rows = _coop_rows()[name]
    lists: dict[str, list[str]] = {"trainval": [], "test": []}
    members = []
    for label, (breed, _, n_train, n_val, n_test) in enumerate(rows):
        species = 1 if breed[0].isupper() else 2  # cats are capitalised in the real files
        files = [f"{breed}_{k}.jpg" for k in range(1, n_train + n_val + n_test + 1)]
        for k, file in enumerate(files):
            images.write(base / "images" / file, label)
            part = "trainval" if k < n_train + n_val else "test"
            lists[part].append(f"{file[:-4]} {label + 1} {species} {label + 1}")
        members.append(files)
    (base / "annotations").mkdir()
    for part, lines in lists.items():
        atomic_write_text(base / "annotations" / f"{part}.txt", "\n".join(lines) + "\n")
    # CoOp's train/val come from trainval and its test is the official test
    _write_coop_in_parts(root / "oxfordpets", name, members, rows)


def _write_coop_in_parts(folder: Path, name: str, members: list[list[str]], rows: list) -> None:
    """CoOp's split where its test list is the official test set: the last n_test files."""
    from lib.datasets.paper import COOP_SPLIT_FILES  # torchvision: not for --help

    table: dict[str, list] = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(0)
    for label, (files, (_, cname, n_train, n_val, _)) in enumerate(zip(members, rows, strict=True)):
        head = [files[i] for i in rng.permutation(n_train + n_val)]
        table["train"] += [[f, label, cname] for f in head[:n_train]]
        table["val"] += [[f, label, cname] for f in head[n_train:]]
        table["test"] += [[f, label, cname] for f in files[n_train + n_val :]]
    atomic_write_text(folder / COOP_SPLIT_FILES[name], json.dumps(table))


def _stanfordcars(root: Path, name: str, images: Images) -> None:
    base = root / "stanfordcars" / "stanford_cars"
    rows = _coop_rows()[name]
    (base / "devkit").mkdir(parents=True)
    names = np.array([cname for _, cname, *_ in rows], object)
    _savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    files: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    members: list[list[str]] = [[] for _ in rows]
    for label, (_, _, n_train, n_val, n_test) in enumerate(rows):
        for split, count in (("train", n_train + n_val), ("test", n_test)):
            for _ in range(count):
                fname = f"{len(files[split]) + 1:05d}.jpg"
                files[split].append((fname, label))
                images.write(base / f"cars_{split}" / fname, label)
                members[label].append(f"cars_{split}/{fname}")
    for split, mat in (
        ("train", base / "devkit" / "cars_train_annos.mat"),
        ("test", base / "cars_test_annos_withlabels.mat"),
    ):
        annotations = np.zeros(len(files[split]), dtype=[("fname", "O"), ("class", "O")])
        for k, (fname, label) in enumerate(files[split]):
            annotations[k] = (fname, label + 1)
        _savemat(mat, {"annotations": annotations})
    _write_coop_in_parts(root / "stanfordcars", name, members, rows)


def _sun397(root: Path, name: str, images: Images) -> None:
    base = root / "sun397" / "SUN397"
    classes = [f"{chr(97 + i % 26)}/scene_{i:03d}" + ("/indoor" if i % 5 == 0 else "")
               for i in range(397)]  # fmt: skip
    classes.sort()
    members = []
    for label, cls in enumerate(classes):
        files = [f"{cls}/sun_{label:03d}{k:04d}.jpg" for k in range(sum(SUN397_COOP))]
        for file in files:
            images.write(base / file, label)
        members.append(files)
    atomic_write_text(base / "ClassName.txt", "".join(f"/{c}\n" for c in classes))
    rows = [[c, c.split("/", 1)[1].replace("/", " "), *SUN397_COOP] for c in classes]
    _write_coop(root / "sun397", name, members, rows)


def _caltech101(root: Path, name: str, images: Images) -> None:
    base = root / "caltech101" / "caltech101" / "101_ObjectCategories"
    rows = _coop_rows()[name]
    members = []
    for label, (cls, _, *coop) in enumerate(rows):
        files = [f"{cls}/image_{k:04d}.jpg" for k in range(1, sum(coop) + 1)]
        for file in files:
            images.write(base / file, label)
        members.append(files)
    for cls, count in CALTECH_DROPPED.items():
        for k in range(1, count + 1):
            images.write(base / cls / f"image_{k:04d}.jpg", 255)
    _write_coop(root / "caltech101", name, members, rows)


def _ucf101(root: Path, name: str, images: Images) -> None:
    base = root / "ucf101" / "UCF-101-midframes"
    rows = _coop_rows()[name]
    members = []
    for label, (cls, _, *coop) in enumerate(rows):
        stem = cls.replace("_", "")
        files = [f"{cls}/v_{stem}_g{k // 7 + 1:02d}_c{k % 7 + 1:02d}.jpg" for k in range(sum(coop))]
        for file in files:
            images.write(base / file, label)
        members.append(files)
    _write_coop(root / "ucf101", name, members, rows)


WRITERS: dict[str, Callable[[Path, str, Images], None]] = {
    "cifar10": _cifar,
    "cifar100": _cifar,
    "svhn": _svhn,
    "gtsrb": _gtsrb,
    "dtd": _dtd,
    "flowers102": _flowers102,
    "food101": _food101,
    "eurosat": _eurosat,
    "oxfordpets": _oxfordpets,
    "stanfordcars": _stanfordcars,
    "sun397": _sun397,
    "caltech101": _caltech101,
    "ucf101": _ucf101,
    "abide": _abide,
}


def write_fake(root: str | Path, names: list[str] | None = None) -> Path:
    """Write the fake copies of `names` (default: all 14) under `root`; returns the root."""
    from lib.datasets.paper import FAKE_MARKER  # torchvision: not for --help

    root = Path(root)
    names = list(WRITERS) if names is None else names
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        raise ValueError(
            f"unknown dataset(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(WRITERS)}"
        )
    if (root.exists() or root.is_symlink()) and not root.is_dir():
        raise ValueError(f"{root} is not a folder; give a folder to write the datasets into")
    marker = root / FAKE_MARKER
    real = [n for n in names if (root / n).exists() and not marker.is_file()]
    if real:
        raise ValueError(
            f"{root} already holds {', '.join(real)} and is not a fake root (no {FAKE_MARKER}); "
            "choose an empty folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    written = json.loads(marker.read_text()) if marker.is_file() else {"datasets": []}
    atomic_write_json(marker, written)  # before any dataset: a half-written root is fake too
    images = Images()
    for name in names:
        shutil.rmtree(root / name, ignore_errors=True)
        WRITERS[name](root, name, images)
        written["datasets"] = sorted({*written["datasets"], name})
        atomic_write_json(marker, written)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lib.fake_data",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("root", help="folder to write into (use it as $SPARSE_VP_DATA)")
    parser.add_argument("--datasets", nargs="+", default=None, help="default: all 14")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        write_fake(args.root, args.datasets)
    except ValueError as error:
        parser.error(str(error))
    except OSError as error:  # a file on the way to the root, a read-only mount, a full disk
        where = error.filename or args.root
        parser.error(f"cannot write into {args.root}: {error.strerror or error} ({where})")
    names = args.datasets or list(WRITERS)
    print(f"[fake_data] {len(names)} datasets in {args.root} ({time.perf_counter() - start:.0f} s)")
    return 0


def cli() -> NoReturn:
    """`python -m lib.fake_data`: main() as a command."""
    run_main(main, "python -m lib.fake_data")


if __name__ == "__main__":
    cli()
