"""Paper scale on CPU: ImageNet architectures, the paper's ticket files and a 224-px transfer.

The networks are randomly initialised (no downloads here); what is checked is the plumbing
the paper's runs depend on: ticket files of a resnet50 load as mask * weight with the
measured sparsity, a checkpoint of another architecture is refused, and the transfer
notebook runs LP and ILM-VP on CIFAR-10 (native pickle batches) with a resnet18 source,
VP feeding 32-px images padded to 224 and mapping to named ImageNet classes.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.datasets.paper import CIFAR10_CLASSES, NO_DOWNLOAD_ENV
from lib.models.backbone import (
    CheckpointError,
    create_backbone,
    imagenet_classes,
    load_lottery_ticket,
    prunable_names,
    sparsity,
    ticket_paths,
)
from lib.study import results
from lib.study.config import ExperimentConfig
from lib.study.sweep import execute_notebook

TRAIN_PER_CLASS, TEST_PER_CLASS = 6, 2


def save_paper_ticket(
    folder: Path, arch: str, state: int, weights: dict[str, torch.Tensor], mask: dict
) -> tuple[Path, Path]:
    """Write {arch}_dyn4_{state}_checkpoint.pth / _mask.pth as the paper's code does: plain
    torch.save of state dicts whose keys carry a "model." prefix (written by hand, not by lib)."""
    ckpt, mask_path = ticket_paths(folder, arch, state)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model." + k: v for k, v in weights.items()}, ckpt)
    torch.save({"model." + k: v for k, v in mask.items()}, mask_path)
    return ckpt, mask_path


def random_mask(model: torch.nn.Module, keep: float, seed: int) -> dict[str, torch.Tensor]:
    """0/1 float tensors over every conv and linear weight, each entry kept with p = keep."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {
        n: (torch.rand(params[n].shape, generator=gen) < keep).float()
        for n in prunable_names(model)
    }


def test_resnet50_ticket_in_the_paper_format_loads_as_mask_times_weight(tmp_path):
    torch.manual_seed(0)
    source = create_backbone("resnet50")
    weights = {k: v.clone() for k, v in source.state_dict().items()}
    mask = random_mask(source, keep=0.5, seed=0)
    ckpt, mask_path = save_paper_ticket(tmp_path, "resnet50", 3, weights, mask)
    assert ckpt.name == "resnet50_dyn4_3_checkpoint.pth"
    assert mask_path.name == "resnet50_dyn4_3_mask.pth"
    del source

    model = load_lottery_ticket("resnet50", ckpt, mask_path)
    loaded = model.state_dict()
    assert set(loaded) == set(weights)
    assert set(mask) == {n for n in loaded if n.endswith(".weight") and loaded[n].ndim in (2, 4)}
    for name, value in weights.items():
        expected = value * mask[name] if name in mask else value
        assert torch.equal(loaded[name], expected), name
    # Measured sparsity = zeros of mask * weight over all conv + linear weights: the mask's
    # ~50%, plus the odd weight that random init drew as exactly 0 (a few in 25M).
    total = sum(m.numel() for m in mask.values())
    zeros = sum(int((weights[n] * m == 0).sum()) for n, m in mask.items())
    mask_zeros = sum(m.numel() - int(m.sum()) for m in mask.values())
    assert sparsity(model) == pytest.approx(zeros / total, abs=1e-12)
    assert sparsity(model) == pytest.approx(mask_zeros / total, abs=1e-6)
    assert 0.49 < sparsity(model) < 0.51
    assert model.fc.out_features == 1000
    del model, loaded

    # A resnet34 checkpoint is refused, naming the file and what does not fit.
    other = create_backbone("resnet34").state_dict()
    ckpt34, _ = save_paper_ticket(tmp_path / "r34", "resnet34", 3, other, {})
    with pytest.raises(CheckpointError) as error:
        load_lottery_ticket("resnet50", ckpt34, mask_path)
    message = str(error.value)
    assert str(ckpt34) in message and "missing keys" in message
    assert "layer1.0.conv3.weight" in message  # bottleneck conv absent from a resnet34
    assert "shape mismatches" in message
    # and the reverse: resnet50 ticket files read as a resnet34
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_lottery_ticket("resnet34", ckpt, mask_path)


# ---------------------------------------------------------------- 224-px transfer notebook


