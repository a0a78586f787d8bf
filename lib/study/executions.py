"""Notebook executions and their outcomes: what the sweep and the Slurm backend both run.

    from lib.study.executions import Execution, run_execution
    outcome = run_execution(Execution(key, params, configs))   # done | skipped | failed

One execution is one papermill run of notebooks/transfer.ipynb over n-shots x seeds; a
failing notebook leaves <key>.failed.ipynb and no record.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib.core import paths
from lib.core.utils import HEADLESS_ENV, project_root
from lib.study import results

if TYPE_CHECKING:
    from lib.study.config import ExperimentConfig

NOTEBOOKS = project_root() / "notebooks"
KERNEL = "sparse-vp"
# ipykernel logs two harmless lines to the terminal the sweep runs in: a warning that the
# local kernel talks over TCP without encryption (every notebook), and "KeyboardInterrupt
# caught in kernel" when jupyter_client interrupts an idle kernel before shutting it down.
# Errors of a notebook are in its cells' outputs (and the sweep's FAILED line), not there.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


@dataclass
class Execution:
    """One papermill execution of notebooks/transfer.ipynb: configs over source models x
    n-shots x seeds."""

    key: str
    params: dict[str, Any]
    configs: list[ExperimentConfig] = field(default_factory=list)

    @property
    def output(self) -> Path:
        """The executed notebook: outputs/<study>/runs/<key>.ipynb."""
        return paths.run_notebook(self.configs[0].study, self.key)

    @property
    def done(self) -> bool:
        """Every record written and the executed notebook saved: a notebook killed after its
        last record (or stopped in its plotting cells) is executed again, cheaply."""
        records = all(results.has_record(c.study, c.run_key) for c in self.configs)
        return records and intact_notebook(self.output)


_READABLE: dict[tuple[str, int, int], bool] = {}


def intact_notebook(path: Path) -> bool:
    """A regular file that nbformat reads as a notebook: one cut short (a full disk, a copy
    interrupted) is not a finished execution. Memoised on (path, size, mtime)."""
    try:
        info = path.stat()
    except OSError:
        return False
    key = (str(path), info.st_size, info.st_mtime_ns)
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read
        return False
    if key not in _READABLE:
        import nbformat

        try:
            _READABLE[key] = isinstance(nbformat.read(path, as_version=4).cells, list)
        except Exception:  # noqa: BLE001 - JSON, version, encoding: any unreadable file
            _READABLE[key] = False
    return _READABLE[key]


@dataclass
class Outcome:
    key: str
    status: str  # done | skipped | failed | cancelled (by Slurm) | interrupted | not started
    seconds: float = 0.0
    error: str = ""


class SweepInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the sweep; `outcomes` are those known when it stopped."""

    def __init__(self, signum: int, outcomes: list[Outcome] | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.outcomes = outcomes or []


class NotebookFailed(RuntimeError):
    """A notebook stopped with an error: one line naming what failed, the error and the
    executed notebook that holds the traceback (commands print it instead of papermill's)."""

    def __init__(self, what: str, error: BaseException, output: Path, note: str = "") -> None:
        where = paths.failed_notebook(output)
        details = f"; the traceback is in {where}" if where.is_file() else ""
        super().__init__(f"{what} failed: {_describe(error)}{details}{note}")


def execute_notebook(name: str, output: Path, parameters: dict[str, Any]) -> None:
    """papermill into a temporary file, renamed on success; a failure keeps *.failed.ipynb."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp, failed = paths.running_notebook(output), paths.failed_notebook(output)
    os.environ[HEADLESS_ENV] = "1"  # the kernel inherits it: no tqdm redraws in the notebook
    tmp.unlink(missing_ok=True)  # papermill opens it for writing: never through a planted link
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / name),
            str(tmp),
            parameters=parameters,
            kernel_name=KERNEL,
            cwd=str(project_root()),
            progress_bar=False,
            log_output=False,
            extra_arguments=list(KERNEL_ARGUMENTS),
        )
    except BaseException:
        if tmp.exists():
            os.replace(tmp, failed)
        raise
    os.replace(tmp, output)
    failed.unlink(missing_ok=True)


def _describe(error: BaseException) -> str:
    cell = getattr(error, "exec_count", None)
    ename, evalue = getattr(error, "ename", type(error).__name__), getattr(error, "evalue", error)
    where = f"cell {cell}: " if cell is not None else ""
    return f"{where}{ename}: {str(evalue).splitlines()[0] if str(evalue) else ''}"


def run_execution(execution: Execution, threads: int = 0) -> Outcome:
    if execution.done:
        return Outcome(execution.key, "skipped")
    start = time.perf_counter()
    try:
        execute_notebook(
            "transfer.ipynb", execution.output, {**execution.params, "threads": threads}
        )
    except Exception as error:  # noqa: BLE001 - one failing run must not stop the sweep
        return Outcome(execution.key, "failed", time.perf_counter() - start, _describe(error))
    return Outcome(execution.key, "done", time.perf_counter() - start)
