"""Every notebook, executed headlessly by papermill through the smoke study."""

from __future__ import annotations

import json
import shutil

import nbformat
import pandas as pd
import pytest
from papermill.translators import PythonTranslator

from lib.core.utils import project_root
from lib.study import results, sweep

pytestmark = pytest.mark.slow
NOTEBOOKS = ("pretrain_source.ipynb", "transfer.ipynb", "report.ipynb")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_parametrized_for_papermill(name):
    nb = nbformat.read(project_root() / "notebooks" / name, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == sweep.KERNEL
    assert nb.metadata["language_info"]["name"] == "python"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    lines = tagged[0].source.strip().splitlines()
    for line in lines:  # flat, typed, commented
        assert ": " in line.split("=")[0] and "  # " in line, line
    # papermill --help-notebook must understand every line (no "=" in the comments)
    assert len(PythonTranslator.inspect(tagged[0])) == len(lines)


def test_smoke_study_end_to_end_then_nothing_to_do(outputs, capsys):
    # two notebooks at a time, as `make study` runs (one kernel's start-up overlaps the other)
    assert sweep.main([str(project_root() / "params" / "smoke.yaml"), "--workers", "2"]) == 0
    study = results.study_dir("smoke")
    configs = sweep.expand_grid(sweep.load_params(project_root() / "params" / "smoke.yaml"))
    records = results.read_records("smoke")
    assert {r["run_key"] for r in records} == {c.run_key for c in configs}
    frame = pd.read_csv(study / "results.csv")
    assert len(frame) == len(configs) and frame["run_key"].is_unique
    # executed notebooks, without errors, one per execution
    executed = sorted((study / "runs").glob("*.ipynb"))
    assert len(executed) == len(sweep.plan(configs))
    for path in [*executed, study / "pretrain.ipynb", study / "report.ipynb"]:
        nb = nbformat.read(path, as_version=4)
        errors = [
            o
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o.get("output_type") == "error"
        ]
        assert not errors, path
    figures = {p.name for p in (study / "figures").iterdir()}
    for name in (
        "accuracy_vs_sparsity",
        "ece_vs_sparsity",
        "reliability_digits",
        "mapping_digits",
        "paper_metric_vs_ece",
        "ticket_vs_random",
        "quantization",
    ):
        assert {f"{name}.png", f"{name}.svg"} <= figures, name
    html = (study / "report.html").read_text()
    assert "The findings in detail" in html  # the report's findings section (lib.report.summary)
    # quantized runs report their weight levels; tickets their measured sparsity
    quant = [r for r in records if r["params"]["network"] == "quantized"]
    assert quant and all(r["metrics"]["weight_levels"]["max"] <= 16 for r in quant)
    # a second run changes nothing
    before = {p: p.stat().st_mtime_ns for p in study.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert sweep.main([str(project_root() / "params" / "smoke.yaml")]) == 0
    assert "0 done, " in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in study.rglob("*") if p.is_file()}
    assert after == before


def test_a_failing_run_leaves_no_record_and_does_not_stop_the_others(
    outputs, tickets, tmp_path, capsys
):
    params = {
        "study": "failing",
        "defaults": {
            "pretrained_dir": str(tickets),
            "dataset": "digits",
            "method": "lp",
            "epochs": 2,
            "n_shot": 10,
        },
        "grid": [{"network": "dense", "seed": [1]}, {"network": "ticket", "sparsity": 1}],
    }
    path = tmp_path / "failing.yaml"
    path.write_text(json.dumps(params))
    # corrupt the state-1 ticket after validation can see it exists
    broken = tmp_path / "broken"
    shutil.copytree(tickets, broken)
    next(broken.glob("*_dyn4_1_checkpoint.pth")).write_bytes(b"not a checkpoint")
    params["grid"][1]["pretrained_dir"] = str(broken)
    path.write_text(json.dumps(params))
    assert sweep.main([str(path), "--no-report"]) == 1
    out = capsys.readouterr().out
    assert "1 done, 0 skipped, 1 failed" in out and "FAILED" in out and "cell" in out
    records = results.read_records("failing")
    assert [r["params"]["network"] for r in records] == ["dense"]
    assert list((results.study_dir("failing") / "runs").glob("*.failed.ipynb"))
    assert not any(
        p.name.startswith(".") for p in (results.study_dir("failing") / "runs").iterdir()
    )
