"""The paper's protocol as options: seed defaults, model selection, n-shot budgets, splits,
ABIDE's prompt mask, the legacy ECE's batches, fake datasets and the paper grid's dry run."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.adapt.prompt import ExpansiveVisualPrompt, lower_triangle_mask
from lib.core.utils import project_root
from lib.datasets.fake_data import write_fake
from lib.datasets.paper import DatasetNotFoundError
from lib.datasets.registry import dataset_labels, get_dataset
from lib.metrics.calibration import calibration_metrics, seed_ece
from lib.models.backbone import imagenet_weights
from lib.study import results
from lib.study.config import ExperimentConfig
from lib.study.experiment import run_experiments
from lib.study.grid import expand_grid, load_params
from lib.study.seed_cli import config_from_args, parser
from lib.study.sweep import main as sweep_main

PAPER = dict(arch="resnet50", network="dense", weights="IMAGENET1K_V2")

# ---------------------------------------------------------------- seed defaults


def test_cli_defaults_are_the_paper_scripts():
    args = parser().parse_args([])
    assert (args.network, args.model, args.seed, args.epoch) == ("LT", "resnet50", 4, 100)
    assert (args.lr, args.batch_size, args.n_shot, args.mapping_interval) == (0.01, 128, -1, 1)
    cfg = config_from_args(args)
    assert (cfg.network, cfg.sparsity, cfg.arch, cfg.seed) == ("ticket", 9, "resnet50", 4)
    assert (cfg.selection, cfg.n_shot_policy, cfg.split) == ("val", "strict", "coop")


def test_dense_default_is_imagenet1k_v2():
    cfg = config_from_args(parser().parse_args(["--network", "dense"]))
    assert (cfg.weights, cfg.sparsity) == ("IMAGENET1K_V2", 0)
    assert imagenet_weights("resnet50") == "IMAGENET1K_V2"  # ilm_vp.py, linear_probing.py
    assert imagenet_weights("resnet18") == "IMAGENET1K_V1"  # the paper's other archs
    v1 = config_from_args(parser().parse_args(["--network", "dense", "--weights", "IMAGENET1K_V1"]))
    assert v1.weights == "IMAGENET1K_V1"  # V1 stays selectable
    paper = expand_grid(load_params(project_root() / "params" / "paper.yaml"))
    dense = [c for c in paper if c.network == "dense"]
    assert dense and {c.weights for c in dense} == {"IMAGENET1K_V2"}
    assert len(paper) == 3780
    assert {(c.selection, c.n_shot_policy, c.split) for c in paper} == {("test", "at_most", "seed")}


# ---------------------------------------------------------------- legacy ECE batches


@pytest.mark.parametrize(
    "dataset,method,batch_size,expected",
    [
        ("oxfordpets", "vp", 128, 64),
        ("abide", "vp", 128, 64),
        ("cifar10", "vp", 32, 128),
        ("oxfordpets", "lp", 32, 32),
        ("abide", "lp", 128, 128),
    ],
)
def test_seed_ece_takes_the_paper_test_batch(dataset, method, batch_size, expected):
    cfg = ExperimentConfig(dataset=dataset, method=method, batch_size=batch_size, **PAPER)
    assert cfg.seed_test_batch_size == expected
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(640, 37)) * 3, rng.integers(0, 37, 640)
    metrics = calibration_metrics(logits, labels, batch_size=cfg.seed_test_batch_size)
    assert metrics["seed_ece"] == pytest.approx(seed_ece(logits, labels, batch_size=expected))
    if expected != 128:  # the legacy metric scales with 1 / batch: 64 is not 128
        assert metrics["seed_ece"] != pytest.approx(seed_ece(logits, labels, batch_size=128))


# ---------------------------------------------------------------- ABIDE's prompt mask


def _seed_abide_mask() -> np.ndarray:
    """ABIDE.get_mask() of the paper's data/abide.py, loop for loop."""
    central_size, idx = 200, 0
    m = np.ones((central_size, central_size))
    for j in range(central_size):
        k = 0
        while k < 200:
            if k <= j:
                k += 1
            elif idx < 19900:
                m[j][k] = 0
                idx += 1
                k += 1
            else:
                break
    return m


