"""The terminal: unknown flags refused at once, --help fast and with defaults, both flag
spellings, the dry run's pretraining line and estimate, the sweep's lines (lib.study.console)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import pytest

from lib.core.cli import HelpFormatter, accept_both_spellings
from lib.core.utils import project_root
from lib.study import console

ENTRY_POINTS = ["lib.sweep", "lib.transfer", "lib.tickets", "lib.compare", "lib.fake_data"]
BENCH_SCRIPTS = [
    "bench_lp.py",
    "bench_vp.py",
    "bench_roofline.py",
    "bench_study.py",
    "bench_sources.py",
]


def _python(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """Run python; return the process and its CPU seconds (the machine running the suite is
    shared, so wall time measures the neighbours; CPU time measures the imports)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=project_root(), timeout=timeout
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_unknown_sweep_flag_fails_fast_and_names_it():
    done, seconds = _python("-m", "lib.sweep", "params/mini.yaml", "--wokers", "2")
    assert done.returncode == 2
    assert "--wokers" in done.stderr
    assert seconds < 1, seconds  # CPU seconds: no torch, no pandas before the flags are checked


def _help(name: str, run: str) -> tuple[subprocess.CompletedProcess, float]:
    """`name --help` through runpy's `run` (run_module / run_path), and whether torch loaded."""
    code = (
        "import runpy, sys\n"
        "sys.path.insert(0, 'bench')\n"
        f"sys.argv = ['{name}', '--help']\n"
        "try:\n"
        f"    {run}\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)\n"
    )
    done, seconds = _python("-c", code)
    assert "NO TORCH" in done.stderr, done.stderr[-2000:]  # torch alone takes seconds
    assert seconds < 2, seconds  # CPU seconds
    return done, seconds


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_imports_no_torch_and_shows_defaults(module):
    done, _ = _help(module, f"runpy.run_module('{module}', run_name='__main__')")
    assert "usage: python -m" in done.stdout
    assert "default" in done.stdout


@pytest.mark.parametrize("script", BENCH_SCRIPTS)
def test_bench_help_imports_no_torch_and_shows_defaults(script):
    done, _ = _help(script, f"runpy.run_path('bench/{script}', run_name='__main__')")
    assert f"usage: {script}" in done.stdout and "(default: " in done.stdout


def test_transfer_help_shows_defaults_and_both_spellings():
    from lib.study.seed_cli import parser

    text = parser().format_help()
    assert "(default: 128)" in text and "(default: resnet50)" in text
    args = parser().parse_args(["--batch-size", "7", "--mapping_interval", "3", "--n-shot", "5"])
    assert (args.batch_size, args.mapping_interval, args.n_shot) == (7, 3, 5)
    args = parser().parse_args(["--batch_size", "9", "--mapping-interval", "2"])
    assert (args.batch_size, args.mapping_interval) == (9, 2)


def test_both_spellings_helper_and_formatter():
    import argparse

    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--n_bins", type=int, default=15, help="bins")
    p.add_argument("--said", default=3, help="bins (default 3)")
    p.add_argument("--lr", type=float, default=0.01)  # no help: the default still shows
    p.add_argument("--seed", type=int, default=0, help="seed")  # 0 is a default, not "none"
    accept_both_spellings(p)
    assert p.parse_args(["--dry_run", "--n-bins", "4"]).dry_run
    text = p.format_help()
    assert "bins (default: 15)" in text and "(default 3) (default" not in text
    assert "(default: 0.01)" in text and "seed (default: 0)" in text
    assert "--dry-run, --dry_run\n" in text  # a flag has no default to show
    with pytest.raises(SystemExit):
        p.parse_args(["--dryrun"])


def test_dry_run_lists_pretraining_and_an_estimate(outputs, capsys):
    from lib.study.sweep import main

    assert main([str(project_root() / "params" / "smoke.yaml"), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "todo  pretrain: source model + 4 IMP levels" in out
    assert "estimated time with --workers 1:" in out


def test_estimate_uses_measured_rates_per_method():
    from lib.study.config import ExperimentConfig
    from lib.study.sweep import plan

    configs = [
        ExperimentConfig(study="eta", dataset="digits", method=m, n_shot=n, seed=s, epochs=10)
        for m in ("lp", "vp")
        for n in (10, -1)
        for s in (1, 2)
    ]
    executions = plan(configs)
    estimate = console.Estimate(executions, workers=2)
    assert estimate.left == {e.key for e in executions}
    prior = estimate.seconds_left()
    vp = next(e for e in executions if e.params["method"] == "vp")
    lp = next(e for e in executions if e.params["method"] == "lp")
    estimate.finished(vp.key, 3 * estimate.prior[vp.key])  # VP ran 3x slower than the prior
    assert estimate.ratio("vp") == pytest.approx(3.0)
    assert estimate.ratio("lp") == 1.0  # not measured yet: VP says nothing about LP
    assert estimate.seconds_left() == pytest.approx(estimate.prior[lp.key] / 2)
    assert prior > estimate.seconds_left()


def test_lines_name_the_notebook_runs_time_and_metric(outputs):
    from lib.study import results
    from lib.study.config import ExperimentConfig
    from lib.study.sweep import Outcome, plan

    cfgs = [ExperimentConfig(study="lines", dataset="digits", method="lp", seed=s) for s in (1, 2)]
    (execution,) = plan(cfgs)
    for i, cfg in enumerate(cfgs):
        results.write_record(
            {
                "run_key": cfg.run_key,
                "study": "lines",
                "params": cfg.to_dict(),
                "metrics": {"test": {"accuracy": 0.5 + 0.1 * i, "ece": 0.02}},
            }
        )
    estimate = console.Estimate([execution], 1)
    estimate.finished(execution.key, 75.0)
    line = console.notebook_line(execution, Outcome(execution.key, "done", 75.0), 1, 1, estimate)
    assert line.startswith("[1/1] done") and execution.key in line
    assert "2 runs" in line and "1 min 15 s" in line and "acc 0.550, ECE 0.020" in line
    outcomes = [Outcome("a", "done", 1), Outcome("b", "skipped"), Outcome("c", "failed", 2)]
    final = console.final_line(outcomes, 3725, project_root() / "report.html")
    assert final.startswith("[sweep] finished in 1 h 02 min: 3 notebooks (1 done, 1 skipped")
    assert final.endswith("report.html")


def test_level_watcher_prints_each_finished_level(tmp_path):
    lines: list[str] = []
    with console.LevelWatcher(tmp_path, levels=3, out=lines.append, interval=0.05):
        for state in (0, 1):
            report = {
                "kind": "dyn4",
                "state": state,
                "sparsity": 1 - 0.8**state,
                "test_accuracy": 0.9,
                "train_seconds": 12,
            }
            (tmp_path / f"m_dyn4_{state}_report.json").write_text(json.dumps(report))
            time.sleep(0.3)
    assert len(lines) == 2
    assert lines[0].startswith("[pretrain] level 1/3: ticket state 0, 0% sparse")
    assert "ETA" in lines[1] and "20% sparse" in lines[1]


def test_headless_kernels_show_no_bars(monkeypatch, capsys):
    from lib.core import utils

    monkeypatch.delenv("SPARSE_VP_NO_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv(utils.HEADLESS_ENV, "1")
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # as inside a papermill kernel
    list(utils.progress(range(3), desc="bar"))
    assert "bar" not in capsys.readouterr().err
    monkeypatch.delitem(sys.modules, "ipykernel")
    list(utils.progress(range(3), desc="bar"))
    assert "bar" in capsys.readouterr().err
