"""Supervised training of the source model (dense or masked) and its evaluation.

from lib.models.pretrain import train_classifier, evaluate_classifier
history = train_classifier(model, train_ds, epochs=3)   # SGD momentum + one-cycle
accuracy = evaluate_classifier(model, test_ds)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lib.core.utils import (
    atomic_write_json,
    get_device,
    outputs_dir,
    progress,
    resolve_path,
    set_seed,
)
from lib.datasets.registry import DATASETS, get_dataset, get_spec, glyph_dataset
from lib.models.backbone import normalize, source_size
from lib.models.masks import Mask, apply_mask


def _loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    # Workers would fight the other processes for the 2 CPU cores; items are small tensors.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator)


def _inputs(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = images.float() / 255
    return normalize(images).contiguous(memory_format=torch.channels_last)


def train_classifier(
    model: nn.Module,
    train_ds: Dataset,
    epochs: int,
    *,
    lr: float = 0.1,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.0,
    mask: Mask | None = None,
    seed: int = 0,
    on_step: Callable[[int, nn.Module], None] | None = None,
    device: str = "auto",
    desc: str = "train",
) -> list[dict[str, Any]]:
    """Train `model` in place on (image in [0,1], label) items; SGD with Nesterov momentum and a
    one-cycle learning rate, channels_last. With `mask`, pruned weights are zeroed before
    training and again after every optimizer step, so they stay exactly zero.
    `on_step(step, model)` runs after each step (1-based), e.g. to snapshot rewind weights.
    Returns one {"epoch", "loss", "accuracy", "seconds"} dict per epoch (training batches)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    dev = get_device(device)
    set_seed(seed)
    model.to(dev, memory_format=torch.channels_last).train()
    if mask is not None:
        apply_mask(model, mask)  # validates names, shapes and values once
        mask = Mask({n: m.to(dev) for n, m in mask.items()})
    loader = _loader(train_ds, batch_size, shuffle=True, seed=seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * len(loader)
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    history, step = [], 0
    for epoch in progress(range(epochs), desc=desc, unit="epoch"):
        start, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        for images, labels in loader:
            x, y = _inputs(images, dev), labels.to(dev)
            logits = model(x)
            loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if mask is not None:  # pruned weights stay exactly zero
                apply_mask(model, mask, check=False)
            step += 1
            if on_step is not None:
                on_step(step, model)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": loss_sum / seen,
                "accuracy": correct / seen,
                "seconds": time.perf_counter() - start,
            }
        )
    return history


@torch.no_grad()
def predict(
    model: nn.Module, ds: Dataset, batch_size: int = 256, device: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, C], labels [N]) of `model` in eval mode over `ds`."""
    dev = get_device(device)
    model.to(dev).eval()
    logits, labels = [], []
    for images, y in _loader(ds, batch_size, shuffle=False):
        logits.append(model(_inputs(images, dev)).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(logits), torch.cat(labels)


def evaluate_classifier(model: nn.Module, ds: Dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of `model` on `ds`."""
    logits, labels = predict(model, ds, batch_size)
    return float((logits.argmax(1) == labels).float().mean())


# ---------------------------------------------------------------- the pretrain notebook's config


@dataclass(frozen=True)
class SourceConfig:
    """Validated settings of notebooks/pretrain_source.ipynb; defaults are the recipe of the
    shipped mini-study tickets (params/tickets.yaml): a converged source, ~80 s per IMP level
    on one AVX-512 core."""

    arch: str = "cifar_resnet_20_8"
    dataset: str = "glyphs"
    num_classes: int = 45  # glyphs: the first n glyph classes (digits first)
    per_class: int = 200  # glyphs: training images per class
    test_per_class: int = 60  # glyphs: test images per class (held-out fonts)
    data_seed: int = 0
    epochs: int = 6
    lr: float = 0.1
    batch_size: int = 64
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    rewind_iter: int = 140
    max_state: int = 20
    random_states: tuple[int, ...] = (12, 20)
    seed: int = 0
    out_dir: str = ""  # "" = {outputs}/checkpoints/{dataset}_{arch}

    def __post_init__(self) -> None:
        # papermill and YAML give lists; the frozen config keeps a hashable tuple.
        object.__setattr__(self, "random_states", tuple(self.random_states))
        source_size(self.arch)  # validates the name
        if self.dataset not in DATASETS:
            raise ValueError(
                f"unknown dataset {self.dataset!r}; choose one of: " + ", ".join(DATASETS)
            )
        for name in ("num_classes", "per_class", "test_per_class", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("data_seed", "seed", "rewind_iter", "max_state"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if any(not 1 <= k <= self.max_state for k in self.random_states):
            raise ValueError(
                f"random_states {self.random_states} must lie in 1..max_state ({self.max_state})"
            )

    @property
    def output_path(self) -> Path:
        """out_dir resolved (lib.core.utils.resolve_path): never relative to the cwd."""
        if not self.out_dir:
            return outputs_dir() / "checkpoints" / f"{self.dataset}_{self.arch}"
        return resolve_path(self.out_dir)

    def imp_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of lib.models.prune.run_imp."""
        return {
            "states": range(self.max_state + 1),
            "epochs": self.epochs,
            "lr": self.lr,
            "rewind_iter": self.rewind_iter,
            "random_states": self.random_states,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
        }

    def save(self) -> Path:
        """source_config.json, written only after checking it would still describe the
        tickets beside it: settings other than the IMP extent (max_state, random_states)
        and the spelling of out_dir must match the saved ones, else a ValueError."""
        path = self.output_path / "source_config.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            extent = ("max_state", "random_states", "out_dir")
            diff = {
                k: (saved.get(k), v)
                for k, v in asdict(self).items()
                if k not in extent and saved.get(k) != v
            }
            if diff:
                raise ValueError(
                    f"{self.output_path} holds a source model made with other settings "
                    f"(saved vs now: {diff}); use another out_dir or delete it"
                )
        return atomic_write_json(path, asdict(self))


def source_data(cfg: SourceConfig) -> tuple[Dataset, Dataset, tuple[str, ...]]:
    """(train, test, class names) of the source corpus the config names."""
    if cfg.dataset == "glyphs":
        kw = {"num_classes": cfg.num_classes, "seed": cfg.data_seed}
        train = glyph_dataset("train", per_class=cfg.per_class, **kw)
        test = glyph_dataset("test", per_class=cfg.test_per_class, **kw)
        return train, test, tuple(train.classes)
    spec = get_spec(cfg.dataset)
    classes = spec.classes or tuple(str(i) for i in range(spec.num_classes))
    return get_dataset(cfg.dataset, "train"), get_dataset(cfg.dataset, "test"), classes