def test_abide_vp_learns_the_paper_lower_triangle():
    assert torch.equal(lower_triangle_mask(200), torch.from_numpy(_seed_abide_mask()).float())
    cfg = ExperimentConfig(dataset="abide", method="vp", **PAPER)
    assert cfg.inner_mask == "lower_triangle" and cfg.input_size == 200
    vp = ExpansiveVisualPrompt(224, 200, inner_mask=lower_triangle_mask(200))
    inner = vp.mask[:, 12:212, 12:212]
    assert torch.equal(inner, torch.tril(torch.ones(200, 200)).expand(3, -1, -1))
    assert vp.mask[:, :12].eq(1).all() and vp.mask[:, 212:].eq(1).all()  # the border too
    assert (
        ExperimentConfig(dataset="abide", method="vp", prompt_mask="border", **PAPER).inner_mask
        == "none"
    )
    assert ExperimentConfig(dataset="cifar10", method="vp", **PAPER).inner_mask == "none"
    with pytest.raises(ValueError, match="prompt_mask 'lower_triangle' needs method 'vp'"):
        ExperimentConfig(dataset="abide", method="lp", prompt_mask="lower_triangle", **PAPER)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("selection", "best", "unknown selection 'best'; choose one of: val, last, test"),
        ("n_shot_policy", "all", "unknown n_shot_policy 'all'; choose one of: strict, at_most"),
        ("split", "official", "unknown split 'official'; choose one of: coop, seed"),
        ("val_shots", "four", "unknown val_shots .four.; choose one of: n_shot, coop"),
        ("prompt_mask", "full", "unknown prompt_mask 'full'; choose one of: auto, border"),
    ],
)
def test_protocol_fields_name_the_allowed_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**{field: value})


# ---------------------------------------------------------------- labels a run uses


@pytest.fixture
def make_cfg(tiny_config):
    """This file's runs: the shared tiny config (conftest.TINY) with its own defaults."""
    return functools.partial(
        tiny_config,
        epochs=3,
        n_shot=-1,
        train_pool=-1,
        max_val=1000,
        max_test=-1,
        study="p",
        method="lp",
    )


def test_records_state_the_labels_they_used(outputs, make_cfg):
    val, last, test, coop = run_experiments(
        [
            make_cfg(n_shot=10, batch_size=32),
            make_cfg(n_shot=10, selection="last"),
            make_cfg(n_shot=10, selection="test"),
            make_cfg(n_shot=10, val_shots="coop"),
        ]
    )
    labels = val["labels"]
    assert labels["n_shot_requested"] == 10 and labels["selection"] == "val"
    assert labels["train_per_class"] == [10] * 10
    assert len(labels["val_per_class"]) == 10 and max(labels["val_per_class"]) <= 10
    assert labels["val_total"] == val["sizes"]["val"] == 100  # 10 per class, outside the sample
    assert labels["temperature_fitted_on"] == "val" and not labels["optimistic"]
    assert val["metrics"]["seed_ece_batch_size"] == 32  # LP: the run's batch size
    assert coop["labels"]["val_per_class"] == [4] * 10  # CoOp: min(n, 4)
    assert last["labels"]["val_total"] == 0 and last["metrics"]["val"] is None
    assert last["labels"]["temperature_fitted_on"] == "train"
    assert last["metrics"]["best_epoch"] == 2  # the last of 3 epochs
    assert test["labels"]["optimistic"] and test["metrics"]["optimistic"]
    assert test["labels"]["selected_on"] == "test"
    assert test["history"][0]["val_accuracy"] is not None  # accuracy of the test set
    frame = results.results_frame("p")
    assert {"selection", "optimistic", "labels_per_class_val_max"} <= set(frame.columns)
    assert frame.set_index("selection").loc["test", "optimistic"]


def test_full_data_without_validation_keeps_the_whole_training_split(outputs, make_cfg):
    carved, whole = run_experiments([make_cfg(max_val=1000), make_cfg(selection="last")])
    assert whole["sizes"]["val"] == 0
    assert whole["sizes"]["train"] == carved["sizes"]["train"] + carved["sizes"]["val"]


