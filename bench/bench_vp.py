"""ILM-VP epoch throughput: the project's train_visual_prompt vs a loop written like the paper's.

    python bench/bench_vp.py                  # digits, 1 epoch, 3 interleaved repeats
    python bench/bench_vp.py --dataset mnist --max-train 2000

One ILM-VP epoch is a mapping pass (the current prompt over the training set, frequency
label mapping), a training pass over the prompt and an evaluation pass. The baseline does
it the straightforward way of ILM-VP's code: default memory format, the mapping pass
under torch.no_grad at the training batch size, evaluation at the training batch size.
The project runs lib.study.experiment's way for the same epochs: eval-mode BatchNorm folded into
the convolutions (lib.models.backbone.fold_batchnorm), channels_last, the mapping and evaluation
passes in larger batches, lib.adapt.train.train_visual_prompt. Same prompt, same
backbone, same label-mapping rule, same data order: the script checks that both find the
same mapping and learn the same prompt, then prints the speedup (images/s ratio) last.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from common import add_common_args, finish, interleave, median, setup, tensors

from lib.core.cli import HelpFormatter

if TYPE_CHECKING:  # torch and lib's training stack load in main: --help answers at once
    import torch
    from torch import nn

    from lib.adapt.prompt import ExpansiveVisualPrompt

SOURCE_ARCH, SOURCE_CLASSES, SOURCE_SIZE = "cifar_resnet_20", 45, 32
# Backbone outputs differ in the last bits (memory format, batch size) and Adam's normalised
# steps amplify that where gradients are near zero: measured ~1e-3 of the prompt's norm.
# A real difference (data order, mapping, learning rate) is of the order of the prompt.
PROMPT_TOL = 1e-2  # on |paper - project| / |project| (L2 norms)


def paper_mapping(source_logits: torch.Tensor, labels: torch.Tensor, num_target: int) -> list:
    """ILM-VP's generate_label_mapping_by_frequency: count argmax source classes per target
    class, then greedily take the largest count, one source per target."""
    import torch
    import torch.nn.functional as F

    onehot = F.one_hot(source_logits.argmax(1), source_logits.shape[1])
    counts = torch.stack([onehot[labels == t].sum(0) for t in range(num_target)], 1).float()
    mapping = [-1] * num_target
    for _ in range(num_target):
        s, t = divmod(int(counts.argmax()), num_target)
        mapping[t] = s
        counts[s, :] = -1
        counts[:, t] = -1
    return mapping


def paper_visual_prompt(
    network: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_target: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> tuple[ExpansiveVisualPrompt, list]:
    """The paper's ILM-VP loop with the project's prompt module (same math)."""
    import torch
    import torch.nn.functional as F

    from lib.adapt.prompt import ExpansiveVisualPrompt

    network.eval()
    target_size = train[0].shape[-1]
    prompt = ExpansiveVisualPrompt(SOURCE_SIZE, target_size)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(prompt.parameters(), lr=lr)
    milestones = [int(0.5 * epochs), int(0.72 * epochs)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    order = torch.Generator().manual_seed(seed)  # the training loader's shuffling generator
    images, labels = train
    n = len(labels)
    mapping: list = []
    best_acc, best = -1.0, (None, None)
    for _ in range(epochs):
        # Mapping pass; the count does not depend on the order, so it walks the set in order
        # and leaves the training loader's generator alone (as the project does).
        prompt.eval()
        logits = []
        for start in range(0, n, batch_size):
            with torch.no_grad():
                logits.append(network(prompt(images[start : start + batch_size])))
        mapping = paper_mapping(torch.cat(logits), labels, num_target)
        prompt.train()
        perm = torch.randperm(n, generator=order)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            x, y = images[idx], labels[idx]
            loss = F.cross_entropy(network(prompt(x))[:, mapping], y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        prompt.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(val[1]), batch_size):
                x, y = val[0][start : start + batch_size], val[1][start : start + batch_size]
                correct += (network(prompt(x))[:, mapping].argmax(1) == y).sum().item()
        if correct / len(val[1]) > best_acc:  # the paper keeps its most accurate epoch
            best_acc, best = correct / len(val[1]), (prompt.delta.detach().clone(), mapping)
    prompt.delta.data.copy_(best[0])
    return prompt, best[1]


def project_visual_prompt(
    source: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_target: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> tuple[ExpansiveVisualPrompt, list]:
    """lib.study.experiment's way: BN folded into the convs, PromptedClassifier,
    train_visual_prompt."""
    from lib.adapt.labelmap import LabelMapper
    from lib.adapt.prompt import ExpansiveVisualPrompt
    from lib.adapt.train import PromptedClassifier, train_visual_prompt
    from lib.models.backbone import fold_batchnorm

    prompt = ExpansiveVisualPrompt(SOURCE_SIZE, train[0].shape[-1])
    mapper = LabelMapper("ilm", SOURCE_CLASSES, num_target, seed=seed)
    model = PromptedClassifier(prompt, fold_batchnorm(source), mapper)
    train_visual_prompt(model, train, val, epochs, lr, batch_size, seed)
    return prompt, mapper.mapping.tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    parser.add_argument(
        "--max-train", type=int, default=1000, help="training images (mini study: 1000)"
    )
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--min-speedup", type=float, default=1.3, help="exit 1 below this (0: never)"
    )
    add_common_args(parser, repeats=3)
    args = parser.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be in (0, 1); got {args.val_fraction}")
    setup(args, "vp")
    import torch

    from lib.datasets.registry import get_spec
    from lib.models.backbone import create_backbone

    size = get_spec(args.dataset).vp_size
    train, val = tensors(args.dataset, "train", size, args.seed, -1, args.val_fraction)
    keep = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(args.seed))
    train = (train[0][keep[: args.max_train]], train[1][keep[: args.max_train]])
    num_target = get_spec(args.dataset).num_classes
    n = len(train[1])
    print(
        f"[vp] {args.dataset}: {n} train / {len(val[1])} val images at {size} px padded to "
        f"{SOURCE_SIZE}, {args.epochs} epoch(s), random {SOURCE_ARCH} ({SOURCE_CLASSES} classes)",
        flush=True,
    )
    torch.manual_seed(args.seed)
    network = create_backbone(SOURCE_ARCH, SOURCE_CLASSES).eval().requires_grad_(False)
    source = create_backbone(SOURCE_ARCH, SOURCE_CLASSES)
    source.load_state_dict(network.state_dict())  # PromptedClassifier freezes it

    common = (train, val, num_target, args.epochs, args.lr, args.batch_size, args.seed)
    timings = interleave(
        {
            "paper": lambda: paper_visual_prompt(network, *common),
            "project": lambda: project_visual_prompt(source, *common),
        },
        args.repeats,
        "vp",
    )
    paper_prompt, paper_map = timings.results["paper"]
    project_prompt, project_map = timings.results["project"]
    diff = (paper_prompt.delta - project_prompt.delta).detach().norm()
    delta_diff = (diff / project_prompt.delta.detach().norm().clamp_min(1e-12)).item()
    speedup = timings.ratio("paper", "project")
    for key in ("paper", "project"):
        rate = n * args.epochs / median(timings.wall[key])
        print(
            f"[vp] {key}: {rate:.0f} images/s ({median(timings.wall[key]):.2f} s wall, "
            f"{median(timings.cpu[key]):.2f} s CPU per run, medians)"
        )
    print(f"[vp] speedup on the CPU clock: {timings.ratio('paper', 'project', 'cpu'):.2f}x")
    print(
        f"[vp] same result: mapping {'equal' if paper_map == project_map else 'DIFFERENT'} "
        f"{project_map}, prompt relative difference {delta_diff:.1e} (tol {PROMPT_TOL:g})"
    )
    failures = []
    if paper_map != project_map or delta_diff > PROMPT_TOL:
        failures.append("the two ways disagree")
    if speedup < args.min_speedup:
        failures.append(f"speedup {speedup:.2f}x is below {args.min_speedup:g}x")
    return finish("vp", f"vp_speedup {speedup:.2f}x", failures)


if __name__ == "__main__":
    sys.exit(main())
