"""lib.core.utils.progress in each place it runs: widget bars in a Jupyter kernel (JupyterLab),
nothing in the sweep's headless kernels, text bars in a terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from lib.core.utils import HEADLESS_ENV, PROGRESS_ENV, project_root
from lib.study.executions import KERNEL

NESTED = """\
from lib.core.utils import progress
for run in progress(range(3), desc="runs"):
    for epoch in progress(range(40), desc="epochs"):
        pass
"""
WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def watched(monkeypatch):
    """The environment of a person's JupyterLab: no CI switch, no quiet switch."""
    for name in ("CI", PROGRESS_ENV, HEADLESS_ENV):
        monkeypatch.delenv(name, raising=False)


def _widgets(nb: nbformat.NotebookNode, model: str) -> list[dict]:
    """The state of every widget of kind `model` that the kernel made (nbclient keeps it)."""
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return [m["state"] for m in state.values() if m["model_name"] == model]


def _execute(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(
        nb, kernel_name=KERNEL, timeout=120, resources={"metadata": {"path": str(project_root())}}
    ).execute()
    return nb


@pytest.mark.slow
def test_a_jupyter_kernel_shows_one_widget_bar_per_level_and_closes_the_inner_ones(watched):
    nb = _execute(NESTED)
    outputs = nb.cells[0].outputs
    assert [o for o in outputs if o.output_type == "stream"] == []  # no text bars on stderr
    bars = [o for o in outputs if o.output_type == "display_data" and WIDGET in o.data]
    assert len(bars) == 1 + 3  # the runs bar, then one epochs bar per run
    # Each bar is an HBox (label, bar, label); the epochs bars were closed when done (hidden),
    # the finished runs bar stays, green.
    hidden = [layout.get("visibility") == "hidden" for layout in _widgets(nb, "LayoutModel")]
    assert hidden.count(True) == 3  # tqdm.notebook hides a closed bar's box
    styles = [bar["bar_style"] for bar in _widgets(nb, "FloatProgressModel")]
    assert sorted(styles) == [""] * 3 + ["success"], styles


@pytest.mark.slow
def test_a_loop_left_early_ends_its_widget_bar_as_done_not_as_an_error(watched):
    nb = _execute(NESTED.replace("pass", "break"))  # every epochs loop stops after one epoch
    styles = [bar["bar_style"] for bar in _widgets(nb, "FloatProgressModel")]
    assert "danger" not in styles and "success" in styles  # the runs bar, finished


@pytest.mark.slow
def test_the_sweeps_headless_kernel_shows_no_bar(watched, monkeypatch):
    monkeypatch.setenv(HEADLESS_ENV, "1")  # lib.study.executions sets it for papermill
    assert _execute(NESTED).cells[0].outputs == []


def test_a_terminal_gets_text_bars_on_stderr(watched):
    done = subprocess.run(
        [sys.executable, "-c", NESTED],
        capture_output=True,
        text=True,
        check=True,
        cwd=project_root(),
        env={**os.environ},
    )
    assert done.stdout == ""
    assert "runs: 100%" in done.stderr and "it/s" in done.stderr