def test_at_most_takes_short_classes_whole_and_says_so(outputs, make_cfg):
    with pytest.raises(ValueError, match="n_shot=200 exceeds the smallest class size"):
        run_experiments([make_cfg(n_shot=200)])
    (record,) = run_experiments([make_cfg(n_shot=200, n_shot_policy="at_most", selection="last")])
    per_class = record["labels"]["train_per_class"]
    assert record["labels"]["n_shot_requested"] == 200 and max(per_class) < 200
    assert sum(per_class) == record["sizes"]["train"]


# ---------------------------------------------------------------- fake datasets, splits


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    return write_fake(tmp_path_factory.mktemp("fake"), ["dtd", "flowers102", "eurosat", "abide"])


def _per_class(name: str, split: str, root: Path, partition: str) -> list[int]:
    ds = get_dataset(name, split, root, image_size=8, partition=partition)
    return torch.bincount(dataset_labels(ds)).tolist()


def test_fake_data_has_the_real_counts_of_both_partitions(fake_root):
    assert _per_class("dtd", "train", fake_root, "seed") == [40] * 47  # partition 1, no val
    assert _per_class("dtd", "train", fake_root, "coop") == [60] * 47
    assert _per_class("dtd", "test", fake_root, "coop") == [36] * 47
    assert _per_class("flowers102", "train", fake_root, "seed") == [10] * 102
    assert sum(_per_class("flowers102", "test", fake_root, "seed")) == 6149
    assert sum(_per_class("flowers102", "train", fake_root, "coop")) == 4093
    # EuroSAT, split seed: the real 90/10 split the paper's code meant (its own was a no-op)
    train = _per_class("eurosat", "train", fake_root, "seed")
    test = _per_class("eurosat", "test", fake_root, "seed")
    assert sum(train) + sum(test) == 27000 and sum(test) == 2700
    assert all(abs(t - 0.1 * (t + r)) <= 1 for t, r in zip(test, train, strict=True))
    assert sum(_per_class("abide", "train", fake_root, "seed")) == 931
    image, label = get_dataset("dtd", "test", fake_root, image_size=8)[0]
    assert image.shape == (3, 8, 8) and label == 0


def test_seed_split_of_lmdb_sets_needs_coop_file(fake_root):
    write_fake(fake_root, ["food101"])
    (fake_root / "food101" / "split_zhou_Food101.json").rename(fake_root / "food101.json")
    try:
        with pytest.raises(DatasetNotFoundError, match="split 'seed' reads it"):
            get_dataset("food101", "train", fake_root, image_size=8, partition="seed")
        assert sum(_per_class("food101", "train", fake_root, "coop")) == 75750  # official
    finally:
        (fake_root / "food101.json").rename(fake_root / "food101" / "split_zhou_Food101.json")
    assert _per_class("food101", "train", fake_root, "seed") == [500] * 101  # CoOp's train


def test_fake_data_never_overwrites_a_real_root(tmp_path):
    (tmp_path / "dtd").mkdir()
    with pytest.raises(ValueError, match="is not a fake root"):
        write_fake(tmp_path, ["dtd"])


def test_dry_run_lists_runs_and_warns_on_missing_tickets(fake_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARSE_VP_DATA", str(fake_root))
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "outputs"))
    params = tmp_path / "grid.yaml"
    params.write_text(
        "study: dry\n"
        "defaults: {arch: resnet50, pretrained_dir: " + str(tmp_path / "none") + ",\n"
        "           split: seed, n_shot_policy: at_most, selection: test}\n"
        "grid:\n"
        "  - {dataset: [dtd, flowers102], network: ticket, sparsity: [1, 2], method: lp,\n"
        "     n_shot: [10, 50, -1], seed: [1, 2]}\n"
    )
    assert sweep_main([str(params), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry: 24 runs in 4 notebooks" in out and "dry run: 24 runs valid" in out
    assert "warning: 4 source file(s) missing" in out and "resnet50_dyn4_1_mask.pth" in out
    assert out.count("flowers102-lt2-lp-50shot-s2-") == 1  # every run is listed
    # honest selection cannot validate there: dtd's seed split has 40 per class, flowers102 10
    params.write_text(params.read_text().replace("selection: test", "selection: val"))
    with pytest.raises(
        ValueError, match=r"dtd \(seed 1\): selection 'val' needs images outside the 50-shot"
    ):
        sweep_main([str(params), "--dry-run"])
