"""One experiment end to end: records, resume, reproducibility, errors before compute."""

import functools
import json
import shutil

import pytest

from lib.study import results
from lib.study.experiment import run_experiments


@pytest.fixture
def make_cfg(tiny_config):
    """This file's runs: the shared tiny config (conftest.TINY) with its own defaults."""
    return functools.partial(
        tiny_config, n_shot=10, train_pool=-1, max_val=100, max_test=-1, study="t"
    )


def test_records_carry_what_a_figure_needs(outputs, make_cfg):
    cfg = make_cfg(method="vp", network="ticket", sparsity=2)
    (record,) = run_experiments([cfg])
    assert results.record_path("t", cfg.run_key).is_file()
    assert record["params"] == json.loads(json.dumps(cfg.to_dict()))
    m = record["metrics"]
    for key in ("accuracy", "ece", "mce", "ace", "nll", "seed_ece"):
        assert 0 <= m["test"][key] and key in m["test_ts"]
    assert m["temperature"] > 0
    assert abs(m["sparsity_measured"] - (1 - 0.8**2)) < 0.005
    assert record["sizes"] == {"train": 100, "val": 100, "test": 359}
    assert len(record["history"]) == 2 and record["mapping"]["indices"]
    assert record["provenance"]["versions"]["torch"].startswith("2.")
    assert record["provenance"]["git_revision"]
    assert record["peak_rss_mb"] > 0 and record["timings"]["train_s"] > 0
    assert (results.study_dir("t") / "artifacts" / f"{cfg.run_key}.pt").is_file()


def test_finished_runs_are_skipped_and_reruns_are_identical(outputs, make_cfg):
    cfg = make_cfg(method="lp", epochs=5)
    (first,) = run_experiments([cfg])
    path = results.record_path("t", cfg.run_key)
    mtime = path.stat().st_mtime_ns
    run_experiments([cfg])
    assert path.stat().st_mtime_ns == mtime  # skipped: not rewritten
    (again,) = run_experiments([cfg], force=True)
    assert again["metrics"] == first["metrics"]  # same params and seed: same numbers
    assert again["history"] == first["history"]


def test_seeds_and_shots_share_one_group(outputs, make_cfg):
    configs = [make_cfg(method="lp", n_shot=n, seed=s) for n in (5, 10) for s in (1, 2)]
    records = run_experiments(configs)
    assert len({r["run_key"] for r in records}) == 4
    assert sorted(r["sizes"]["train"] for r in records) == [50, 50, 100, 100]
    assert len(results.read_records("t")) == 4
    results.write_results_csv("t")
    frame = results.results_frame("t")
    assert {"test_accuracy", "test_ece", "test_seed_ece", "n_shot", "seed"} <= set(frame.columns)


def test_missing_ticket_fails_before_any_compute(outputs, make_cfg):
    with pytest.raises(FileNotFoundError, match="sparsity state 7 .* missing .*_dyn4_7_checkpoint"):
        run_experiments([make_cfg(network="ticket", sparsity=7)])
    assert not (outputs / "t").exists()


def test_too_many_shots_fails_before_any_compute(outputs, make_cfg):
    with pytest.raises(ValueError, match="n_shot=500 exceeds the smallest class size"):
        run_experiments([make_cfg(n_shot=500)])
    assert not (outputs / "t" / "records").exists()


def test_one_execution_runs_the_product_of_source_models_shots_and_seeds(make_cfg, tmp_path):
    from lib.study.experiment import configs_from_parameters
    from lib.study.sweep import plan

    for src in (0, 1):  # two source models: the fixture's tickets, twice
        shutil.copytree(make_cfg().pretrained_dir, tmp_path / f"seed{src}")
    folder = str(tmp_path / "seed{source_seed}")
    grid = [
        make_cfg(method="lp", pretrained_dir=folder, source_seed=src, n_shot=n, seed=s)
        for src in (0, 1)
        for n in (5, 10)
        for s in (1, 2)
    ]
    (execution,) = plan(grid)
    assert execution.params["source_seeds"] == [0, 1] and execution.params["seeds"] == [1, 2]
    rebuilt = configs_from_parameters(execution.params)  # what the notebook does
    assert sorted(c.run_key for c in rebuilt) == sorted(c.run_key for c in grid)
    # not a product (source 1 lacks a seed): one execution per (source model, n-shot)
    parts = plan(grid[:-1])
    assert len(parts) == 4 and sum(len(p.configs) for p in parts) == 7
    for part in parts:
        keys = sorted(c.run_key for c in configs_from_parameters(part.params))
        assert keys == sorted(c.run_key for c in part.configs)
