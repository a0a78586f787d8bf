"""Issue 41, the remaining cases: damaged data and unusable places end in one line naming the
file or folder (exit status 2); failing notebooks in a short message, never a stale report;
a done-check that checks what it vouches for; caches keyed on content; no non-finite metric
dropped unseen; no figure written through a planted link. In-process where possible, fast.
"""

from __future__ import annotations

import gzip
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SMALL
from conftest import refused as _refused

from lib.core.utils import project_root
from lib.study import sweep


def _params(tmp_path: Path, tickets: Path, study: str = "h", **defaults) -> Path:
    params = {
        "study": study,
        "report": False,
        "defaults": {**SMALL, "pretrained_dir": str(tickets), **defaults},
        "grid": {"seed": [1]},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


# ---------------------------------------------------------------- 1. damaged data, a file as root


def _idx(path: Path, n: int, images: bool) -> None:
    """A raw MNIST-format (IDX) file of n blank images or n zero labels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">IIII", 2051, n, 28, 28) if images else struct.pack(">II", 2049, n)
    path.write_bytes(header + bytes(n * (784 if images else 1)))


def _fashion_raw(data: Path, n: int = 40) -> Path:
    raw = data / "FashionMNIST" / "raw"
    for split in ("train", "t10k"):
        _idx(raw / f"{split}-images-idx3-ubyte", n, True)
        _idx(raw / f"{split}-labels-idx1-ubyte", n, False)
    return raw


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: f.write_bytes(f.read_bytes()[:1000]),  # truncated: torch's reshape fails
        lambda f: f.write_bytes(b"garbage" * 10),  # wrong magic: torchvision asserts
    ],
)
@pytest.mark.parametrize("dry", [True, False])
def test_damaged_dataset_file_is_named(outputs, tickets, tmp_path, capsys, damage, dry):
    raw = _fashion_raw(tmp_path / "data")
    damage(raw / "train-images-idx3-ubyte")
    path = _params(tmp_path, tickets, dataset="fashion_mnist")
    argv = [str(path), *(["--dry-run"] if dry else [])]
    _refused(capsys, argv, re.escape(str(raw / "train-images-idx3-ubyte")), "cannot be read")
    assert not (outputs / "h" / "runs").exists()


def test_damaged_gzip_archive_is_named(tmp_path):
    from lib.datasets.registry import DatasetUnreadable, ensure_fashion_mnist

    source = tmp_path / "debian"
    source.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (source / name).write_bytes(gzip.compress(b"\0" * 64))
    (source / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(range(256)) * 64)[:60])
    (source / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not a gzip file")
    with pytest.raises(DatasetUnreadable, match="t10k-images-idx3-ubyte.gz: cannot be read"):
        ensure_fashion_mnist(tmp_path / "data", source, download=False)
    assert not (tmp_path / "data" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").exists()


def test_damaged_array_file_is_named(tmp_path):
    import numpy as np

    from lib.datasets.registry import DatasetUnreadable, get_dataset

    folder = tmp_path / "data" / "abide"
    folder.mkdir(parents=True)
    np.save(folder / "connectivity.npy", np.zeros((20, 45)))
    np.save(folder / "labels.npy", np.arange(20) % 2)
    matrices = folder / "connectivity.npy"
    matrices.write_bytes(matrices.read_bytes()[:300])
    with pytest.raises(DatasetUnreadable, match=f"{re.escape(str(matrices))}: cannot be read"):
        get_dataset("abide", "train", tmp_path / "data", image_size=32)


def test_damaged_glyph_cache_is_rendered_again(tmp_path):
    from lib.datasets.glyphs import cache_path, glyph_tensors

    path = cache_path("test", 2, 1, 0, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match="unusable glyph cache"):
        images, labels = glyph_tensors("test", 2, 1, 0, tmp_path)
    assert len(images) == len(labels) == 2


@pytest.mark.parametrize("below", ["", "sub"])
@pytest.mark.parametrize("dry", [True, False])
def test_data_root_that_is_a_file(outputs, tickets, tmp_path, capsys, monkeypatch, below, dry):
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    monkeypatch.setenv("SPARSE_VP_DATA", str(afile / below) if below else str(afile))
    path = _params(tmp_path, tickets)
    argv = [str(path), *(["--dry-run"] if dry else [])]
    _refused(capsys, argv, f"data root {re.escape(str(afile))}.* is not a folder")
    assert afile.read_text() == "not a folder\n"


# ---------------------------------------------------------------- 3. lib.fake_data's root


@pytest.mark.parametrize("where", ["afile", "afile/sub", "/proc/sparse-vp-fake"])
def test_fake_data_root_that_cannot_hold_folders(tmp_path, capsys, where):
    from lib.datasets import fake_data

    (tmp_path / "afile").write_text("x")
    root = where if where.startswith("/") else str(tmp_path / where)
    _refused(capsys, [root, "--datasets", "abide"], re.escape(root), cli=fake_data.cli)
    assert (tmp_path / "afile").read_text() == "x"


# ---------------------------------------------------------------- 2, 4. failing notebooks


def _papermill_error() -> Exception:
    from papermill.exceptions import PapermillExecutionError

    trace = ["Traceback (most recent call last):", *(f"  frame {i}" for i in range(90))]
    return PapermillExecutionError(3, 4, "run()", "RuntimeError", "no NVIDIA driver\nmore", trace)


def _failing_notebook(monkeypatch, module) -> list[Path]:
    """Make `module.execute_notebook` fail as papermill does: *.failed.ipynb and an error."""
    from lib.core import paths

    outputs = []

    def execute(name, output, parameters):
        outputs.append(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        paths.failed_notebook(output).write_text("{}")
        raise _papermill_error()

    monkeypatch.setattr(module, "execute_notebook", execute)
    return outputs


def _transfer_flags(tickets: Path, results: Path | str) -> list[str]:
    flags = ["--model", "cifar_resnet_20_8", "--pretrained_dir", str(tickets), "--network"]
    flags += ["LT", "--sparsity", "2", "--dataset", "digits", "--method", "lp", "--n_shot", "3"]
    return [*flags, "--epoch", "1", "--results_path", str(results)]


def test_failing_transfer_run_is_one_line(outputs, tickets, capsys, monkeypatch):
    from lib.study import executions, seed_cli

    _failing_notebook(monkeypatch, executions)
    line = _refused(
        capsys,
        _transfer_flags(tickets, outputs),
        r"run digits-lt2-lp-3shot-s4-\w+ failed: cell 4: RuntimeError: no NVIDIA driver;",
        r"the traceback is in .*/cli/runs/digits-lt2-lp-3shot-s4-\w+\.failed\.ipynb$",
        cli=seed_cli.cli,
    )
    assert "frame" not in line


@pytest.mark.parametrize("where", ["/proc/sparse-vp-results", "afile", "afile/sub"])
def test_transfer_results_path_that_cannot_be_written(outputs, tickets, tmp_path, capsys, where):
    from lib.study import seed_cli

    (tmp_path / "afile").write_text("x")
    results = where if where.startswith("/") else str(tmp_path / where)
    line = _refused(
        capsys,
        _transfer_flags(tickets, results),
        f"--results_path '{re.escape(results)}': cannot write there",
        cli=seed_cli.cli,
    )
    assert "run " not in line  # refused before any run
    assert (tmp_path / "afile").read_text() == "x" and not list(tmp_path.glob("**/.probe-*"))


def _study_with_records(outputs, tickets, tmp_path, report: bool = False) -> Path:
    """A params file of one LP run whose record and executed notebook exist."""
    import nbformat

    from lib.study import results
    from lib.study.grid import expand_grid, load_params

    path = _params(tmp_path, tickets)
    params = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**params, "report": report}))
    configs = expand_grid(load_params(path))
    for cfg in configs:
        metrics = {"test": {"accuracy": 0.5, "ece": 0.1}}
        record = {"run_key": cfg.run_key, "study": "h", "params": cfg.to_dict()}
        results.write_record({**record, "metrics": metrics})
    for execution in sweep.plan(configs):
        execution.output.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nbformat.v4.new_notebook(), execution.output)
    return path


def test_failing_report_removes_the_stale_report(outputs, tickets, tmp_path, capsys, monkeypatch):
    from lib.study import stages

    path = _study_with_records(outputs, tickets, tmp_path, report=True)
    folder = outputs / "h"
    (folder / "report.html").write_text("<p>yesterday's report</p>")
    (folder / "report.ipynb").write_text("{}")
    _failing_notebook(monkeypatch, stages)
    _refused(
        capsys,
        [str(path)],
        "the report of h failed: cell 4: RuntimeError: no NVIDIA driver",
        "report.failed.ipynb",
        "the previous report.ipynb and report.html removed",
    )
    assert not (folder / "report.html").exists() and not (folder / "report.ipynb").exists()
    assert (folder / "results.csv").is_file()  # the runs' results are written all the same


def test_failing_pretrain_stage_is_one_line(outputs, monkeypatch):
    from lib.study import stages

    _failing_notebook(monkeypatch, stages)
    with pytest.raises(stages.NotebookFailed, match="the pretrain stage of h failed: cell 4"):
        stages.pretrain({"study": "h", "pretrain": {"max_state": 1, "random_states": [1]}})


# ---------------------------------------------------------------- 5. a Python outside .venv


@pytest.mark.parametrize("command", ["lib.sweep", "lib.transfer", "lib.compare", "lib.fake_data"])
def test_command_outside_the_environment_says_which_python(command):
    # -S: no site-packages, as a system python3 without the project's packages
    done = subprocess.run(
        [sys.executable, "-S", "-m", command, "--help"],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.splitlines()
    assert f"python -m {command}: error: this Python" in line and "lacks" in line
    assert f".venv/bin/python -m {command}" in line and "make" in line


# ---------------------------------------------------------------- 7, 8. done-checks that check


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]),  # cut JSON
        lambda f: f.write_text("{}"),  # JSON, not a notebook
        lambda f: f.write_bytes(b""),
    ],
)
def test_truncated_executed_notebook_is_executed_again(outputs, tickets, tmp_path, capsys, damage):
    from lib.study.grid import expand_grid, load_params

    path = _study_with_records(outputs, tickets, tmp_path)
    (execution,) = sweep.plan(expand_grid(load_params(path)))
    assert execution.done
    damage(execution.output)
    (execution,) = sweep.plan(expand_grid(load_params(path)))
    assert not execution.done
    assert sweep.main([str(path), "--dry-run"]) == 0
    assert f"todo  {execution.key}" in capsys.readouterr().out


def test_pretrain_stamp_reruns_when_a_ticket_file_is_gone(outputs, monkeypatch):
    from lib.study import stages

    settings = {"max_state": 1, "random_states": [1], "out_dir": "outputs/checkpoints/src"}
    params = {"study": "h", "pretrain": settings}
    calls = []

    def execute(name, output, parameters):
        calls.append(name)
        for file in stages.pretrain_outputs(settings):
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(b"ticket")

    monkeypatch.setattr(stages, "execute_notebook", execute)
    files = stages.pretrain_outputs(settings)
    assert len(files) == 6 and all(outputs / "checkpoints" / "src" in f.parents for f in files)
    stages.pretrain(params)
    stages.pretrain(params)
    assert calls == ["pretrain_source.ipynb"]  # unchanged and complete: not run again
    files[3].unlink()  # the state-1 mask the stamp vouched for
    assert not stages.pretrain_stamp(params).fresh
    stages.pretrain(params)
    assert len(calls) == 2 and files[3].is_file()


# ---------------------------------------------------------------- 6. the LP feature cache


def test_feature_cache_follows_data_changed_in_place(outputs, tiny_config):
    import torch
    from torch import nn

    from lib.study.features import cached_features

    cfg = tiny_config(study="h", method="lp")
    torch.manual_seed(0)
    extractor = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    images, labels = torch.rand(12, 3, 8, 8), torch.arange(12) % 3
    first, _ = cached_features(cfg, extractor, (images, labels), "train", torch.device("cpu"))
    again, _ = cached_features(cfg, extractor, (images, labels), "train", torch.device("cpu"))
    assert torch.equal(first, again) and len(list((outputs / "cache").rglob("*.pt"))) == 1
    images.zero_()  # the same tensors, zeroed in place: same sizes, other content
    zeroed, _ = cached_features(cfg, extractor, (images, labels), "train", torch.device("cpu"))
    with torch.no_grad():
        assert torch.allclose(zeroed, extractor(images))
    labels[0] = 2  # labels alone changed: other features file too
    cached_features(cfg, extractor, (images, labels), "train", torch.device("cpu"))
    assert len(list((outputs / "cache").rglob("*.pt"))) == 3


def test_file_backed_dataset_digest_follows_its_files(tmp_path):
    import os

    import torch
    from torch.utils.data import TensorDataset

    from lib.study.features import content_digest

    folder = tmp_path / "dtd"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.jpg").write_bytes(b"jpeg")
    data = TensorDataset(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))
    data.targets = [0, 1]
    before = content_digest(data, folder)
    assert content_digest(data, folder) == before
    os.utime(folder / "images" / "a.jpg", ns=(1, 1))  # rewritten in place: another mtime
    assert content_digest(data, folder) != before
    (folder / "images" / "b.jpg").write_bytes(b"jpeg")
    assert len({before, content_digest(data, folder)}) == 2


# ---------------------------------------------------------------- 9. lib.compare and NaN / inf


def test_compare_counts_and_prints_non_finite_metrics(monkeypatch):
    import math

    import pandas as pd

    from lib.study import compare, findings

    columns = ["finding", "measure", "verdict", "effect", "low", "high", "margin"]
    monkeypatch.setattr(findings, "findings", lambda *a, **k: pd.DataFrame(columns=columns))
    design = {"dataset": "digits", "method": "lp", "network": "dense", "sparsity": 0}
    a = pd.DataFrame([{**design, "run_key": f"r{i}", "seed": i, "test_ece": 0.1} for i in range(4)])
    b = a.copy()
    b.loc[1, "test_ece"], b.loc[2, "test_ece"] = math.nan, math.inf
    result = compare.compare(a, b)
    row = result["metrics"].set_index("metric").loc["test_ece"]
    assert (row["non-finite A"], row["non-finite B"]) == ("", "1 nan, 1 inf")
    assert row["runs"] == 2 and row["changed"] == 2  # the two runs that became non-finite
    assert row["mean B"] == pytest.approx(0.1)  # over the finite values, and said so:
    lines = compare.report_lines(result, "A", "B")
    assert "  test_ece: not finite in A: none; in B: 1 nan, 1 inf (left out of the means" in (
        "\n".join(lines)
    )
    assert not result["identical"]
    compare.figure(result, "A", "B")  # limits from the finite values


# ---------------------------------------------------------------- 11. figures and planted links


def _plant(path: Path, victim: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(victim)


def test_report_figures_are_not_written_through_planted_links(outputs, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.report.figures import save

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = outputs / "h" / "figures"
    for suffix in ("png", "svg"):
        _plant(folder / f"accuracy.{suffix}", victim)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png, svg = save(fig, folder, "accuracy")
    assert victim.read_text() == "precious\n"
    assert not png.is_symlink() and png.read_bytes().startswith(b"\x89PNG")
    assert not svg.is_symlink() and b"<svg" in svg.read_bytes()
    plt.close(fig)


def test_compare_figure_is_not_written_through_a_planted_link(tmp_path, capsys, monkeypatch):
    import pandas as pd

    from lib.study import compare, findings

    columns = ["finding", "measure", "verdict", "effect", "low", "high", "margin"]
    monkeypatch.setattr(findings, "findings", lambda *a, **k: pd.DataFrame(columns=columns))
    rows = [{"run_key": f"r{i}", "dataset": "digits", "method": "lp", "seed": i} for i in (1, 2)]
    for name in ("a", "b"):
        pd.DataFrame(rows).assign(test_accuracy=0.5).to_csv(tmp_path / f"{name}.csv", index=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "cmp"
    _plant(out / "compare.png", victim)
    assert compare.main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--out", str(out)]) == 0
    assert victim.read_text() == "precious\n"
    assert not (out / "compare.png").is_symlink()
    assert (out / "compare.png").read_bytes().startswith(b"\x89PNG")


# ---------------------------------------------------------------- 10. results.csv, --dry-run


def _records(outputs: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (outputs / "h" / "records").glob("*.json")}


def _chattr(flag: str, path: Path) -> bool:
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True)
    return done.returncode == 0


def test_immutable_results_csv_is_one_line_and_loses_no_record(outputs, tickets, tmp_path, capsys):
    import shutil

    path = _study_with_records(outputs, tickets, tmp_path)
    csv = outputs / "h" / "results.csv"
    csv.write_text("yesterday\n")
    before = _records(outputs)
    if not shutil.which("chattr") or not _chattr("+i", csv):
        pytest.skip("no chattr +i here (needs root on a file system with attributes)")
    try:
        _refused(
            capsys,
            [str(path)],
            f"cannot write {re.escape(str(csv))} .Operation not permitted.",
            "the records are intact",
        )
    finally:
        _chattr("-i", csv)
    assert _records(outputs) == before and csv.read_text() == "yesterday\n"
    assert not list(csv.parent.glob(".results.csv.*"))


@pytest.mark.parametrize(("code", "reason"), [(13, "Permission denied"), (30, "Read-only file")])
def test_results_csv_in_a_folder_that_refuses_writes(
    outputs, tickets, tmp_path, capsys, monkeypatch, code, reason
):
    """chmod 555 on the study folder (as a non-root user) or a read-only mount."""
    import os
    import tempfile

    path = _study_with_records(outputs, tickets, tmp_path)
    before = _records(outputs)
    mkstemp = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if Path(dir) == outputs / "h":
            raise OSError(code, os.strerror(code))
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    _refused(capsys, [str(path)], f"cannot write .*results.csv .{reason}", "records are intact")
    assert _records(outputs) == before


def test_read_only_results_csv_is_rebuilt_from_the_records(outputs, tickets, tmp_path):
    """chmod 444 results.csv: a derived file, replaced by a rename (as any user may)."""
    from lib.study import results

    path = _study_with_records(outputs, tickets, tmp_path)
    csv = outputs / "h" / "results.csv"
    csv.write_text("yesterday\n")
    csv.chmod(0o444)
    before = _records(outputs)
    assert sweep.main([str(path)]) == 0
    assert csv.read_text() == results.results_frame("h").to_csv(index=False)
    assert _records(outputs) == before


def _release(tmp_path: Path, tickets: Path) -> Path:
    """A one-source ticket release of the `tickets` fixture, with its manifest."""
    import json
    import shutil

    from lib.study.tickets import MANIFEST, build_manifest

    root = tmp_path / "release"
    folder = root / "seed0"
    shutil.copytree(tickets, folder)
    for kind, state, acc in (("dyn4", 0, 0.98), ("dyn4", 1, 0.98), ("dyn4", 2, 0.97)):
        report = {"kind": kind, "state": state, "test_accuracy": acc, "sparsity": 1 - 0.8**state}
        name = f"cifar_resnet_20_8_{kind}_{state}_report.json"
        (folder / name).write_text(json.dumps({**report, "checkpoint": "c", "mask": "m"}))
    report = {"kind": "random", "state": 2, "test_accuracy": 0.9, "sparsity": 0.36}
    report = {**report, "checkpoint": "c", "mask": "m"}
    (folder / "cifar_resnet_20_8_random_2_report.json").write_text(json.dumps(report))
    (folder / "source_config.json").write_text(json.dumps({"epochs": 6, "seed": 0}))
    (root / MANIFEST).write_text(json.dumps(build_manifest(root, [0], "test-v1")))
    return root


def test_dry_run_verifies_the_shipped_tickets(outputs, tickets, tmp_path, capsys):
    root = _release(tmp_path, tickets)
    path = _params(tmp_path, root / "seed0", network="ticket", sparsity=1)
    params = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**params, "tickets": str(root)}))
    assert sweep.main([str(path), "--dry-run"]) == 0
    assert "test-v1: tickets match the manifest" in capsys.readouterr().out
    mask = root / "seed0" / "cifar_resnet_20_8_dyn4_1_mask.pth"
    data = bytearray(mask.read_bytes())
    data[-1] ^= 1
    mask.write_bytes(bytes(data))
    _refused(capsys, [str(path), "--dry-run"], f"{re.escape(str(mask))}: sha256 differs")
    assert not outputs.exists()
