"""JupyterLab as its users see it: each notebook opened in Chromium, its kernel checked, every
cell run with the notebook's own defaults, what shows checked, a screenshot kept.

Debian's Chromium (`apt-get install chromium`, which `make test` does as root) is driven by
Playwright; nothing is downloaded. The server runs on 127.0.0.1 with a token, temporary
JupyterLab settings (autosave off) and a temporary outputs folder; the report reads a small
study made here by the same code the transfer notebook calls. Screenshots: outputs/browser/.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.core.utils import HEADLESS_ENV, PROGRESS_ENV, data_root, outputs_dir, project_root

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
ROOT = project_root()
KERNEL_NAME = "Python 3 (sparse-vp)"
# notebook -> images it shows at least (its figures; the report's on the study made below)
NOTEBOOKS = {"transfer.ipynb": 2, "pretrain_source.ipynb": 3, "report.ipynb": 10}
# a tqdm text bar: "epochs:  40%|####      | 4/10 [00:03<00:05,  1.2it/s]"
PROGRESS_TEXT = re.compile(r"\d+%\||\d+/\d+ \[|it/s|s/it")
SETTINGS = {  # JupyterLab user settings of the test's server: nothing saved, no news fetched
    "@jupyterlab/docmanager-extension/plugin": '{"autosave": false}',
    "@jupyterlab/notebook-extension/tracker": '{"windowingMode": "none"}',
    "@jupyterlab/apputils-extension/notification": (
        '{"fetchNews": "false", "checkForUpdates": false}'
    ),
}


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _make_study(outputs: Path) -> None:
    """A small real study named "mini" under `outputs`: LP and ILM-VP on digits from two
    shipped source models, dense and the state-8 ticket (what the report compares)."""
    from lib.study.experiment import run_experiments
    from lib.study.grid import expand_grid

    params = {
        "study": "mini",
        "defaults": {
            "pretrained_dir": "tickets/glyphs-v2/seed{source_seed}",
            "dataset": "digits",
            "n_shot": 10,
            "seed": 1,
            "max_test": 300,
            "epochs": 3,
        },
        "method_defaults": {"lp": {"epochs": 20}},
        "grid": [
            {"network": "dense", "method": ["lp", "vp"], "source_seed": [0, 1]},
            {"network": "ticket", "sparsity": 8, "method": ["lp", "vp"], "source_seed": [0, 1]},
        ],
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARSE_VP_OUTPUTS", str(outputs))
        patch.setenv(PROGRESS_ENV, "1")
        run_experiments(expand_grid(params))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[str]:
    """A JupyterLab server on the repository (its base URL with the token); stopped by PID."""
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium is absent ({CHROMIUM}): `apt-get install chromium` to run this")
    tmp = tmp_path_factory.mktemp("lab")
    outputs = tmp / "outputs"
    data = data_root()  # the real datasets, before the outputs folder moves
    _make_study(outputs)
    for plugin, text in SETTINGS.items():
        path = tmp / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", PROGRESS_ENV, HEADLESS_ENV)}
    env.update(
        SPARSE_VP_OUTPUTS=str(outputs),
        SPARSE_VP_DATA=str(data),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
    )
    token, port = secrets.token_hex(16), _free_port()
    jupyter = Path(sys.executable).parent / "jupyter"
    server = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
         f"--FileCheckpoints.checkpoint_dir={tmp / 'checkpoints'}", "--allow-root"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "w"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp / "server.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield f"{base}|{token}"
    finally:
        server.terminate()  # by its PID: jupyter shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


# Every code cell numbered ([3]:), or an error shown: the run is over.
FINISHED = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return false;
  if (panel.querySelector('[data-mime-type="application/vnd.jupyter.error"]')) return true;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""
# What the screenshot shows first: the cell whose output holds the progress bar.
FIRST_SHOWN = {"transfer.ipynb": 4, "pretrain_source.ipynb": 7, "report.ipynb": 7}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_all_cells_in_jupyterlab(lab, browser, name):
    base, token = lab.split("|")
    before = _tree_hashes(ROOT / "notebooks")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    start = time.perf_counter()
    page.goto(f"{base}/lab/workspaces/{name.split('.')[0]}/tree/notebooks/{name}?token={token}")
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    panel.locator(".jp-Notebook").wait_for(timeout=60_000)
    toolbar = panel.locator(".jp-NotebookPanel-toolbar")
    toolbar.get_by_text(KERNEL_NAME).wait_for(timeout=60_000)  # picked by itself
    page.get_by_text("Kernel status: Idle").first.wait_for(state="attached", timeout=60_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(FINISHED, timeout=300_000, polling=500)
    seconds = time.perf_counter() - start
    shots = outputs_dir() / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    panel.locator(".jp-Cell").nth(FIRST_SHOWN[name]).evaluate(
        "cell => cell.scrollIntoView({block: 'start'})"
    )
    page.screenshot(path=str(shots / f"{name.split('.')[0]}.png"))

    errors = panel.locator('[data-mime-type="application/vnd.jupyter.error"]')
    assert errors.count() == 0, errors.all_inner_texts()
    outputs = "\n".join(panel.locator(".jp-OutputArea-output").all_inner_texts())
    assert "Traceback" not in outputs
    stderr = "\n".join(panel.locator('[data-mime-type="application/vnd.jupyter.stderr"]')
                       .all_inner_texts())  # fmt: skip
    assert not PROGRESS_TEXT.search(stderr), stderr[:2000]
    assert len(stderr.splitlines()) <= 5, stderr[:2000]  # at most a few lines
    images = panel.locator(".jp-OutputArea-output img")
    assert images.count() >= NOTEBOOKS[name], images.count()
    if name != "report.ipynb":  # the report trains nothing: no bar
        bars = panel.locator(".jp-OutputArea-output .widget-hprogress")
        assert bars.count() >= 1  # the outer level's bar stays, finished; inner ones closed

    page.close()
    print(f"{name}: opened and run in {seconds:.0f} s")
    assert _tree_hashes(ROOT / "notebooks") == before  # nothing saved, nothing added


def test_git_sees_the_notebooks_unchanged(browser):
    """After the runs above, `git status` shows no notebook modified (where git is)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "notebooks"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert status.stdout == ""
