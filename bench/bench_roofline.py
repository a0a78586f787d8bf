"""Backbone forward throughput as a fraction of what a large fp32 matmul reaches here.

    python bench/bench_roofline.py                # cifar_resnet_20, 32 px, batch 256
    python bench/bench_roofline.py --matmul-size 4096

FLOPs of the forward are counted by torch.utils.flop_counter.FlopCounterMode (convolutions
and matmuls, 2 FLOPs per multiply-add), the forward runs as the project runs its frozen
source (eval, BatchNorm folded into the convs, channels_last, inference mode). The
reference is torch.matmul of two square fp32 matrices, the best case of this CPU's BLAS.
The ratio, printed last, says how much of the machine the small-channel convolutions use.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from common import add_common_args, interleave, median, setup

from lib.core.cli import HelpFormatter

if TYPE_CHECKING:  # torch loads in main: --help answers at once
    import torch

SOURCE_ARCH, SOURCE_CLASSES, SOURCE_SIZE = "cifar_resnet_20", 45, 32


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=4, help="forwards per timed run")
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n matmul")
    parser.add_argument("--matmul-iters", type=int, default=4, help="matmuls per timed run")
    add_common_args(parser, repeats=5)
    args = parser.parse_args(argv)
    setup(args, "roofline")
    import torch

    from lib.models.backbone import create_backbone, fold_batchnorm

    torch.manual_seed(args.seed)
    model = fold_batchnorm(create_backbone(SOURCE_ARCH, SOURCE_CLASSES))
    x = torch.rand(args.batch_size, 3, SOURCE_SIZE, SOURCE_SIZE)
    x = x.contiguous(memory_format=torch.channels_last)
    n = args.matmul_size
    a, b = torch.randn(n, n), torch.randn(n, n)
    forward_flops = count_flops(model, x) * args.iters
    matmul_flops = 2 * n**3 * args.matmul_iters

    def forward() -> None:
        with torch.inference_mode():
            for _ in range(args.iters):
                model(x)

    def matmul() -> None:
        for _ in range(args.matmul_iters):
            torch.matmul(a, b)

    forward(), matmul()  # warm-up: oneDNN primitive creation, BLAS buffers
    timings = interleave({"backbone": forward, "matmul": matmul}, args.repeats, "roofline")
    backbone_gflops = forward_flops / median(timings.wall["backbone"]) / 1e9
    matmul_gflops = matmul_flops / median(timings.wall["matmul"]) / 1e9
    per_image = forward_flops / args.iters / args.batch_size / 1e6
    print(
        f"[roofline] {SOURCE_ARCH} forward, batch {args.batch_size} at {SOURCE_SIZE} px, "
        f"{per_image:.1f} MFLOP/image: {backbone_gflops:.1f} GFLOP/s "
        f"({args.batch_size * args.iters / median(timings.wall['backbone']):.0f} images/s)"
    )
    print(f"[roofline] fp32 matmul {n}x{n}: {matmul_gflops:.1f} GFLOP/s")
    print(f"backbone_vs_matmul {backbone_gflops / matmul_gflops:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
