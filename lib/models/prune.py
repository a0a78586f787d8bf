"""Iterative magnitude pruning (IMP) with weight rewinding -> lottery tickets, resumable.

    from lib.models.prune import run_imp
    reports = run_imp("cifar_resnet_20", train_ds, test_ds, "outputs/checkpoints/x",
                      states=range(9), epochs=2, classes=names, rewind_iter=100)

Which weights are pruned: every conv and linear weight, the first conv and the classifier
included, under one global threshold -- as open_lth does for its CIFAR ResNets (its default
`sparse_global` strategy ignores no layer). Biases and BatchNorm are never pruned. A tensor
left out of the mask passed to `prune` is left dense, which is how a caller spares a layer.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from lib.core.utils import atomic_torch_save, atomic_write_json, progress
from lib.models.backbone import (
    Mask,
    create_backbone,
    load_lottery_ticket,
    save_ticket,
    sparsity,
    ticket_paths,
)
from lib.models.masks import _count, _remove, prune, random_prune  # noqa: F401 - re-exported
from lib.models.pretrain import evaluate_classifier, train_classifier
from lib.models.states import PRUNE_FRACTION, kept_fraction


def random_mask(model: nn.Module, state: int, seed: int, fraction: float = PRUNE_FRACTION) -> Mask:
    """The random control at IMP state k: k random rounds from a full mask, so its count of
    surviving weights equals the ticket's at the same state exactly."""
    mask = Mask.ones_like(model)
    for level in range(1, state + 1):
        mask = random_prune(mask, fraction, seed=seed * 1000 + level)
    return mask


def _report_path(out_dir: Path, arch: str, kind: str, state: int) -> Path:
    return Path(out_dir) / f"{arch}_{kind}_{state}_report.json"


def _done(out_dir: Path, arch: str, kind: str, state: int) -> bool:
    ckpt, mask = ticket_paths(out_dir, arch, state, kind)
    return ckpt.exists() and mask.exists() and _report_path(out_dir, arch, kind, state).exists()


def _train(
    cfg: dict[str, Any], model: nn.Module, train_ds: Dataset, seed: int, **kwargs: Any
) -> list[dict[str, Any]]:
    """train_classifier with the IMP run's schedule (every level trains the same way)."""
    return train_classifier(
        model,
        train_ds,
        cfg["epochs"],
        lr=cfg["lr"],
        batch_size=cfg["batch_size"],
        weight_decay=cfg["weight_decay"],
        label_smoothing=cfg["label_smoothing"],
        seed=seed,
        **kwargs,
    )


