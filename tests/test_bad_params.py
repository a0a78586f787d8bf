"""Bad parameters fail with the bad value and the allowed ones, before any data or training,
from each way a user starts runs: the notebook, the sweep and the paper-flag CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from lib.core.utils import project_root
from lib.study.sweep import main as sweep_main

GOOD = {"network": "dense", "method": "lp", "n_shot": 5, "seed": 1}
MISSING_TICKET = (
    r"sparsity state 7 of cifar_resnet_20_8: missing .*cifar_resnet_20_8_dyn4_7_checkpoint"
)
TOO_MANY_SHOTS = r"n_shot=500 exceeds the smallest class size \d+"


def _params(tickets, grid, **top):
    defaults = {
        "dataset": "digits",
        "arch": "cifar_resnet_20_8",
        "pretrained_dir": str(tickets),
        "epochs": 2,
        "max_val": 50,
    }
    return {"study": "bad", "defaults": defaults, "grid": grid, "report": False, **top}


def _sweep(tmp_path, params):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return sweep_main([str(path), "--no-report"])


def _nothing_ran(outputs):
    assert not (outputs / "bad").exists()  # no runs/, records/, artifacts/, results.csv
    assert not (outputs / "cache").exists()  # no features computed either


# The bad entry comes LAST: a sweep that validates lazily would have run the first one.
@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ({"dataset": "cifar11"}, ValueError, "unknown dataset 'cifar11'; choose one of: .*cifar10"),
        ({"arch": "resnet51"}, ValueError, "unknown architecture .resnet51.; choose one of"),
        ({"method": "finetune"}, ValueError, "unknown method 'finetune'; choose one of: lp, vp"),
        (
            {"method": "vp", "mapping": "bayes"},
            ValueError,
            "unknown mapping 'bayes'; choose one of: ilm, flm, rlm, linear, blm, blmpp",
        ),
        ({"epochs": -1}, ValueError, "epochs must be a number >= 1, got -1"),
        ({"method": "vp", "target_size": 64}, ValueError, r"target_size 64 must be in 1\.\.32"),
        ({"epoch": 3}, ValueError, r"unknown parameter\(s\) 'epoch'; choose from: .*epochs"),
        ({"network": "ticket", "sparsity": 7}, FileNotFoundError, MISSING_TICKET),
        ({"n_shot": 500}, ValueError, TOO_MANY_SHOTS),
    ],
)
def test_sweep_validates_the_whole_grid_before_the_first_run(
    outputs, tickets, tmp_path, bad, error, message
):
    params = _params(tickets, [GOOD, {**GOOD, **bad}])
    with pytest.raises(error, match=message) as info:
        _sweep(tmp_path, params)
    if error is ValueError and "n_shot" not in bad:
        # says which file, and where in it
        assert str(info.value).startswith(f"{tmp_path / 'params.yaml'}: grid entry 1: ")
    _nothing_ran(outputs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grids": []}, r"unknown key\(s\) 'grids'; choose from: study, "),
        (
            {"defaults": {"n_shots": [5]}},
            r"params\.yaml: defaults: unknown parameter\(s\) 'n_shots'; choose from: .*n_shot",
        ),
        (
            {"method_defaults": {"pl": {"epochs": 3}}},
            r"params\.yaml: method_defaults: .*'pl'; .*lp, vp",
        ),
        (
            {"method_defaults": {"lp": {"epoch": 3}}},
            r"params\.yaml: method_defaults\.lp: .*'epoch'",
        ),
        ({"grid": [GOOD, ["network", "dense"]]}, r"params\.yaml: grid entry 1 must be a mapping"),
        (
            {"grid": [GOOD, {**GOOD, "seed": []}]},
            r"params\.yaml: grid entry 1: no values for 'seed'",
        ),
    ],
)
def test_sweep_names_unknown_keys_where_they_are(outputs, tickets, tmp_path, change, message):
    params = {**_params(tickets, [GOOD]), **change}
    with pytest.raises(ValueError, match=message):
        _sweep(tmp_path, params)
    _nothing_ran(outputs)


# ---------------------------------------------------------------- notebook (papermill)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bad", "ename", "message"),
    [
        # the sweep and CLI tests cover the config errors; this one needs the data's labels,
        # and is found before n_shot 5 runs
        ({"n_shots": [5, 500]}, "ValueError", TOO_MANY_SHOTS),
    ],
)
def test_notebook_fails_in_its_config_cell(outputs, tickets, tmp_path, bad, ename, message):
    import papermill

    output = tmp_path / "out.ipynb"
    parameters = {
        "study": "bad",
        "dataset": "digits",
        "pretrained_dir": str(tickets),
        "method": "lp",
        "n_shots": [5],
        "seeds": [1],
        "epochs": 2,
        **bad,
    }
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(
            str(project_root() / "notebooks" / "transfer.ipynb"),
            str(output),
            parameters=parameters,
            kernel_name="sparse-vp",
            cwd=str(project_root()),
            progress_bar=False,
        )
    assert info.value.ename == ename
    assert re.search(message, info.value.evalue)
    cells = json.loads(output.read_text())["cells"]
    failed = [
        c for c in cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))
    ]
    assert len(failed) == 1
    assert "configs_from_parameters(globals())" in "".join(failed[0]["source"])
    _nothing_ran(outputs)


# ---------------------------------------------------------------- paper-flag CLI


def _cli(args, outputs):
    env = {**os.environ, "SPARSE_VP_NO_PROGRESS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lib.transfer", "--results_path", str(outputs), *args],
        cwd=project_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_unknown_dataset_is_a_usage_error(outputs):
    done = _cli(["--dataset", "cifar11"], outputs)
    assert done.returncode == 2, done.stderr
    assert "error: unknown dataset 'cifar11'; choose one of: " in done.stderr
    assert "cifar10, cifar100" in done.stderr and "Traceback" not in done.stderr
    assert not (outputs / "cli").exists()


@pytest.mark.slow
def test_cli_missing_ticket_is_a_usage_error(outputs, tickets):
    flags = [
        "--model",
        "cifar_resnet_20_8",
        "--pretrained_dir",
        str(tickets),
        "--dataset",
        "digits",
    ]
    done = _cli([*flags, "--network", "LT", "--sparsity", "7"], outputs)
    assert done.returncode == 2, done.stderr
    assert re.search("error: .*" + MISSING_TICKET, done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert not (outputs / "cli").exists()
