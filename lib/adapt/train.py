"""Transfer loops: linear probing (LP) on cached features, visual prompting (VP) with
label mapping. Both pick their epoch on the selection set they are given (a validation
split; the caller passes the test set only for the paper's optimistic protocol), or keep
the last epoch when given none.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from lib.adapt.labelmap import LabelMapper
from lib.adapt.schedules import SCHEDULES
from lib.core.utils import progress
from lib.metrics.calibration import ece
from lib.models.backbone import (  # noqa: F401 - fold_batchnorm, freeze re-exported
    Normalize,
    fold_batchnorm,
    freeze,
    input_stats,
)

EVAL_BATCH = 256  # images per forward pass when a prompted model is evaluated
# Data is either an in-memory pair (images, labels) — the mini datasets — or a Dataset.
Data = tuple[torch.Tensor, torch.Tensor] | Dataset


def subset(data: Data, index: torch.Tensor) -> Data:
    if isinstance(data, tuple):
        return data[0][index], data[1][index]
    return Subset(data, index.tolist())


def num_samples(data: Data) -> int:
    return len(data[0]) if isinstance(data, tuple) else len(data)


class Batches:
    """Mini-batches of `data`, reshuffled per epoch from `seed` when `shuffle`."""

    def __init__(
        self,
        data: Data,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def __len__(self) -> int:
        return math.ceil(num_samples(self.data) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.data, tuple):
            images, labels = self.data
            n = len(labels)
            order = torch.randperm(n, generator=self.generator) if self.shuffle else None
            for start in range(0, n, self.batch_size):
                idx = slice(start, start + self.batch_size)
                if order is None:
                    yield images[idx], labels[idx]
                else:
                    yield images[order[idx]], labels[order[idx]]
            return
        yield from DataLoader(
            self.data,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            generator=self.generator,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (as the paper); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    # channels_last speeds up convolutions (~1.3x on this CPU); same math.
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class Normalized(nn.Module):
    """Resize to the source size and normalize, then run `module`: LP's input pipeline."""

    def __init__(self, module: nn.Module, size: int, mean: tuple, std: tuple) -> None:
        super().__init__()
        self.module, self.size = module, size
        self.normalize = Normalize(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return self.module(self.normalize(x))


@torch.no_grad()  # not inference_mode: cached features must stay usable in autograd
def evaluate(
    model: nn.Module, batches: Batches, device: torch.device, desc: str = "eval"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of `model` over `batches` (float32 logits on CPU)."""
    model.eval()
    logits, labels = [], []
    for x, y in progress(batches, desc=desc, leave=False):
        with _autocast(device):
            logits.append(model(_to(x, device)).float().cpu())
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


# The convergence criterion (val accuracy gained in the last quarter of the epochs).
CONVERGED_GAIN = 0.01


@dataclass
class Fit:
    """What a transfer loop returns: the selected epoch and the per-epoch history."""

    best_epoch: int = -1
    best_val_accuracy: float = -1.0
    history: list[dict] = field(default_factory=list)
    mapping_changes: list[dict] = field(default_factory=list)
    stopped_early: bool = False

    def should_stop(self, patience: int) -> bool:
        """Early stopping: `patience` epochs in a row without a better validation accuracy
        (0 = never stop early)."""
        self.stopped_early = patience > 0 and len(self.history) - 1 - self.best_epoch >= patience
        return self.stopped_early

    @property
    def converged(self) -> bool | None:
        """The convergence criterion of every record: the last quarter of the epochs trained
        improved the best validation accuracy by less than CONVERGED_GAIN (None: no
        validation set, e.g. selection 'last')."""
        accs = [row["val_accuracy"] for row in self.history]
        if not accs or None in accs:
            return None
        head = accs[: max(1, len(accs) - len(accs) // 4)]
        return max(accs) - max(head) < CONVERGED_GAIN

    def end_epoch(
        self,
        epoch: int,
        train: dict[str, float],
        lr: float,
        val_logits: torch.Tensor | None,
        val_labels: torch.Tensor | None,
        n_bins: int,
    ) -> bool:
        """Record the epoch's row; True when it is the best validation epoch so far (always,
        without a selection set: the last epoch is kept)."""
        row = {
            "epoch": epoch,
            "train_loss": train["loss"] / train["seen"],
            "train_accuracy": train["correct"] / train["seen"],
            "lr": lr,
            "val_accuracy": None,
            "val_ece": None,
        }
        self.history.append(row)
        if val_logits is None or val_labels is None:
            self.best_epoch = epoch
            return True
        row["val_accuracy"] = (val_logits.argmax(1) == val_labels).float().mean().item()
        row["val_ece"] = ece(val_logits.softmax(1), val_labels, n_bins=n_bins)
        if row["val_accuracy"] <= self.best_val_accuracy:
            return False
        self.best_epoch, self.best_val_accuracy = epoch, self.history[-1]["val_accuracy"]
        return True


def _tally(
    stats: dict[str, float], loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
) -> None:
    stats["loss"] += loss.item() * len(labels)
    stats["correct"] += (logits.argmax(1) == labels).sum().item()
    stats["seen"] += len(labels)


def _schedule(
    optimizer: torch.optim.Optimizer, epochs: int, kind: str = "multistep", steps: int = 1
) -> torch.optim.lr_scheduler.LRScheduler:
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if kind == "cosine_step":  # ilm_clip.py: cosine over all steps, stepped every batch
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    if kind != "multistep":
        raise ValueError(f"unknown schedule {kind!r}; choose one of: {', '.join(SCHEDULES)}")
    # The paper: MultiStepLR at 50% and 72% of the epochs, gamma 0.1.
    milestones = [int(0.5 * epochs), int(0.72 * epochs)]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """At most `n` torch intra-op threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# A head step below this many multiply-adds runs on one thread: its ops are so small that
# thread synchronisation costs more than it saves (bench/bench_lp.py: 2 threads on the
# shared 2-core CPU made the mini study's LP ~10x slower than 1). Same math.
SINGLE_THREAD_MACS = 2**22


def train_linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    num_classes: int,
    epochs: int,
    lr: float = 0.01,
    batch_size: int = 128,
    seed: int = 0,
    n_bins: int = 15,
    schedule: str = "multistep",
    patience: int = 0,
) -> tuple[nn.Linear, Fit]:
    """Train a linear head on cached features; return the head of the best validation epoch
    (of the last epoch when `val` is None). `patience` > 0 stops after that many epochs
    without a better validation accuracy."""
    small = batch_size * train[0].shape[1] * num_classes <= SINGLE_THREAD_MACS
    with _threads(1) if small else contextlib.nullcontext():
        return _train_linear_probe(
            train, val, num_classes, epochs, lr, batch_size, seed, n_bins, schedule, patience
        )


