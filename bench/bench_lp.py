"""Linear probing: cached features (the project) vs the frozen backbone every epoch (paper).

    python bench/bench_lp.py                # digits, 10-shot, 50 epochs: ~1-2 min here
    python bench/bench_lp.py --dataset mnist --epochs 30

The paper's linear_probing.py keeps the backbone in eval mode and sends every training
batch through backbone + new head each epoch, then the evaluation split the same way, to
pick its best epoch. The project computes the features of both splits once
(lib.adapt.train.evaluate) and trains the head on them (lib.adapt.train.train_linear_probe). Both
start from the same head init and see the same batches in the same order, so the heads
they select must agree to float tolerance: the script checks the selected epoch, the
per-epoch training loss and the selected head's weights, then prints the speedup last.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import TYPE_CHECKING

from common import add_common_args, finish, interleave, max_abs_diff, median, setup, tensors

from lib.core.cli import HelpFormatter

if TYPE_CHECKING:  # torch and lib's training stack load in main: --help answers at once
    import torch
    from torch import nn

SOURCE_ARCH, SOURCE_CLASSES, SOURCE_SIZE = "cifar_resnet_20", 45, 32
# Features differ in the last bits (memory format, batch size); Adam keeps that small.
WEIGHT_TOL = 1e-4


def paper_linear_probe(
    backbone: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> tuple[nn.Linear, int, list[float]]:
    """The paper's loop: each epoch, every batch through frozen backbone + head; Adam on
    the head; then the evaluation split through both, keeping the most accurate epoch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from lib.models.backbone import normalize, split_features

    features, old_head = split_features(backbone)
    features.eval()  # BN statistics stay fixed (the paper calls model.eval())
    torch.manual_seed(seed)  # the new head's init, as train_linear_probe draws it
    head = nn.Linear(old_head.in_features, num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    milestones = [int(0.5 * epochs), int(0.72 * epochs)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    order = torch.Generator().manual_seed(seed)  # the DataLoader's shuffling generator
    images, labels = train
    best_acc, best_epoch, best, losses = -1.0, -1, None, []
    for epoch in range(epochs):
        head.train()
        perm = torch.randperm(len(labels), generator=order)
        total = 0.0
        for start in range(0, len(labels), batch_size):
            idx = perm[start : start + batch_size]
            x, y = images[idx], labels[idx]
            loss = F.cross_entropy(head(features(normalize(x))), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        losses.append(total / len(labels))
        scheduler.step()
        head.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(val[1]), batch_size):
                x, y = val[0][start : start + batch_size], val[1][start : start + batch_size]
                correct += (head(features(normalize(x))).argmax(1) == y).sum().item()
        accuracy = correct / len(val[1])
        if accuracy > best_acc:
            best_acc, best_epoch, best = accuracy, epoch, copy.deepcopy(head.state_dict())
    head.load_state_dict(best)
    return head, best_epoch, losses


def project_linear_probe(
    extractor: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> tuple[nn.Linear, int, list[float]]:
    """lib.study.experiment's way: features of both splits once, then the head on them."""
    import torch

    from lib.adapt.train import Batches, evaluate, train_linear_probe
    from lib.study.features import FEATURE_BATCH

    device = torch.device("cpu")
    train_features = evaluate(extractor, Batches(train, FEATURE_BATCH), device)
    val_features = evaluate(extractor, Batches(val, FEATURE_BATCH), device)
    head, fit = train_linear_probe(
        train_features, val_features, num_classes, epochs, lr, batch_size, seed
    )
    return head, fit.best_epoch, [row["train_loss"] for row in fit.history]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    parser.add_argument(
        "--n-shot", type=int, default=10, help="training images per class; -1 = all"
    )
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument(
        "--epochs", type=int, default=50, help="as params/mini.yaml; the paper uses 100"
    )
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--min-speedup", type=float, default=20.0, help="exit 1 below this (0: never)"
    )
    add_common_args(parser, repeats=3)
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be in (0, 1); got {args.val_fraction}")
    setup(args, "lp")
    import torch

    from lib.adapt.train import Normalized, freeze
    from lib.datasets.registry import get_spec
    from lib.models.backbone import IMAGENET_MEAN, IMAGENET_STD, create_backbone, split_features

    train, val = tensors(
        args.dataset, "train", SOURCE_SIZE, args.seed, args.n_shot, args.val_fraction
    )
    num_classes = get_spec(args.dataset).num_classes
    print(
        f"[lp] {args.dataset}: {len(train[1])} train / {len(val[1])} val images at "
        f"{SOURCE_SIZE} px, {args.epochs} epochs, random {SOURCE_ARCH} ({SOURCE_CLASSES} classes)",
        flush=True,
    )
    torch.manual_seed(args.seed)
    paper_backbone = create_backbone(SOURCE_ARCH, SOURCE_CLASSES).eval().requires_grad_(False)
    project_backbone = create_backbone(SOURCE_ARCH, SOURCE_CLASSES)
    project_backbone.load_state_dict(paper_backbone.state_dict())
    features, _ = split_features(project_backbone)
    extractor = freeze(Normalized(features, SOURCE_SIZE, IMAGENET_MEAN, IMAGENET_STD))

    common = (train, val, num_classes, args.epochs, args.lr, args.batch_size, args.seed)
    timings = interleave(
        {
            "paper": lambda: paper_linear_probe(paper_backbone, *common),
            "project": lambda: project_linear_probe(extractor, *common),
        },
        args.repeats,
        "lp",
    )
    paper_head, paper_best, paper_losses = timings.results["paper"]
    project_head, project_best, project_losses = timings.results["project"]
    weight_diff = max(
        max_abs_diff(paper_head.weight, project_head.weight),
        max_abs_diff(paper_head.bias, project_head.bias),
    )
    loss_diff = max(abs(a - b) for a, b in zip(paper_losses, project_losses, strict=True))
    speedup = timings.ratio("paper", "project")
    for key, what in (("paper", "backbone every epoch"), ("project", "cached features")):
        print(
            f"[lp] {key} ({what}): {median(timings.wall[key]):.2f} s wall, "
            f"{median(timings.cpu[key]):.2f} s CPU (medians)"
        )
    print(f"[lp] speedup on the CPU clock: {timings.ratio('paper', 'project', 'cpu'):.1f}x")
    print(
        f"[lp] same result: best epoch {paper_best} vs {project_best}, max |dW| "
        f"{weight_diff:.2e} (tol {WEIGHT_TOL:g}), max |d train loss| {loss_diff:.2e}"
    )
    failures = []
    if paper_best != project_best or weight_diff > WEIGHT_TOL or loss_diff > WEIGHT_TOL:
        failures.append("the two ways disagree")
    if speedup < args.min_speedup:
        failures.append(f"speedup {speedup:.1f}x is below {args.min_speedup:g}x")
    return finish("lp", f"lp_speedup {speedup:.1f}x", failures)


if __name__ == "__main__":
    sys.exit(main())
