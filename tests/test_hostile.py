"""What a hostile or careless user still broke (issue 41): each case ends in one line naming
the field or file (exit status 2) or in a correct recovery; none writes outside outputs/ or
loses a record. In-process (lib.study.sweep.cli with sys.argv set), so the module is fast.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import SMALL
from conftest import refused as _refused

from lib.core import paths
from lib.core.utils import UnwritableOutput, data_root, outputs_dir, project_root
from lib.study import results, sweep
from lib.study.config import ExperimentConfig


def _write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _params(tmp_path: Path, tickets: Path, grid: object, study: str = "h", **top) -> Path:
    params = {
        "study": study,
        "report": False,
        "defaults": {**SMALL, "pretrained_dir": str(tickets)},
        "grid": grid,
        **top,
    }
    return _write(tmp_path, yaml.safe_dump(params))


# ---------------------------------------------------------------- params files

BOMB = """study: h
grid: {seed: 1}
%s: &a0 [x, x, x, x, x, x, x, x, x, x]
""" + "".join(
    f"x{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
    f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]\n"
    for i in range(1, 9)
)

PARAMS_TEXT = [
    # 1: names the tree keeps for itself (make clean removes cache/ and compare/)
    *(
        (f"study: {n}\ngrid: {{seed: 1}}\n", f"study '{n}' is reserved")
        for n in ("cache", "compare", "data", "checkpoints", "tickets", "Cache")
    ),
    # 8: alias bombs, deep nesting, duplicate keys, an alias inside itself
    (BOMB.replace("%s", "defaults"), r"aliases expand past \d+"),
    (BOMB.replace("%s", "report"), r"aliases expand past \d+"),
    ("study: h\ngrid: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested deeper than 100 levels"),
    ("study: h\ngrid: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n", "nested deeper than"),
    ("study: h\nstudy: other\ngrid: {seed: 1}\n", "duplicate key 'study' at lines 1 and 2"),
    ("study: h\ngrid: {seed: 1, seed: 2}\n", "duplicate key 'seed'"),
    ("study: h\ngrid: &g [*g]\n", "an alias refers to itself"),
    # tickets: a release folder, nothing else
    *(
        (f"study: h\ngrid: {{seed: 1}}\ntickets: {v}\n", f"tickets must be the folder .* got {r}")
        for v, r in (("true", "True"), ("3", "3"), ("[a, b]", r"\['a', 'b'\]"))
    ),
    # grid: null / empty is no grid, not one run of every default
    ("study: h\ngrid: null\n", "grid must be a mapping or a non-empty list"),
    ("study: h\ngrid: []\n", "grid must be a mapping or a non-empty list"),
    ("study: h\ngrid: [{seed: 1}, null]\n", "grid entry 1 must be a mapping"),
]


@pytest.mark.parametrize(("text", "message"), PARAMS_TEXT)
def test_params_file_is_refused_in_one_line(outputs, tmp_path, capsys, text, message):
    path = _write(tmp_path, text)
    err = _refused(capsys, [str(path), "--dry-run"], re.escape(str(path)), message)
    assert len(err) < 400  # never the expanded value
    assert not outputs.exists()


@pytest.mark.parametrize(
    ("grid", "top", "message"),
    [
        # 5: a grid entry or the defaults naming another study
        ([{"seed": 1}, {"seed": 2, "study": "other"}], {}, "grid entry 1: 'study' is not a param"),
        (
            {"seed": 1},
            {"defaults": {**SMALL, "study": "other"}},
            "defaults: 'study' is not a parameter here",
        ),
        # 4: several source models that all load the same files
        (
            {"seed": 1, "source_seed": [0, 1]},
            {},
            r"source_seed \[0, 1\] with pretrained_dir .*"
            "lacks '\\{source_seed\\}'",
        ),
        # non-finite floats are accepted nowhere
        ({"seed": 1, "lr": math.inf}, {}, "lr must be a finite number, got inf"),
        ({"seed": 1, "lr": math.nan}, {}, "lr must be a finite number, got nan"),
        ({"seed": 1, "val_fraction": math.inf}, {}, "val_fraction must be a finite number"),
    ],
)
@pytest.mark.parametrize("dry", [True, False])
def test_grid_is_refused_in_one_line(outputs, tickets, tmp_path, capsys, grid, top, message, dry):
    path = _params(tmp_path, tickets, grid, **top)
    _refused(capsys, [str(path), *(["--dry-run"] if dry else [])], message)
    assert not (outputs / "other").exists() and not (outputs / "h").exists()


@pytest.mark.parametrize("workers", ["0", "-1"])
@pytest.mark.parametrize("dry", [True, False])
def test_workers_below_one_refused_before_anything(
    outputs, tickets, tmp_path, capsys, workers, dry
):
    path = _params(tmp_path, tickets, {"seed": 1})
    argv = [str(path), "--workers", workers, *(["--dry-run"] if dry else [])]
    _refused(capsys, argv, f"--workers must be an int >= 1, got {workers}")
    assert not outputs.exists()  # no lock taken, no pretrain stage


def test_source_axis_with_the_placeholder_is_fine(tickets, tmp_path):
    from lib.study.grid import expand_grid

    folder = tmp_path / "src"
    folder.mkdir()
    for seed in (0, 1):
        (folder / f"seed{seed}").symlink_to(tickets)
    params = {
        "study": "h",
        "defaults": {**SMALL, "pretrained_dir": f"{folder}/seed{{source_seed}}"},
        "grid": {"source_seed": [0, 1]},
    }
    assert len(expand_grid(params)) == 2


def test_source_axis_refused_in_the_notebook_too(tickets):
    from lib.study.checks import configs_from_parameters

    namespace = {**SMALL, "pretrained_dir": str(tickets), "source_seeds": [0, 1]}
    with pytest.raises(ValueError, match="lacks '\\{source_seed\\}'"):
        configs_from_parameters(namespace)


def test_make_clean_removes_no_study_folder():
    """Every outputs/<name> that `make clean` deletes outright is a reserved study name."""
    text = (project_root() / "Makefile").read_text()
    clean = text.split("\nclean:", 1)[1].split("\n\n", 1)[0]
    removed = set(re.findall(r"outputs/([A-Za-z0-9_.-]+)(?=[\s/]|$)", clean))
    assert removed == {"cache", "compare"}
    assert removed <= set(paths.RESERVED)
    for name in removed:
        with pytest.raises(ValueError, match="reserved"):
            paths.study_dir(name)


# ---------------------------------------------------------------- the environment


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_environment_variables_mean_unset(monkeypatch, tmp_path, value):
    monkeypatch.chdir(tmp_path)  # an empty value used to mean the current directory
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", value)
    monkeypatch.setenv("SPARSE_VP_DATA", value)
    assert outputs_dir() == project_root() / "outputs"
    assert data_root() == project_root() / "outputs" / "data"
    assert paths.outputs_root() == project_root() / "outputs"
    paths.pin_environment()  # the kernels it starts see them unset too
    assert "SPARSE_VP_OUTPUTS" not in os.environ and "SPARSE_VP_DATA" not in os.environ


# ---------------------------------------------------------------- the lock


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_planted_lock_is_refused_and_its_target_untouched(outputs, tmp_path, kind):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lock = paths.lock_path("h")
    lock.parent.mkdir(parents=True)
    {
        "symlink": lambda: lock.symlink_to(victim),
        "fifo": lambda: os.mkfifo(lock),
        "folder": lambda: lock.mkdir(),
    }[kind]()
    with pytest.raises(sweep.StudyLocked, match=re.escape(str(lock))):
        with sweep.study_lock("h"):
            pass
    assert victim.read_text() == "precious\n"


def test_planted_running_notebook_link_is_not_written_through(outputs, tmp_path):
    from lib.study.executions import execute_notebook

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    output = outputs / "h" / "report.ipynb"
    output.parent.mkdir(parents=True)
    running = paths.running_notebook(output)
    running.symlink_to(victim)
    with pytest.raises(FileNotFoundError):  # papermill would open `running` for writing
        execute_notebook("no-such-notebook.ipynb", output, {})
    assert not running.is_symlink() and victim.read_text() == "precious\n"


# ---------------------------------------------------------------- records


def _grid_with_records(outputs, tickets, tmp_path):
    """A params file of two LP runs whose records and notebook exist: the sweep runs nothing."""
    path = _params(tmp_path, tickets, {"seed": [1, 2]})
    from lib.study.grid import expand_grid, load_params

    configs = expand_grid(load_params(path))
    for cfg in configs:
        results.write_record(
            {
                "run_key": cfg.run_key,
                "study": "h",
                "params": cfg.to_dict(),
                "metrics": {"test": {"accuracy": 0.5, "ece": 0.1}},
            }
        )
    (execution,) = sweep.plan(configs)
    execution.output.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(), execution.output)  # a readable notebook: done
    return path, configs


def _records(outputs) -> dict[str, str]:
    folder = outputs / "h" / "records"
    return {p.name: p.read_text() for p in folder.glob("*.json") if p.name != "x.json"}


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        (lambda f: (f / "x.json").mkdir(), "x.json: not a regular file"),
        (lambda f: os.mkfifo(f / "x.json"), "x.json: not a regular file"),
        (lambda f: (f / "x.json").symlink_to("/dev/zero"), "x.json: not a readable record"),
        (
            lambda f: (f / "x.json").write_text(
                json.dumps({"run_key": "x", "study": "h", "params": {}, "metrics": {}})
            ),
            "x.json: not a run record .field 'metrics' missing or empty",
        ),
        (
            lambda f: (f / "x.json").write_text(
                json.dumps({"run_key": "x", "study": "other", "params": {}, "metrics": {"a": 1}})
            ),
            "x.json: a record of study 'other' in the records of 'h'",
        ),
        (
            lambda f: (f / "x.json").write_text(
                '{"run_key": "x", "study": "h", "params": {}, "metrics": {"test": {"ece": NaN}}}'
            ),
            r"x.json: not a run record .metric test.ece is nan",
        ),
    ],
)
def test_strange_file_under_records_is_named(outputs, tickets, tmp_path, capsys, plant, message):
    path, _ = _grid_with_records(outputs, tickets, tmp_path)
    before = _records(outputs)
    plant(outputs / "h" / "records")
    _refused(capsys, [str(path), "--dry-run"], message)
    _refused(capsys, [str(path)], message)
    assert _records(outputs) == before


def test_foreign_content_under_an_edited_run_key_is_refused(outputs, tickets, tmp_path, capsys):
    path, (one, two) = _grid_with_records(outputs, tickets, tmp_path)
    folder = outputs / "h" / "records"
    other = json.loads((folder / f"{two.run_key}.json").read_text())
    other["run_key"] = one.run_key  # run 2's results renamed to run 1's key
    (folder / f"{one.run_key}.json").write_text(json.dumps(other))
    _refused(capsys, [str(path)], f"{one.run_key}.json: its params are not run", "differ in seed")


def test_warm_sweep_with_intact_records_runs_nothing(outputs, tickets, tmp_path):
    path, configs = _grid_with_records(outputs, tickets, tmp_path)
    assert sweep.main([str(path), "--no-report"]) == 0
    assert len(results.read_records("h")) == len(configs)


def test_non_finite_metric_is_refused_when_the_record_is_written(outputs):
    cfg = ExperimentConfig(study="h", dataset="digits", method="lp")
    record = {
        "run_key": cfg.run_key,
        "study": "h",
        "params": cfg.to_dict(),
        "metrics": {"test": {"accuracy": 0.5, "ece": math.inf}},
    }
    with pytest.raises(ValueError, match="metric test.ece is inf; no record written"):
        results.write_record(record)
    assert not (outputs / "h" / "records").exists()
    # a NaN where the metric means "none" (no wrong prediction) is kept
    record["metrics"] = {"test": {"accuracy": 1.0, "ece": 0.0}, "confidence": {"wrong": math.nan}}
    results.write_record(record)


# ---------------------------------------------------------------- results.csv


def test_results_csv_that_is_a_folder(outputs, tickets, tmp_path, capsys):
    path, _ = _grid_with_records(outputs, tickets, tmp_path)
    before = _records(outputs)
    (outputs / "h" / "results.csv").mkdir()
    _refused(capsys, [str(path), "--no-report"], "cannot write .*results.csv", "records are intact")
    assert _records(outputs) == before


def test_full_disk_while_writing_results_csv(outputs, tickets, tmp_path, monkeypatch):
    _grid_with_records(outputs, tickets, tmp_path)
    before = _records(outputs)

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patched, pytest.raises(UnwritableOutput, match="No space"):
        patched.setattr(os, "replace", full)  # the disk fills while the file is renamed in
        results.write_results_csv("h")
    assert _records(outputs) == before
    assert not list((outputs / "h").glob(".results.csv.*"))  # no temporary file left
