"""Which labelled images a run may use: n-shot samples, validation sets, stratified subsets.

    from lib.datasets.sampling import draw_splits
    splits = draw_splits(labels, n_shot=10, seed=1, selection="val")
    splits.train, splits.val          # sorted, disjoint indices into `labels`

Every draw is per class from a permutation seeded by (stream, seed, class) alone, so it
does not depend on other classes or on the order the classes come in. Streams:
0 n-shot samples (and the validation images that follow them), 1 the validation carve of
full-data runs, 2 the fixed train/test split of the mini sets, 3 the seeded test split of
paper datasets that ship without one.

Model selection (`selection`) decides which labels besides the training sample a run sees:
- "val": a validation set outside the training sample. n-shot runs take at most n more
  images per class (`val_shots="n_shot"`) or CoOp's min(n, 4) (`val_shots="coop"`), so a
  10-shot run never selects its epoch or fits its temperature on more than 10 extra
  labels per class. Full-data runs carve `val_fraction` of each class (capped at `max_val`).
- "last": no validation set; the last epoch is kept. Full data = the whole training split.
- "test": no validation set; the epoch is picked on the test set, as the paper's code did.
  Optimistic: every record that uses it says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

SELECTIONS = ("val", "last", "test")
N_SHOT_POLICIES = ("strict", "at_most")
VAL_SHOTS = ("n_shot", "coop")
COOP_VAL_SHOTS = 4  # CoOp's few-shot validation: min(n_shot, 4) images per class
STREAM_N_SHOT, STREAM_VAL, STREAM_MINI_SPLIT, STREAM_PAPER_SPLIT = 0, 1, 2, 3


def labels_tensor(labels: Sequence[int] | torch.Tensor | np.ndarray) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    if labels.ndim != 1 or len(labels) == 0 or labels.is_floating_point():
        raise ValueError(
            "labels must be a non-empty 1-D integer sequence; "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    return labels.long()


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")


def _choices(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


def class_permutation(members: torch.Tensor, seed: int, cls: int, stream: int) -> torch.Tensor:
    """`members` shuffled by a generator seeded by (stream, seed, class) alone."""
    order = np.random.default_rng([stream, seed, cls]).permutation(len(members))
    return members[torch.from_numpy(order)]


def _members(labels: torch.Tensor, cls: torch.Tensor | int) -> torch.Tensor:
    return torch.nonzero(labels == cls).flatten()


def per_class_counts(labels: torch.Tensor, index: torch.Tensor, num_classes: int) -> list[int]:
    """How many of `index` fall in each class 0..num_classes-1."""
    return torch.bincount(labels[index], minlength=num_classes).tolist()


def n_shot_indices(
    labels: Sequence[int] | torch.Tensor, n_shot: int, seed: int, policy: str = "strict"
) -> torch.Tensor:
    """Sorted indices of `n_shot` samples per class (-1 = all).

    Per class, the first n of a permutation seeded by (seed, class): the 10-shot set is
    inside the 50-shot set for the same seed. A class with fewer than n images is refused
    under `policy="strict"` and gives all it has under `"at_most"` (the paper's code).
    """
    labels = labels_tensor(labels)
    check_seed(seed)
    _choices("n_shot_policy", policy, N_SHOT_POLICIES)
    if isinstance(n_shot, bool) or not isinstance(n_shot, int | np.integer):
        raise ValueError(f"n_shot must be an int (>= 1, or -1 for all); got {n_shot!r}")
    if n_shot == -1:
        return torch.arange(len(labels))
    if n_shot <= 0:
        raise ValueError(f"n_shot={n_shot}; choose n_shot >= 1 or -1 (all)")
    classes, counts = labels.unique(return_counts=True)
    smallest = int(counts.min())
    if policy == "strict" and n_shot > smallest:
        cls = int(classes[counts.argmin()])
        raise ValueError(
            f"n_shot={n_shot} exceeds the smallest class size {smallest} (class {cls}); "
            f"choose n_shot <= {smallest}, -1 (all), or n_shot_policy 'at_most' "
            "(take what a class has, as the paper's code)"
        )
    picked = [
        class_permutation(_members(labels, c), seed, int(c), STREAM_N_SHOT)[:n_shot]
        for c in classes
    ]
    return torch.cat(picked).sort().values


def stratified_split(
    labels: Sequence[int] | torch.Tensor, fraction: float, seed: int, stream: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held) sorted and disjoint: round(fraction * n) of each class held out, at least
    one and never all (a class needs >= 2 images)."""
    labels = labels_tensor(labels)
    check_seed(seed)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction}; choose a value in (0, 1)")
    kept, held = [], []
    for c in labels.unique():
        members = _members(labels, c)
        if len(members) < 2:
            raise ValueError(
                f"class {int(c)} has {len(members)} sample; need >= 2 to split off a part"
            )
        n_held = min(len(members) - 1, max(1, round(fraction * len(members))))
        order = class_permutation(members, int(seed), int(c), stream)
        held.append(order[:n_held])
        kept.append(order[n_held:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def train_val_split(
    labels: Sequence[int] | torch.Tensor, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (train_idx, val_idx), sorted and disjoint; each class keeps >= 1 of each."""
    try:
        return stratified_split(labels, val_fraction, seed, STREAM_VAL)
    except ValueError as error:
        raise ValueError(str(error).replace("fraction", "val_fraction", 1)) from None


def stratified_subset(labels: Sequence[int] | torch.Tensor, size: int) -> torch.Tensor:
    """Sorted indices of a fixed stratified subset of about `size` items (-1 = all): the same
    size // classes of every class (fewer where a class has fewer), seed 0."""
    labels = labels_tensor(labels)
    if size == -1 or size >= len(labels):
        return torch.arange(len(labels))
    per_class = max(1, size // int(labels.max() + 1))
    return n_shot_indices(labels, per_class, seed=0, policy="at_most")


@dataclass
class Splits:
    """Indices into the training pool: the training sample and the validation set."""

    train: torch.Tensor
    val: torch.Tensor  # empty when selection is "last" or "test"


def _cap(index: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    if size == -1 or len(index) <= size:
        return index
    keep = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:size]
    return index[keep].sort().values


def draw_splits(
    labels: Sequence[int] | torch.Tensor,
    n_shot: int,
    seed: int,
    *,
    policy: str = "strict",
    selection: str = "val",
    val_shots: str = "n_shot",
    val_fraction: float = 0.1,
    max_val: int = 1000,
    max_train: int = -1,
) -> Splits:
    """The training sample and validation set of one run (see the module docstring)."""
    labels = labels_tensor(labels)
    check_seed(seed)
    _choices("selection", selection, SELECTIONS)
    _choices("val_shots", val_shots, VAL_SHOTS)
    empty = torch.empty(0, dtype=torch.long)
    if selection == "val" and n_shot == -1:  # full data: carve validation from each class
        train, val = train_val_split(labels, val_fraction, seed)
        val = _cap(val, max_val, seed)
    else:
        train = n_shot_indices(labels, n_shot, seed, policy)
        val = empty
        if selection == "val":
            per_class = min(n_shot, COOP_VAL_SHOTS) if val_shots == "coop" else n_shot
            val = _cap(_few_shot_val(labels, n_shot, seed, per_class), max_val, seed)
    train = _cap(train, max_train, seed)
    return Splits(train=train, val=val)


def _few_shot_val(labels: torch.Tensor, n_shot: int, seed: int, per_class: int) -> torch.Tensor:
    """Up to `per_class` images per class from outside the n-shot sample: the ones that follow
    it in the same per-class permutation (so the sample and the validation set never meet)."""
    picked, short = [], []
    for c in labels.unique():
        order = class_permutation(_members(labels, c), seed, int(c), STREAM_N_SHOT)
        picked.append(order[n_shot : n_shot + per_class])
        if len(order) <= n_shot:
            short.append(f"class {int(c)} has {len(order)}")
    val = torch.cat(picked).sort().values
    if len(val) == 0:
        raise ValueError(
            f"selection 'val' needs images outside the {n_shot}-shot sample, but every class is "
            f"used up ({', '.join(short[:3])}{', ...' if len(short) > 3 else ''}); choose "
            "selection 'last' (keep the last epoch) or 'test' (the paper's optimistic protocol)"
        )
    return val
