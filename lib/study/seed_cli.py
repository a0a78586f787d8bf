"""The paper's two scripts (linear_probing.py, ilm_vp.py) as one command that executes
notebooks/transfer.ipynb through papermill: same flags, same defaults (--model resnet50
--network LT --sparsity 9 --seed 4 --epoch 100 --lr 0.01 --batch_size 128 --n_shot -1),
plus --method and the protocol flags (--selection, --n_shot_policy, --split, ...).

    python -m lib.transfer --method vp --sparsity 8 --pretrained_dir D --dataset cifar10 \\
        --results_path R

Records land in R/<run_name>/records/, the executed notebook in R/<run_name>/runs/.
--run_name is a folder name (letters, digits, -_.), never a path; R is the outputs root.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from lib.core import paths
from lib.core.cli import HelpFormatter, accept_both_spellings, run_main
from lib.core.utils import data_root
from lib.study.config import NETWORK_ALIASES, ExperimentConfig

SEED_SPARSITY = 9  # the paper's scripts: --sparsity 9 (0.8**9 = 13% of the weights kept)
# Where the CLI's defaults are the paper's scripts' and not ExperimentConfig's (the mini
# study's); every other flag defaults to ExperimentConfig's value (tests/test_defaults.py).
PAPER_DEFAULTS = {
    "model": "resnet50",
    "network": "LT",
    "sparsity": None,  # SEED_SPARSITY for tickets, 0 for dense
    "pretrained_dir": "pretrained/resnet50_lt",
    "dataset": "cifar10",
    "seed": 4,
    "epoch": 100,
    "num_workers": 4,
    "run_name": "cli",
}
# CLI flags named after the paper's scripts -> the ExperimentConfig field they set.
FLAG_FIELDS = {"model": "arch", "epoch": "epochs", "run_name": "study"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lib.transfer",
        description=__doc__,
        formatter_class=HelpFormatter,  # shows every default; nothing heavy is imported
    )
    a = p.add_argument
    a(
        "--method",
        default="vp",
        choices=("lp", "vp"),
        help="lp = linear_probing.py, vp = ilm_vp.py (default: vp)",
    )
    a(
        "--model",
        default="resnet50",
        help="source architecture, e.g. resnet50 (paper), resnet18, vgg16, cifar_resnet_20",
    )
    a(
        "--network",
        default="LT",
        help="LT (lottery ticket files in --pretrained_dir; the paper's default), dense "
        "(torchvision ImageNet weights for torchvision archs), sparsezoo (a sparse checkpoint "
        "file: --checkpoint), random_pruned, quantized",
    )
    a(
        "--sparsity",
        type=int,
        default=None,
        help="LT state k: the ticket keeps 0.8**k of its weights (files "
        "{model}_dyn4_{k}_checkpoint.pth and _mask.pth); default 9 as the paper, 0 for dense "
        "(the paper ignored it there)",
    )
    a(
        "--pretrained_dir",
        default="pretrained/resnet50_lt",
        help="folder holding the ticket files (as params/paper.yaml)",
    )
    a("--checkpoint", default="", help="sparsezoo: the sparse checkpoint file")
    a(
        "--weights",
        default="",
        help="dense: torchvision weights name (default: the paper's, IMAGENET1K_V2 for "
        "resnet50, IMAGENET1K_V1 for the other torchvision archs)",
    )
    a("--dataset", default="cifar10", help="target dataset (see lib.datasets.registry.DATASETS)")
    a("--data_root", default="", help="dataset root (default $SPARSE_VP_DATA or outputs/data)")
    a("--caltech_path", default="", help="root of Caltech101 (the paper's flag; = --data_root)")
    a("--n_shot", type=int, default=-1, help="training images per class; -1 = all")
    a("--seed", type=int, default=4, help="random seed (paper default 4)")
    a("--epoch", type=int, default=100, help="training epochs (paper: 100)")
    a("--lr", type=float, default=0.01, help="Adam learning rate (paper: 0.01)")
    a("--batch_size", type=int, default=128, help="batch size (paper: 128)")
    a(
        "--mapping-interval",
        dest="mapping_interval",
        type=int,
        default=1,
        help="ILM: recompute the label mapping every k epochs (paper: 1)",
    )
    a(
        "--mapping",
        default="ilm",
        help="label mapping: ilm | flm | rlm | linear | blm | blmpp (Bayesian-guided, BLM+)",
    )
    a(
        "--prompt",
        default="expansive",
        help="VP prompt: expansive (ILM-VP's) | pad | smm (sample-specific masks)",
    )
    a(
        "--selection",
        default="val",
        help="epoch selection and temperature fit: val (a validation set outside the training "
        "sample, at most n_shot per class), last (last epoch), test (the paper's: best test "
        "epoch, optimistic)",
    )
    a(
        "--n_shot_policy",
        default="strict",
        help="a class with fewer than n_shot images: strict (refuse) or at_most (the paper)",
    )
    a("--val_shots", default="n_shot", help="n-shot validation per class: n_shot or coop")
    a("--split", default="coop", help="train/test partition: coop or seed (prepare_data.py)")
    a("--prompt_mask", default="auto", help="VP: auto | border | lower_triangle (abide: auto)")
    a("--weight_bits", type=int, default=32, help="quantized: weight bits")
    a("--act_bits", type=int, default=32, help="quantized: activation bits")
    a("--device", default="auto", help="auto | cpu | cuda")
    a("--num_workers", type=int, default=4, help="DataLoader workers")
    a("--results_path", default="outputs", help="root folder of the results")
    a("--run_name", default="cli", help="study name: results go to <results_path>/<run_name>")
    a(
        "--wandb",
        action="store_true",
        help="log to Weights & Biases with the paper's keys (honours WANDB_MODE=offline)",
    )
    a("--tensorboard", action="store_true", help="log to TensorBoard under the study folder")
    return accept_both_spellings(p)  # --batch_size and --batch-size, --mapping-interval and _


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    from lib.models.sources import paper_source  # torch: not for --help

    network = NETWORK_ALIASES.get(args.network, args.network)
    weights, sparsity = paper_source(
        network, args.model, args.weights, args.sparsity, SEED_SPARSITY
    )
    return ExperimentConfig.from_dict(
        dict(
            study=args.run_name,
            dataset=args.dataset,
            arch=args.model,
            network=args.network,
            sparsity=sparsity,
            pretrained_dir=args.pretrained_dir,
            weights=weights,
            checkpoint=args.checkpoint,
            weight_bits=args.weight_bits,
            act_bits=args.act_bits,
            method=args.method,
            mapping=args.mapping,
            prompt=args.prompt,
            mapping_interval=args.mapping_interval,
            selection=args.selection,
            n_shot_policy=args.n_shot_policy,
            val_shots=args.val_shots,
            split=args.split,
            prompt_mask=args.prompt_mask,
            n_shot=args.n_shot,
            seed=args.seed,
            epochs=args.epoch,
            lr=args.lr,
            batch_size=args.batch_size,
            device=args.device,
            num_workers=args.num_workers,
            data_root=args.caltech_path
            if args.dataset == "caltech101" and args.caltech_path
            else args.data_root,
            wandb=args.wandb,
            tensorboard=args.tensorboard,
        )
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        paths.check_name(args.run_name, "--run_name")  # a folder under --results_path
        cfg = config_from_args(args)  # every flag checked before anything runs
    except ValueError as error:
        parser().error(str(error))
    try:  # before any work: a results folder nothing can be written to (/proc, read-only)
        paths.check_writable(Path(args.results_path), "--results_path")
    except ValueError as error:
        parser().error(str(error))
    paths.pin_environment()  # a relative $SPARSE_VP_DATA means the same folder to the kernel
    # --results_path moves the results only: data and tickets stay where they were found.
    os.environ.setdefault("SPARSE_VP_DATA", str(data_root()))
    cfg = replace(cfg, pretrained_dir=str(cfg.pretrained_path))
    os.environ["SPARSE_VP_OUTPUTS"] = str(Path(args.results_path).resolve())
    from lib.study import results
    from lib.study.checks import notebook_parameters, validate
    from lib.study.executions import NotebookFailed, execute_notebook

    try:
        validate([cfg])  # missing ticket files, too many shots: a usage error, exit 2
    except (ValueError, FileNotFoundError) as error:
        parser().error(str(error))
    output = results.study_dir(cfg.study) / "runs" / f"{cfg.run_key}.ipynb"
    try:
        execute_notebook("transfer.ipynb", output, notebook_parameters([cfg]))
    except Exception as error:  # papermill's ~90-line traceback: one line, the notebook has it
        raise NotebookFailed(f"run {cfg.run_key}", error, output) from None
    record = results.read_record(results.record_path(cfg.study, cfg.run_key))
    test = record["metrics"]["test"]
    print(
        f"{cfg.run_key}: test accuracy {test['accuracy']:.4f}, ECE {test['ece']:.4f} "
        f"(paper's metric {test['seed_ece']:.4f}); notebook {output}"
    )
    return 0


def cli() -> NoReturn:
    """`python -m lib.transfer`: main() as a command."""
    from lib.study.executions import NotebookFailed

    run_main(main, "python -m lib.transfer", (NotebookFailed,))


if __name__ == "__main__":
    cli()
