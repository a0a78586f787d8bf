"""The slurm backend through submitit's LocalExecutor: same records as the local backend."""

from __future__ import annotations

import math
import shutil
import signal

import pytest
import yaml

from lib.study import results, slurm, sweep

STUDY = "slurmcheck"


def _params(tmp_path, tickets):
    """4 tiny VP runs (2 n-shots x 2 seeds) on sklearn's digits: one notebook execution.

    One execution per backend keeps the test short: every execution costs a kernel start
    and the torch imports (~4 s on an idle 2-core machine, several times that under load).
    """
    params = {
        "study": STUDY,
        "defaults": {
            "pretrained_dir": str(tickets),
            "dataset": "digits",
            "device": "cpu",
            "train_pool": 150,  # 15 images per class: the work stays tiny
            "max_test": 100,
            "max_val": 30,
            "method": "vp",
            "epochs": 2,
        },
        "grid": {"n_shot": [5, 10], "seed": [1, 2]},
        "report": False,
    }
    path = tmp_path / "slurmcheck.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _same(a, b, where="record"):
    """Equal structure; floats equal up to float32 round-off (thread counts may differ)."""
    if isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5, abs=1e-6), (
            f"{where}: {a} != {b}"
        )
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_local_executor_gives_the_local_backend_records(tmp_path, outputs, tickets, monkeypatch):
    params = _params(tmp_path, tickets)
    # One torch thread in both backends' kernels (the slurm task sets --cpus-per-task 1):
    # the same arithmetic, and no thread oversubscription on a shared CPU.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "local"))
    assert sweep.main([str(params), "--backend", "local"]) == 0
    folder = tmp_path / "submitit"
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "slurm"))
    slurm_args = [
        "--executor", "local", "--cpus-per-task", "1", "--gpus-per-task", "0",
        "--time", "3", "--slurm-folder", str(folder / "%j"),
    ]  # fmt: skip
    assert sweep.main([str(params), "--backend", "slurm", *slurm_args]) == 0

    slurm_records = {r["run_key"]: r for r in results.read_records(STUDY)}
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "local"))
    local_records = {r["run_key"]: r for r in results.read_records(STUDY)}
    assert len(local_records) == 4 and slurm_records.keys() == local_records.keys()
    for key, local in local_records.items():
        for part in ("params", "metrics", "history", "mapping", "sizes"):
            _same(slurm_records[key][part], local[part], f"{key}.{part}")
    tasks = [p for p in folder.iterdir() if p.name != "%j"]  # %j: submitit's own pickles
    assert len(tasks) == 1  # one task per execution (chunk size 1)

    # Re-submitting skips what is done: nothing is submitted.
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "slurm"))
    executions = sweep.plan(sweep.expand_grid(sweep.load_params(params)))
    outcomes = slurm.run_slurm(executions, slurm_args)
    assert [o.status for o in outcomes] == ["skipped"]
    assert sorted(folder.iterdir()) == sorted([*tasks, folder / "%j"])


@pytest.fixture
def sigint_default():
    """cancel() of a local task is a SIGINT. A test process started in the background of a
    non-interactive shell (`pytest &`, nohup, some CI runners) has SIGINT ignored, and its
    children inherit that: the task would run on to the end. (lib.study.sweep installs its own
    handler before it submits, so its tasks start with the default.)"""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_task_that_dies_fails_its_runs_with_the_error(tmp_path, outputs, tickets, sigint_default):
    configs = sweep.expand_grid(sweep.load_params(_params(tmp_path, tickets)))
    executions = sweep.plan(configs[:2]) + sweep.plan(configs[2:])  # 2 executions, 1 task
    args = slurm.parser().parse_args(
        ["--executor", "local", "--gpus-per-task", "0", "--slurm-folder", str(tmp_path / "%j")]
    )
    executor = slurm.make_executor(args, STUDY)
    parts = slurm.chunks(executions, 2)
    (job,) = executor.map_array(slurm.run_chunk, parts, [1], [{}])
    job.cancel()  # as scancel, a time limit or a node failure would
    job._results_timeout_s = 0  # submitit waits 15 s for results on slow shared filesystems
    outcomes = slurm.collect([job], parts, poll_seconds=0.1)
    assert [o.key for o in outcomes] == [e.key for e in executions]
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert f"task {job.job_id} failed" in outcomes[0].error and "log " in outcomes[0].error
    assert not results.read_records(STUDY)


def test_bad_flags_fail_before_anything_runs(tmp_path, outputs, tickets, capsys):
    params = str(_params(tmp_path, tickets))
    flags = [["--chunk-size", "0"], ["--executor", "debug"], ["--partitoin", "gpu"]]
    no_slurm = shutil.which("srun") is None
    for extra in flags + ([["--partition", "gpu"]] if no_slurm else []):
        with pytest.raises(SystemExit):
            sweep.main([params, "--backend", "slurm", *extra])
    errors = capsys.readouterr().err
    assert "--chunk-size/--chunk_size: must be an integer >= 1, got 0" in errors  # both spellings
    assert "invalid choice: 'debug'" in errors and "unrecognized arguments: --partitoin" in errors
    assert not no_slurm or "srun not found" in errors and "--executor local" in errors
    assert not outputs.exists()