def _train_linear_probe(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    n_bins: int,
    schedule: str,
    patience: int,
) -> tuple[nn.Linear, Fit]:
    torch.manual_seed(seed)
    head = nn.Linear(train[0].shape[1], num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    scheduler = _schedule(optimizer, epochs, schedule)
    batches = Batches(train, batch_size, shuffle=True, seed=seed)
    fit, best = Fit(), copy.deepcopy(head.state_dict())
    for epoch in progress(range(epochs), desc="LP epochs", leave=False):
        head.train()
        stats = {"loss": 0.0, "correct": 0, "seen": 0}
        for x, y in batches:
            logits = head(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _tally(stats, loss, logits, y)
        lr_now = scheduler.get_last_lr()[0]
        scheduler.step()
        val_logits, val_labels = None, None
        if val is not None:
            with torch.inference_mode():
                val_logits, val_labels = head(val[0]), val[1]
        if fit.end_epoch(epoch, stats, lr_now, val_logits, val_labels, n_bins):
            best = copy.deepcopy(head.state_dict())
        if fit.should_stop(patience):
            break
    head.load_state_dict(best)
    return head.eval(), fit


class PromptedClassifier(nn.Module):
    """Visual prompt -> frozen source classifier -> label mapping: target logits."""

    def __init__(self, prompt: nn.Module, source: nn.Module, mapper: LabelMapper) -> None:
        super().__init__()
        self.prompt, self.source, self.mapper = prompt, freeze(source), mapper

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.source(self.prompt(x).contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mapper(self.source_logits(x))

    def train(self, mode: bool = True) -> PromptedClassifier:
        super().train(mode)
        self.source.eval()  # the backbone stays in eval mode: BN statistics are frozen
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Prompt and mapping: everything VP learns (the source is frozen)."""
        state = {f"prompt.{k}": v for k, v in self.prompt.state_dict().items()}
        state.update({f"mapper.{k}": v for k, v in self.mapper.state_dict().items()})
        return {k: v.detach().clone() for k, v in state.items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        for prefix, module in (("prompt.", self.prompt), ("mapper.", self.mapper)):
            module.load_state_dict(
                {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            )


@torch.inference_mode()
def update_mapping(
    model: PromptedClassifier, batches: Batches, device: torch.device
) -> torch.Tensor | None:
    """Recompute the frequency mapping with the current prompt over the training set."""
    model.eval()
    logits, labels = [], []
    for x, y in batches:
        with _autocast(device):
            logits.append(model.source_logits(_to(x, device)).float().cpu())
        labels.append(y)
    model.mapper.update(torch.cat(logits), torch.cat(labels))
    return model.mapper.mapping


def train_visual_prompt(
    model: PromptedClassifier,
    train: Data,
    val: Data | None,
    epochs: int,
    lr: float = 0.01,
    batch_size: int = 128,
    seed: int = 0,
    n_bins: int = 15,
    device: torch.device | None = None,
    num_workers: int = 0,
    mapping_batch_size: int = 256,
    schedule: str = "multistep",
    patience: int = 0,
    optimizer: str = "adam",
) -> Fit:
    """ILM-VP's loop: per epoch, (re)map labels if the strategy says so, then train the prompt.
    `optimizer`: adam (the paper) or sgd (momentum 0.9, as ilm_clip.py).

    The model is left with the prompt and mapping of the best validation epoch (of the last
    epoch when `val` is None); `patience` > 0 stops after that many epochs without a better
    validation accuracy.
    """
    device = device or torch.device("cpu")
    model.to(device)
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: adam, sgd")
    per_step = schedule == "cosine_step"
    if optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(params, lr=lr)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    pin = device.type == "cuda"
    train_batches = Batches(train, batch_size, True, seed, num_workers, pin)
    scheduler = _schedule(optimizer, epochs, schedule, len(train_batches))
    # The no-grad passes (mapping, validation) take larger batches, but not too large: at
    # 512 the activations overflow the CPU caches, ~1.5x slower per image than 256 here.
    map_batches = Batches(train, mapping_batch_size, False, seed, num_workers, pin)
    val_batches = (
        None if val is None else Batches(val, mapping_batch_size, False, seed, num_workers, pin)
    )
    fit, best = Fit(), model.trainable_state()
    for epoch in progress(range(epochs), desc="VP epochs", leave=False):
        if model.mapper.needs_update(epoch):
            mapping = update_mapping(model, map_batches, device)
            if mapping is not None:
                previous = fit.mapping_changes[-1]["mapping"] if fit.mapping_changes else None
                if previous != mapping.tolist():
                    fit.mapping_changes.append({"epoch": epoch, "mapping": mapping.tolist()})
        model.train()
        lr_now = optimizer.param_groups[0]["lr"]  # the epoch's (first) learning rate
        stats = {"loss": 0.0, "correct": 0, "seen": 0}
        for x, y in progress(train_batches, desc=f"epoch {epoch}", leave=False):
            x, y = _to(x, device), y.to(device)
            with _autocast(device):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            _tally(stats, loss, logits, y)
            if per_step:
                scheduler.step()
        if not per_step:
            scheduler.step()
        val_logits, val_labels = None, None
        if val_batches is not None:
            val_logits, val_labels = evaluate(model, val_batches, device, desc="val")
        if fit.end_epoch(epoch, stats, lr_now, val_logits, val_labels, n_bins):
            best = model.trainable_state()
        if fit.should_stop(patience):
            break
    model.load_trainable_state(best)
    return fit
