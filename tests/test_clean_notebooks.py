"""Notebooks go into git without outputs: the committed ones hold none, and the nbstripout filter
that `make setup` installs keeps what JupyterLab saves in the working tree out of commits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import nbformat
import pytest

from lib.core.utils import project_root

ROOT = project_root()
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
IN_GIT = shutil.which("git") is not None and (ROOT / ".git").exists()


def _git(*args: str, cwd=ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def _committed(name: str) -> str:
    """The notebook as git holds it (the index), else the file."""
    if IN_GIT:
        return _git("show", f":notebooks/{name}")
    return (ROOT / "notebooks" / name).read_text()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_holds_no_outputs(name):
    text = _committed(name)
    nb = nbformat.reads(text, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert "widgets" not in nb.metadata
    # the filter would change nothing: a fresh clone with it installed is clean
    stripped = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "nbstripout"), "--keep-id"],
        input=text, capture_output=True, text=True, check=True,
    ).stdout if (ROOT / ".venv" / "bin" / "nbstripout").exists() else text  # fmt: skip
    assert stripped == text


@pytest.mark.skipif(not IN_GIT, reason="not a git checkout")
def test_outputs_saved_by_jupyterlab_stay_out_of_git(tmp_path):
    """A clone with `make notebook-filter` run: a notebook saved with outputs, added, is unchanged
    in git."""
    clone = tmp_path / "clone"
    _git("clone", "-q", str(ROOT), str(clone))
    (clone / ".venv").symlink_to(ROOT / ".venv")
    subprocess.run(
        ["make", "-o", ".venv/.installed", "notebook-filter"],
        cwd=clone, check=True, capture_output=True, env={**os.environ},
    )  # fmt: skip
    path = clone / "notebooks" / "transfer.ipynb"
    nb = json.loads(path.read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stderr", "text": ["epochs: 40%\n"]}]
    code["execution_count"] = 3
    path.write_text(json.dumps(nb, indent=1))
    # git status may call a file of a new size modified before looking; once added, it is not
    _git("add", "notebooks/transfer.ipynb", cwd=clone)
    assert _git("status", "--porcelain", cwd=clone) == ""
    assert "epochs: 40%" not in _git("show", ":notebooks/transfer.ipynb", cwd=clone)
    assert "epochs: 40%" in path.read_text()  # the working tree keeps the user's outputs
