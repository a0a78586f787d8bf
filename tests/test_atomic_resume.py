"""Interrupted work leaves no partial file, and a re-run does exactly what is missing.

The kill test SIGKILLs a real `python -m lib.sweep` (and the notebook kernels it started)
in the middle of a grid, then resumes it.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from lib.core.utils import project_root
from lib.study import results
from lib.study.grid import expand_grid, load_params
from lib.study.sweep import plan


def _env():
    return {**os.environ, "SPARSE_VP_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _descendants(pid: int) -> list[int]:
    kids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    kids = [k for k in kids if _stat(k)[1:2] == [str(pid)]]
    return kids + [d for k in kids for d in _descendants(k)]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process group and the kernels it started (each in its own session)."""
    if proc.poll() is not None:  # it ended by itself (the test then reports why)
        return
    os.killpg(proc.pid, signal.SIGSTOP)  # frozen: it starts no kernel after the next line
    kernels = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in kernels:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_stat(pid)[:1] not in ([], ["Z"]) for pid in kernels):  # gone or a zombie
        assert time.monotonic() < deadline, "kernels still running after SIGKILL"
        time.sleep(0.05)


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.glob("*.json")}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the kernels in /proc")
def test_killed_sweep_resumes_exactly_the_missing_runs(outputs, tickets, tmp_path):
    params = {
        "study": "kill",
        "report": False,
        "defaults": {
            "dataset": "digits",
            "pretrained_dir": str(tickets),
            "method": "lp",
            "epochs": 2,
            "n_shot": 3,
            "train_pool": 100,
            "max_val": 20,
            "max_test": 30,
        },
        # two notebook executions of three runs each
        "grid": [
            {"network": "dense", "seed": [1, 2, 3]},
            {"network": "ticket", "sparsity": 2, "seed": [1, 2, 3]},
        ],
    }
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(params))
    records = outputs / "kill" / "records"
    command = [sys.executable, "-m", "lib.sweep", str(path), "--no-report"]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command,
            cwd=project_root(),
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 240
            while not list(records.glob("*.json")):
                assert proc.poll() is None, f"sweep ended early:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no record yet:\n{log.read_text()}"
                time.sleep(0.05)
        finally:
            _kill_tree(proc)

    first = _snapshot(records)
    assert 1 <= len(first) < 6, "the kill must land in the middle of the grid"
    for name, (_, data) in first.items():
        assert json.loads(data)["run_key"] == name.removesuffix(".json")  # whole, parseable
    executions = plan(expand_grid(load_params(path)))
    skipped = sum(e.done for e in executions)

    done = subprocess.run(  # both notebooks at once: what is left resumes either way
        [*command, "--workers", "2"],
        cwd=project_root(),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = f"{len(executions) - skipped} done, {skipped} skipped, 0 failed"
    assert summary in done.stdout, done.stdout

    after = _snapshot(records)
    assert len(after) == 6
    for name, (mtime, data) in first.items():  # finished runs were not run again
        assert after[name] == (mtime, data)
    frame = pd.read_csv(outputs / "kill" / "results.csv")
    assert not frame["run_key"].duplicated().any()
    assert sorted(frame["run_key"]) == sorted(n.removesuffix(".json") for n in after)
    assert all(json.loads(data)["run_key"] for _, data in after.values())
    assert len(results.read_records("kill")) == 6

    # a narrower grid sets the other records aside (the report reads the grid only) and a
    # wider one brings them back without running them again
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(yaml.safe_dump({**params, "grid": params["grid"][:1]}))
    for grid, kept, line in [
        (narrow, 3, "3 records of runs outside"),
        (path, 6, "3 records brought back"),
    ]:
        again = subprocess.run(
            [*command[:3], str(grid), "--no-report"],
            cwd=project_root(),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert again.returncode == 0 and line in again.stdout, again.stdout + again.stderr
        assert len(results.read_records("kill")) == kept
        assert len(pd.read_csv(outputs / "kill" / "results.csv")) == kept
    assert _snapshot(records) == after  # brought back untouched, nothing run again


def test_set_aside_moves_records_outside_the_grid_and_back(outputs):
    records = outputs / "s" / "records"
    records.mkdir(parents=True)
    for key in "abc":
        (records / f"{key}.json").write_text(json.dumps({"run_key": key}))
    assert results.set_aside("s", {"a", "b"}) == (1, 0)
    assert sorted(p.stem for p in records.glob("*.json")) == ["a", "b"]
    assert json.loads((outputs / "s" / "parked" / "c.json").read_text()) == {"run_key": "c"}
    assert results.set_aside("s", {"a", "b"}) == (0, 0)  # idempotent
    assert results.set_aside("s", {"c"}) == (2, 1)
    assert sorted(p.stem for p in records.glob("*.json")) == ["c"]
    assert results.set_aside("new", {"a"}) == (0, 0)  # a study without records yet


WRITER = """
import sys, torch
from lib.core.utils import atomic_torch_save
big = torch.arange(8_000_000, dtype=torch.float32)
while True:  # nearly all its time is spent writing
    atomic_torch_save({"x": big}, sys.argv[1])
"""


def test_a_killed_writer_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "features.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], cwd=project_root(), env=_env()
    )
    try:
        deadline = time.monotonic() + 120
        while not target.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        # kill while a new version is being written: a temporary file exists (atomic) or
        # the file is shorter than a whole one (written in place)
        whole, writing = 0, time.monotonic() + 2
        while time.monotonic() < writing:
            size = target.stat().st_size
            if any(p.suffix == ".tmp" for p in tmp_path.iterdir()) or size < whole:
                break
            whole = max(whole, size)
            time.sleep(0.002)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    saved = torch.load(target, weights_only=True)
    assert torch.equal(saved["x"], torch.arange(8_000_000, dtype=torch.float32))
    assert [p.name for p in tmp_path.glob("*.pt")] == ["features.pt"]  # temporaries are hidden


# Calls that write files; in lib/ they belong in lib/core/utils.py's atomic helpers only.
DIRECT_WRITES = {("torch", "save"), ("np", "save"), ("json", "dump"), ("pickle", "dump")}


def _write_mode(args: list[ast.expr]) -> bool:
    return any(isinstance(a, ast.Constant) and set(str(a.value)) & set("wax") for a in args)


def _direct_writes(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            bad = func.id == "open" and _write_mode(node.args[1:2])
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else ""
            bad = (
                (owner, func.attr) in DIRECT_WRITES
                or func.attr in ("write_text", "write_bytes", "savefig")  # savefig: follows links
                or (func.attr == "to_csv" and bool(node.args))  # to_csv() -> str is fine
                or (func.attr == "open" and _write_mode(node.args[:1]))  # Path.open("w")
            )
        else:
            bad = False
        if bad:
            lines.append(node.lineno)
    return lines


def test_lib_writes_artifacts_only_through_atomic_helpers():
    lib = project_root() / "lib"
    assert (lib / "study" / "results.py").is_file()  # the scan reaches the packages
    offenders = [
        f"{path.relative_to(lib)}:{line}"
        for path in sorted(lib.rglob("*.py"))
        if path != lib / "core" / "utils.py"
        for line in _direct_writes(ast.parse(path.read_text()))
    ]
    assert not offenders, f"writes that bypass lib.core.utils.atomic_*: {offenders}"


def test_the_scan_finds_a_direct_write():
    code = "import torch\ndef f(x, p):\n    torch.save(x, p)\n    p.write_text('a')\n"
    assert _direct_writes(ast.parse(code)) == [3, 4]
