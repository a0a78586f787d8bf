"""Optional tracking of finished runs in TensorBoard and Weights & Biases, with the paper's keys.

    ExperimentConfig(..., tensorboard=True)  # event files in outputs/<study>/tensorboard/<run_key>
    ExperimentConfig(..., wandb=True)        # project "sparse-vp"; WANDB_MODE=offline works

lib.study.experiment calls track_run(cfg, record) after writing each record, so tracking replays the
record (per-epoch history, final test metrics) and never holds up or changes a run. The
records stay the source of truth; neither tracker is required.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lib.study import results
from lib.study.config import ExperimentConfig

WANDB_PROJECT = "sparse-vp"
# The paper's scalar names -> the columns of a record's history rows.
EPOCH_KEYS = {
    "Train/Train-ACC": "train_accuracy",
    "Train/Train-Loss": "train_loss",
    "Val/Val-ACC": "val_accuracy",
    "Val/ECE": "val_ece",
}


def paper_scalars(record: dict[str, Any]) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per-epoch scalars (one dict per epoch) and the final ones, under the paper's keys.

    Test/ECE is the binned ECE on softmax probabilities; the paper's own number (summed per
    batch on raw logits) is kept as Test/Seed-ECE for comparison.
    """
    epochs = [
        {  # val_* are None without a selection set (selection: last)
            key: float(row[column])
            for key, column in EPOCH_KEYS.items()
            if row.get(column) is not None
        }
        for row in record["history"]
    ]
    metrics = record["metrics"]
    final = {
        "Test/Test-ACC": metrics["test"]["accuracy"],
        "Test/ECE": metrics["test"]["ece"],
        "Test/Seed-ECE": metrics["test"]["seed_ece"],
        "Sparsity": metrics["sparsity_measured"],
    }
    return epochs, final


def tensorboard_dir(study: str, run_key: str) -> Path:
    return results.study_dir(study) / "tensorboard" / run_key


def log_tensorboard(record: dict[str, Any]) -> Path:
    """Write the run's scalars as one TensorBoard event file; a re-run replaces it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ImportError(
            f"tensorboard=True needs the tensorboard package ({error}): pip install tensorboard"
        ) from None

    folder = tensorboard_dir(record["study"], record["run_key"])
    shutil.rmtree(folder, ignore_errors=True)  # a forced re-run must not add a second curve
    epochs, final = paper_scalars(record)
    with SummaryWriter(log_dir=str(folder)) as writer:
        for step, scalars in enumerate(epochs):
            for key, value in scalars.items():
                writer.add_scalar(key, value, step)
        for key, value in final.items():
            writer.add_scalar(key, value, len(epochs))
    return folder


def log_wandb(record: dict[str, Any]) -> None:
    """One W&B run per record; WANDB_MODE=offline (read by wandb itself) needs no account."""
    try:
        import wandb
    except ImportError:
        raise ImportError(
            "wandb=True needs the wandb package, which is not installed: pip install wandb "
            "(set WANDB_MODE=offline to log without an account), or set wandb=False"
        ) from None

    epochs, final = paper_scalars(record)
    with wandb.init(
        project=WANDB_PROJECT,
        name=record["run_key"],
        group=record["study"],
        config=record["params"],
        dir=str(results.study_dir(record["study"])),
    ) as run:
        for step, scalars in enumerate(epochs):
            run.log(scalars, step=step)
        run.log(final, step=len(epochs))
        run.summary.update(final)


def track_run(cfg: ExperimentConfig, record: dict[str, Any]) -> None:
    """Send a finished run's record to the trackers the config asks for (none by default)."""
    if cfg.tensorboard:
        log_tensorboard(record)
    if cfg.wandb:
        log_wandb(record)
