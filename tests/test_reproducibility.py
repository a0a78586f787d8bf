"""Same params and seed -> the same record, whatever ran before it, in which process, with or
without cached features; and the record says which seed, versions and code produced it."""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
from dataclasses import replace
from importlib import metadata

import pytest
import torch

from lib.core.utils import get_device, project_root
from lib.study import results
from lib.study.config import ExperimentConfig
from lib.study.experiment import run_experiments

# Everything a run computes; timings, memory, dates and provenance may differ.
COMPUTED = ("run_key", "params", "metrics", "history", "mapping", "reliability", "sizes")

RERUN = """
import json, sys
from lib.study.config import ExperimentConfig
from lib.study.experiment import run_experiments
configs = [ExperimentConfig.from_dict(c) for c in json.loads(sys.argv[1])]
run_experiments(configs)
"""


@pytest.fixture
def make_cfg(tiny_config):
    """This file's runs: the shared tiny config (conftest.TINY) with its own defaults."""
    return functools.partial(tiny_config, study="r", network="ticket", sparsity=1, seed=2)


def _artifacts(record):
    path = results.study_dir(record["study"]) / "artifacts" / f"{record['run_key']}.pt"
    return torch.load(path, weights_only=True)


def _assert_same_run(first, again, first_artifacts, again_artifacts):
    for key in COMPUTED:
        assert again[key] == first[key], key
    assert first_artifacts.keys() == again_artifacts.keys()
    for name, tensor in first_artifacts.items():  # logits (and the prompt) bit for bit
        assert torch.equal(again_artifacts[name], tensor), name


def test_lp_rerun_in_a_fresh_folder_and_another_order_is_identical(
    outputs, make_cfg, tmp_path, monkeypatch
):
    cfg = make_cfg(method="lp", epochs=5)
    (first,) = run_experiments([cfg])
    first_artifacts = _artifacts(first)
    # fresh outputs: features recomputed, and the run now comes second in its group
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "again"))
    other, again = run_experiments([replace(cfg, seed=1), cfg])
    _assert_same_run(first, again, first_artifacts, _artifacts(again))
    assert other["metrics"] != first["metrics"]  # the seed matters: the check can fail
    # and with the features now cached: still the same numbers
    (cached,) = run_experiments([cfg], force=True)
    _assert_same_run(first, cached, first_artifacts, _artifacts(cached))
    _assert_provenance(first, cfg)


@pytest.mark.slow
def test_vp_rerun_in_another_process_is_identical(outputs, make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(method="vp", mapping="ilm", n_shot=3)
    (first,) = run_experiments([cfg])
    first_artifacts = _artifacts(first)
    assert "prompt" in first_artifacts and first["mapping"]["indices"]
    # another process, another hash seed, another folder
    again_dir = tmp_path / "again"
    env = {
        **os.environ,
        "SPARSE_VP_OUTPUTS": str(again_dir),
        "PYTHONHASHSEED": "12345",
        "SPARSE_VP_NO_PROGRESS": "1",
    }
    configs = json.dumps([cfg.to_dict()])
    done = subprocess.run(
        [sys.executable, "-c", RERUN, configs],
        cwd=project_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(again_dir))
    again = results.read_record(results.record_path("r", cfg.run_key))
    _assert_same_run(first, again, first_artifacts, _artifacts(again))


def _assert_provenance(record, cfg):
    """The record names the seed, the package versions and the git revision of the code."""
    assert record["params"]["seed"] == cfg.seed and record["params"]["n_shot"] == cfg.n_shot
    assert ExperimentConfig.from_dict(record["params"]).run_key == record["run_key"]  # replayable
    prov = record["provenance"]
    for name in results.PACKAGES:
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        assert prov["versions"][name] == installed, name
    assert prov["versions"]["torch"] is not None and prov["python"] == platform.python_version()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True
    ).stdout.strip()
    assert head and prov["git_revision"] in (head, f"{head}-dirty")
    assert record["device"] == str(get_device("auto"))
