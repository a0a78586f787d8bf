"""Helpers shared by the bench/ scripts: machine description, interleaved timing, data.

    python bench/common.py      # prints the machine line the benchmarks report

The CPU here is shared, so absolute times drift with other people's load. Every script
therefore times its baseline and the project's way in the same process, alternating
them (A B B A ...) and taking medians, and reports a ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from lib.study.results import cpu_name, has_avx512

if TYPE_CHECKING:  # torch loads when a benchmark starts: --help answers at once
    import torch

# Benchmarks run the real loops; their progress bars would drown the figures.
os.environ.setdefault("SPARSE_VP_NO_PROGRESS", "1")


def machine() -> str:
    """One line: CPU, AVX-512 or not, cores, torch version and threads, date."""
    import torch

    return (
        f"{cpu_name()} ({'AVX-512' if has_avx512() else 'no AVX-512'}), "
        f"{os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {date.today().isoformat()}"
    )


def add_common_args(parser: argparse.ArgumentParser, repeats: int = 3) -> None:
    parser.add_argument(
        "--repeats",
        type=int,
        default=repeats,
        help=f"timed runs of each contender, interleaved; medians reported (default {repeats})",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default"
    )
    parser.add_argument("--seed", type=int, default=0, help="data order and init seed")


def setup(args: argparse.Namespace, name: str) -> None:
    """Apply --threads and print the header every script starts with."""
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1; got {args.repeats}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"[{name}] {machine()}", flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, this process's CPU seconds, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


@dataclass
class Timings:
    """Per contender: wall and CPU seconds of every round, and the last round's result."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    def ratio(self, slow: str, fast: str, clock: str = "wall") -> float:
        """Median time of `slow` over median time of `fast` on one clock."""
        times = self.wall if clock == "wall" else self.cpu
        return median(times[slow]) / median(times[fast])


def interleave(
    contenders: dict[str, Callable[[], Any]], repeats: int, name: str = "bench"
) -> Timings:
    """Time each contender `repeats` times, alternating the order every round (ABBA...) so
    a load change hits all of them alike."""
    out = Timings({k: [] for k in contenders}, {k: [] for k in contenders})
    keys = list(contenders)
    for r in range(repeats):
        for key in keys if r % 2 == 0 else keys[::-1]:
            wall, cpu, out.results[key] = timed(contenders[key])
            out.wall[key].append(wall)
            out.cpu[key].append(cpu)
            print(
                f"[{name}] round {r + 1}/{repeats} {key}: {wall:.2f} s wall, {cpu:.2f} s CPU",
                flush=True,
            )
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def tensors(
    dataset: str, split: str, image_size: int, seed: int, n_shot: int = -1, val_fraction: float = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
    """A mini dataset in memory at `image_size`: the training part (n-shot from what the
    stratified validation split leaves) and the validation part."""
    from lib.datasets.registry import as_tensors, get_dataset
    from lib.datasets.sampling import n_shot_indices, train_val_split

    images, labels = as_tensors(get_dataset(dataset, split, image_size=image_size))
    if not val_fraction:
        idx = n_shot_indices(labels, n_shot, seed)
        return (images[idx], labels[idx]), None
    train_idx, val_idx = train_val_split(labels, val_fraction, seed)
    train_idx = train_idx[n_shot_indices(labels[train_idx], n_shot, seed)]
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def finish(name: str, figure: str, failures: list[str]) -> int:
    """Print the script's figure (its last stdout line) and any failure; the exit status."""
    print(figure)
    if failures:
        print(f"[{name}] FAILED: {'; '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


if __name__ == "__main__":
    print(machine())