def write_fake_cifar10(root: Path, seed: int = 0) -> None:
    """cifar-10-batches-py as torchvision reads it: pickled dicts with uint8 rows [N, 3072]
    (CHW order) and int labels; each class has its own mean colour plus noise."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    colours = rng.integers(0, 256, size=(10, 3, 1, 1))

    def images(labels: list[int]) -> np.ndarray:
        noise = rng.integers(-40, 41, size=(len(labels), 3, 32, 32))
        pixels = np.clip(colours[labels] + noise, 0, 255).astype(np.uint8)
        return pixels.reshape(len(labels), -1)

    train = [c for c in range(10) for _ in range(TRAIN_PER_CLASS)]
    rng.shuffle(train)
    for b, labels in enumerate(np.array_split(np.array(train), 5), start=1):
        labels = labels.tolist()
        with (folder / f"data_batch_{b}").open("wb") as f:
            pickle.dump({"data": images(labels), "labels": labels}, f)
    test = [c for c in range(10) for _ in range(TEST_PER_CLASS)]
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({"data": images(test), "labels": test}, f)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)


@pytest.mark.slow
def test_transfer_notebook_lp_and_vp_at_224_on_cifar10(outputs, tmp_path, monkeypatch):
    monkeypatch.setenv(NO_DOWNLOAD_ENV, "1")
    data_root = tmp_path / "cifar_root"
    write_fake_cifar10(data_root)
    torch.manual_seed(0)
    source = create_backbone("resnet18")  # 1000 ImageNet classes, random weights
    ones = {
        n: torch.ones_like(p) for n, p in source.named_parameters() if n in prunable_names(source)
    }
    save_paper_ticket(tmp_path / "tickets", "resnet18", 0, source.state_dict(), ones)
    del source

    common = dict(
        study="paper_scale",
        dataset="cifar10",
        data_root=str(data_root),
        arch="resnet18",
        network="dense",
        weights="",
        pretrained_dir=str(tmp_path / "tickets"),
        epochs=1,
        n_shots=[2],
        seeds=[1],
        max_val=10,
        batch_size=8,
        device="cpu",
    )
    runs = results.study_dir("paper_scale") / "runs"
    for method in ("lp", "vp"):
        execute_notebook("transfer.ipynb", runs / f"{method}.ipynb", {**common, "method": method})
    assert (runs / "lp.ipynb").is_file() and (runs / "vp.ipynb").is_file()

    records = {r["params"]["method"]: r for r in results.read_records("paper_scale")}
    assert set(records) == {"lp", "vp"}
    for method, record in records.items():
        cfg = ExperimentConfig.from_dict(record["params"])
        assert (cfg.dataset, cfg.arch, cfg.n_shot, cfg.epochs) == ("cifar10", "resnet18", 2, 1)
        assert cfg.source_size == 224
        # 2 shots x 10 classes train; 2 more per class for validation (outside them), capped at 10
        assert record["sizes"] == {"train": 20, "val": 10, "test": 10 * TEST_PER_CLASS}
        assert len(record["history"]) == 1 and record["history"][0]["epoch"] == 0
        metrics = record["metrics"]
        for split in ("test", "test_ts", "val"):
            assert {"accuracy", "nll", "ece", "mce", "ace", "seed_ece"} <= set(metrics[split])
            assert 0 <= metrics[split]["accuracy"] <= 1 and 0 <= metrics[split]["ece"] <= 1
            assert math.isfinite(metrics[split]["nll"])
        assert metrics["temperature"] > 0 and metrics["best_epoch"] == 0
        assert metrics["sparsity_measured"] < 1e-6  # state 0: the dense source
        assert set(record["reliability"]) == {"raw", "ts"}
        if method == "lp":
            assert cfg.input_size == 224  # images resized to the source size

    # VP: the 32-px CIFAR image sits unprompted in the middle of a 224 canvas.
    vp = records["vp"]
    cfg = ExperimentConfig.from_dict(vp["params"])
    assert cfg.input_size == 32 and cfg.prompt == "expansive" and cfg.mapping == "ilm"
    artifacts = torch.load(
        results.study_dir("paper_scale") / "artifacts" / f"{vp['run_key']}.pt", weights_only=True
    )
    pattern = artifacts["prompt"]
    assert pattern.shape == (3, 224, 224)
    inner = slice(96, 128)  # (224 - 32) / 2 = 96 pixels of prompt on each side
    assert (pattern[:, inner, inner] == 0).all()
    border = torch.ones(224, 224, dtype=torch.bool)
    border[inner, inner] = False
    assert (pattern[:, border] > 0).all()
    # ILM maps each CIFAR-10 class to its own ImageNet class, named
    names = imagenet_classes()
    indices = vp["mapping"]["indices"]
    assert len(indices) == 10 and all(len(row) == 1 for row in indices)
    flat = [s for row in indices for s in row]
    assert len(set(flat)) == 10 and all(0 <= s < 1000 for s in flat)
    assert vp["mapping"]["source_names"] == [[names[s]] for s in flat]
    assert vp["mapping"]["changes"][0]["epoch"] == 0
