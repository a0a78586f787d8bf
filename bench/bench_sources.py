"""Source models per CPU-hour: glyphs-v2's recipe (IMP to state 20) vs the confirmatory one.

    python bench/bench_sources.py                  # ~1 min: 3 rounds of 40 steps each
    python bench/bench_sources.py --compile        # also torch.compile (not adopted; +2 min)

A source model is one IMP run of a recipe (params/tickets.yaml, params/tickets-confirm.yaml):
the steps to the rewind point, then every level (dense, each IMP state, each random control)
trains the whole schedule. Both recipes train the same network with the same step, so a
source model costs (steps of its recipe) x (CPU time of one step). The step is timed here
as training runs it (lib.models.pretrain.train_classifier on a masked model, one thread, as
`tools/train-confirm` runs one process per core), both recipes interleaved in one process;
images are random (a step's cost does not depend on them). Also printed: the training
step's GFLOP/s (forward + backward, torch.utils.flop_counter) beside an fp32 matmul on the
same thread, the machine's roofline. Target: 4x (issue 37); docs/speed.md says what was
tried and what pays.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import add_common_args, finish, interleave, median, setup

from lib.core.cli import HelpFormatter

if TYPE_CHECKING:  # torch loads in main: --help answers at once
    import torch

TARGET = 4.0
ROOT = Path(__file__).resolve().parents[1]


def recipe(path: str) -> dict[str, Any]:
    from lib.study.grid import load_yaml

    return load_yaml(ROOT / path)["pretrain"]


def steps_per_source(r: dict[str, Any]) -> int:
    """Training steps of one IMP run of recipe `r` (lib.models.prune.run_imp)."""
    per_run = r["epochs"] * math.ceil(r["num_classes"] * r["per_class"] / r["batch_size"])
    levels = 1 + r["max_state"] + len(r["random_states"])
    return r["rewind_iter"] + levels * per_run


def step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--today", default="params/tickets.yaml", help="the baseline recipe")
    parser.add_argument("--new", default="params/tickets-confirm.yaml", help="the new recipe")
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed run")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    add_common_args(parser, repeats=3)
    args = parser.parse_args(argv)
    if not args.threads:
        args.threads = 1  # one process per core, as the sources train
    setup(args, "sources")
    import torch
    from torch.utils.data import TensorDataset

    from lib.models.backbone import create_backbone
    from lib.models.masks import Mask
    from lib.models.pretrain import train_classifier
    from lib.models.prune import prune

    recipes = {"today": recipe(args.today), "new": recipe(args.new)}
    steps = {name: steps_per_source(r) for name, r in recipes.items()}
    arch, batch = recipes["new"]["arch"], recipes["new"]["batch_size"]
    differs = sorted(
        k
        for k in recipes["today"].keys() | recipes["new"].keys()
        if recipes["today"].get(k) != recipes["new"].get(k)
    )
    print(f"[sources] the recipes differ in: {', '.join(differs)} (nothing else)", flush=True)
    g = torch.Generator().manual_seed(args.seed)
    n = args.steps * batch
    data = TensorDataset(
        torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
        torch.randint(0, recipes["new"]["num_classes"], (n,), generator=g),
    )

    def trainer(compiled: bool = False):
        torch.manual_seed(args.seed)
        model = create_backbone(arch, num_classes=recipes["new"]["num_classes"])
        mask = prune(model, Mask.ones_like(model), 1 - 0.8**6)  # a mid-IMP level
        if compiled:
            model = torch.compile(model)

        def run() -> None:
            train_classifier(model, data, 1, batch_size=batch, mask=mask, seed=args.seed)

        return model, run

    trained = {name: trainer() for name in recipes}
    model = trained["new"][0]  # its FLOPs are counted below
    contenders = {name: run for name, (_, run) in trained.items()}
    if args.compile:
        _, contenders["new + torch.compile"] = trainer(compiled=True)
        print("[sources] compiling in the warm-up run ...", flush=True)
    for run in contenders.values():
        run()  # warm-up: oneDNN primitives
    timings = interleave(contenders, args.repeats, "sources")
    per_step = {k: median(v) / args.steps for k, v in timings.cpu.items()}
    rate = {}
    for name, seconds in per_step.items():
        recipe_steps = steps["today" if name == "today" else "new"]
        rate[name] = 3600 / (seconds * recipe_steps)
        print(
            f"[sources] {name}: {recipe_steps} steps a source model x {seconds * 1e3:.0f} ms "
            f"CPU a step = {seconds * recipe_steps / 60:.1f} CPU-min: "
            f"{rate[name]:.2f} source models per CPU-hour",
            flush=True,
        )
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    flops = step_flops(model.train(), x, torch.randint(0, 45, (batch,)))
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.matmul(a, b)
    mm = interleave({"matmul": lambda: [torch.matmul(a, b) for _ in range(8)]}, 3, "sources")
    matmul = 8 * 2 * 1024**3 / median(mm.wall["matmul"]) / 1e9
    step = flops / median(timings.wall["new"]) * args.steps / 1e9
    print(
        f"[sources] {arch} training step, batch {batch}: {flops / 1e9:.2f} GFLOP, "
        f"{step:.1f} GFLOP/s; fp32 matmul 1024x1024 on {args.threads} thread(s): "
        f"{matmul:.1f} GFLOP/s ({step / matmul:.0%} of it)"
    )
    best = max(rate, key=rate.get)
    ratio = rate["new"] / rate["today"]
    failures = [] if ratio >= TARGET else [f"{ratio:.2f}x source models per CPU-hour < {TARGET}x"]
    if best != "new":
        print(f"[sources] {best}: {rate[best] / rate['today']:.2f}x (measured, not adopted)")
    return finish("sources", f"source_models_per_cpu_hour_vs_today {ratio:.2f}", failures)


if __name__ == "__main__":
    sys.exit(main())