def _train_level(
    cfg: dict[str, Any],
    train_ds: Dataset,
    test_ds: Dataset,
    out_dir: Path,
    kind: str,
    state: int,
    mask: Mask,
    start: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """Train from `start` under `mask`, evaluate, write checkpoint + mask + report (report last:
    it marks the level as finished)."""
    arch = cfg["arch"]
    model = create_backbone(arch, num_classes=cfg["num_classes"])
    model.load_state_dict(start)
    t0, cpu0 = time.perf_counter(), time.process_time()
    history = _train(
        cfg, model, train_ds, cfg["seed"] + state, mask=mask, desc=f"{kind} state {state}"
    )
    # CPU seconds as well as wall seconds: on a shared machine the wall time is inflated.
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    ckpt_path, mask_path = ticket_paths(out_dir, arch, state, kind)
    save_ticket(model, mask, ckpt_path, mask_path)
    report = {
        "arch": arch,
        "kind": kind,
        "state": state,
        "target_density": kept_fraction(state),
        "sparsity": sparsity(model),
        "mask_sparsity": mask.sparsity,
        "test_accuracy": evaluate_classifier(model, test_ds),
        "epochs": cfg["epochs"],
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "history": history,
        "checkpoint": ckpt_path.name,
        "mask": mask_path.name,
    }
    atomic_write_json(_report_path(out_dir, arch, kind, state), report)
    return report


class _RewindReached(Exception):
    pass


def _train_to_rewind_point(cfg: dict[str, Any], train_ds: Dataset, path: Path) -> None:
    """Train from the init (seeded) for `rewind_iter` steps of the full schedule; save them."""
    torch.manual_seed(cfg["seed"])
    model = create_backbone(cfg["arch"], num_classes=cfg["num_classes"])
    if cfg["rewind_iter"] == 0:
        atomic_torch_save(model.state_dict(), path)
        return

    def snapshot(step: int, trained: nn.Module) -> None:
        if step == cfg["rewind_iter"]:
            state = {k: v.detach().cpu().clone() for k, v in trained.state_dict().items()}
            atomic_torch_save(state, path)
            raise _RewindReached  # the rest of this run is not needed

    try:
        _train(cfg, model, train_ds, cfg["seed"], on_step=snapshot, desc="to the rewind point")
    except _RewindReached:
        pass


def _check_config(out_dir: Path, cfg: dict[str, Any]) -> None:
    """Resume only into a folder made with the same settings; stale tickets are never reused."""
    path = out_dir / "imp_config.json"
    if path.exists():
        old = _load_json(path)
        diff = {k: (old.get(k), v) for k, v in cfg.items() if old.get(k) != v}
        if diff:
            raise ValueError(
                f"{out_dir} holds IMP results made with other settings "
                f"(saved vs now: {diff}); use another out_dir or delete it"
            )
    atomic_write_json(path, cfg)


def _load_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def run_imp(
    arch: str,
    train_ds: Dataset,
    test_ds: Dataset,
    out_dir: str | os.PathLike,
    states: Sequence[int],
    epochs: int,
    *,
    classes: Sequence[str],
    rewind_iter: int = 100,
    random_states: Sequence[int] = (),
    lr: float = 0.1,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """IMP with rewinding: a run from the init gives the rewind point (its weights after
    `rewind_iter` steps; 0 = the init); level 0 trains densely from that point; level k prunes
    20% of the surviving weights of level k-1's trained weights, rewinds and retrains with the
    same schedule. Levels 0..max(states) are saved as
    {arch}_dyn4_{k}_checkpoint.pth / _mask.pth / _report.json, plus {arch}_random_{k}_...
    controls for `random_states` (a random mask with the same number of weights, same rewind
    and schedule). Finished levels are skipped, so a killed run resumes where it stopped.
    Returns the reports (tickets by state, then the random controls)."""
    if not states or min(states) < 0:
        raise ValueError(f"states must be non-empty and >= 0, got {list(states)}")
    if any(k < 1 for k in random_states):
        raise ValueError(f"random_states must be >= 1 (state 0 is dense), got {random_states}")
    steps = epochs * math.ceil(len(train_ds) / batch_size)
    if not 0 <= rewind_iter <= steps:
        raise ValueError(
            f"rewind_iter must be in [0, {steps}] (steps of one run), got {rewind_iter}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "arch": arch,
        "num_classes": len(classes),
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "weight_decay": weight_decay,
        "label_smoothing": label_smoothing,
        "seed": seed,
        "rewind_iter": rewind_iter,
        "prune_fraction": PRUNE_FRACTION,
        "train_size": len(train_ds),
        "test_size": len(test_ds),
    }
    _check_config(out_dir, cfg)
    atomic_write_json(out_dir / "classes.json", list(classes))
    rewind_path = out_dir / f"{arch}_rewind.pth"

    if not rewind_path.is_file():
        _train_to_rewind_point(cfg, train_ds, rewind_path)
    rewind = torch.load(rewind_path, map_location="cpu", weights_only=True)
    if not _done(out_dir, arch, "dyn4", 0):
        # The dense state is trained from the rewind point with the same schedule as every
        # ticket, so dense vs ticket differs only in the mask (with a 2-epoch budget, a dense
        # model trained from the init instead lags the tickets by many points).
        ones = Mask.ones_like(create_backbone(arch, num_classes=len(classes)))
        _train_level(cfg, train_ds, test_ds, out_dir, "dyn4", 0, ones, rewind)

    for state in progress(range(1, max(states) + 1), desc="IMP levels"):
        if _done(out_dir, arch, "dyn4", state):
            continue
        previous = load_lottery_ticket(arch, *ticket_paths(out_dir, arch, state - 1))
        mask = prune(previous, Mask.load(ticket_paths(out_dir, arch, state - 1)[1]), PRUNE_FRACTION)
        _train_level(cfg, train_ds, test_ds, out_dir, "dyn4", state, mask, rewind)
    for state in random_states:
        if not _done(out_dir, arch, "random", state):
            model = create_backbone(arch, num_classes=len(classes))
            mask = random_mask(model, state, seed)
            _train_level(cfg, train_ds, test_ds, out_dir, "random", state, mask, rewind)
    return load_reports(out_dir, arch)


def load_reports(out_dir: str | os.PathLike, arch: str) -> list[dict[str, Any]]:
    """Every finished level's report in `out_dir`: tickets by state, then random controls."""
    found = [_load_json(p) for p in Path(out_dir).glob(f"{arch}_*_report.json")]
    return sorted(found, key=lambda r: (r["kind"] != "dyn4", r["state"]))


def imp_table(reports: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per ticket / random control: state, densities, source test accuracy, time."""
    rows = [
        {
            "kind": "ticket" if r["kind"] == "dyn4" else "random",
            "state": r["state"],
            "target density %": 100 * r["target_density"],
            "sparsity %": 100 * r["sparsity"],
            "test accuracy %": 100 * r["test_accuracy"],
            "epochs": r["epochs"],
            "train seconds": r["train_seconds"],
            "train cpu seconds": r.get("train_cpu_seconds"),
        }
        for r in reports
    ]
    return pd.DataFrame(rows).round(2)


def history_frame(reports: list[dict[str, Any]]) -> pd.DataFrame:
    """Per-epoch training loss/accuracy of every level, long format for seaborn."""
    rows = [
        {
            "level": f"{'ticket' if r['kind'] == 'dyn4' else 'random'} {r['state']}",
            "kind": r["kind"],
            "state": r["state"],
            **h,
        }
        for r in reports
        for h in r["history"]
    ]
    return pd.DataFrame(rows)
