"""Optional tracking: TensorBoard event files read back; a clear error when wandb is missing."""

from __future__ import annotations

import functools
import importlib.util

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lib.study.experiment import run_experiments
from lib.study.tracking import tensorboard_dir


@pytest.fixture
def make_cfg(tiny_config):
    """This file's runs: the shared tiny config (conftest.TINY) with its own defaults."""
    return functools.partial(
        tiny_config,
        epochs=3,
        train_pool=150,
        max_val=30,
        max_test=100,
        study="track",
        method="lp",
        device="cpu",
    )


def _scalars(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_the_paper_keys_per_epoch_and_the_test_metrics(outputs, make_cfg):
    cfg = make_cfg(tensorboard=True)
    (record,) = run_experiments([cfg])
    scalars = _scalars(tensorboard_dir("track", cfg.run_key))
    history = record["history"]
    for tag, column in [
        ("Train/Train-ACC", "train_accuracy"),
        ("Train/Train-Loss", "train_loss"),
        ("Val/Val-ACC", "val_accuracy"),
        ("Val/ECE", "val_ece"),
    ]:
        assert [e.step for e in scalars[tag]] == [0, 1, 2]
        assert [e.value for e in scalars[tag]] == pytest.approx([r[column] for r in history])
    test = record["metrics"]["test"]
    for tag, value in [
        ("Test/Test-ACC", test["accuracy"]),
        ("Test/ECE", test["ece"]),
        ("Test/Seed-ECE", test["seed_ece"]),
        ("Sparsity", record["metrics"]["sparsity_measured"]),
    ]:
        (event,) = scalars[tag]
        assert (event.step, event.value) == (3, pytest.approx(value))

    # A forced re-run replaces the curves instead of adding a second set.
    run_experiments([cfg], force=True)
    assert len(_scalars(tensorboard_dir("track", cfg.run_key))["Train/Train-ACC"]) == 3


def test_no_tracking_by_default(outputs, make_cfg):
    cfg = make_cfg()
    run_experiments([cfg])
    assert not (outputs / "track" / "tensorboard").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_missing_is_an_error_before_any_compute(outputs, make_cfg):
    with pytest.raises(ValueError, match="pip install wandb"):
        make_cfg(wandb=True)
    assert not (outputs / "track").exists()
