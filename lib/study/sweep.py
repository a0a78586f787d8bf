"""Expand a params grid into runs and execute the notebooks headlessly with papermill.

    python -m lib.sweep params/mini.yaml                 # pretrain (cached), runs, report
    python -m lib.sweep params/paper.yaml --backend slurm --partition gpu --time 240

The whole grid is validated before the first job starts. Runs whose record exists are
skipped, so an interrupted sweep resumes where it stopped; a failing run does not stop
the others and leaves no record. One sweep of a study runs at a time (a lock file in its
folder names the holder); Ctrl-C or SIGTERM stops it cleanly and prints the command that
resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from lib.core import paths
from lib.core.cli import HelpFormatter, accept_both_spellings, run_main
from lib.core.utils import UnwritableOutput
from lib.study import console, results
from lib.study.config import ExperimentConfig
from lib.study.executions import (  # noqa: F401 - re-exported: lib.study.sweep's names stay importable
    KERNEL,
    NOTEBOOKS,
    Execution,
    NotebookFailed,
    Outcome,
    SweepInterrupted,
    execute_notebook,
    run_execution,
)
from lib.study.grid import check_pretrain, expand_grid, load_params
from lib.study.stages import pretrain, pretrain_folder, pretrain_levels, pretrain_stamp, report

# ---------------------------------------------------------------- executions


def plan(configs: list[ExperimentConfig]) -> list[Execution]:
    """Group configs that differ only in source model, n-shot and seed into one execution.

    One execution pays the kernel start and imports (~6 s here) once, and shares the data,
    each source model and its LP feature cache between its runs.
    """
    from lib.study.checks import LIST_PARAMETERS, notebook_parameters  # torch: not for --help

    groups: dict[str, list[ExperimentConfig]] = {}
    for cfg in configs:
        shared = {k: v for k, v in cfg.to_dict().items() if k not in LIST_PARAMETERS}
        groups.setdefault(json.dumps(shared, sort_keys=True, default=str), []).append(cfg)
    executions = []

    def is_product(part: list[ExperimentConfig]) -> bool:
        return len(part) == math.prod(len({getattr(c, f) for c in part}) for f in LIST_PARAMETERS)

    def split(part: list[ExperimentConfig], key: Callable) -> list[list[ExperimentConfig]]:
        return [[c for c in part if key(c) == k] for k in sorted({key(c) for c in part})]

    for members in groups.values():
        # Grids are products; if a group is not, one execution per n-shot (e.g. three seeds
        # at 10 shots, one with full data), else per (source model, n-shot).
        parts = [members]
        if not is_product(members):
            parts = split(members, lambda c: c.n_shot)
            if not all(map(is_product, parts)):
                parts = split(members, lambda c: (c.source_seed, c.n_shot))
        for part in parts:
            params = notebook_parameters(part)
            digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
            name = part[0].run_key.rsplit("-", 3)[0]  # dataset-network-method
            executions.append(Execution(key=f"{name}-{digest}", params=params, configs=part))
    # The longest first (VP trains through the backbone every epoch, LP a head on cached
    # features), so that two workers do not end with one long notebook running alone.
    return sorted(executions, key=lambda e: e.params["method"] != "vp")


def run_local(
    executions: list[Execution], workers: int = 1, out: Callable[[str], None] = print
) -> list[Outcome]:
    """Execute on this machine; `workers` notebooks at a time share the CPU cores.

    VP notebooks (the long ones) go first, so the last in flight are short LP ones and no
    core idles at the end while one long notebook runs alone on its share of threads.
    One line per finished notebook (lib.study.console.notebook_line), with an ETA from the
    measured rates of the notebooks finished so far.
    """
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
    ordered = sorted(executions, key=lambda e: e.params.get("method") != "vp")
    stop = threading.Event()

    def run(execution: Execution) -> Outcome:
        if stop.is_set():  # queued when the sweep was stopped
            return Outcome(execution.key, "not started")
        return run_execution(execution, threads)

    estimate = console.Estimate(ordered, workers)
    to_run = len(estimate.left)
    pool = ThreadPoolExecutor(max_workers=workers)
    futures = {pool.submit(run, e): e for e in ordered}
    finished: dict[str, Outcome] = {}
    try:
        for future in as_completed(futures):
            execution = futures[future]
            outcome = finished[execution.key] = future.result()
            if outcome.status == "skipped":
                estimate.finished(execution.key, None)
                continue  # the count of skipped notebooks is in the summary
            estimate.finished(execution.key, outcome.seconds)
            index = sum(o.status != "skipped" for o in finished.values())
            out(console.notebook_line(execution, outcome, index, to_run, estimate))
    except SweepInterrupted as stopped:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        stop_kernels(lambda: all(f.done() for f in futures))
        for future, e in futures.items():
            if future.cancelled():
                finished[e.key] = Outcome(e.key, "not started")
            elif not future.done():  # its kernel outlived stop_kernels' patience
                finished[e.key] = Outcome(e.key, "interrupted")
            elif e.key not in finished:
                outcome = future.result()
                if outcome.status == "failed":  # its kernel was stopped
                    outcome.status = "interrupted"
                finished[e.key] = outcome
        stopped.outcomes = [finished[e.key] for e in ordered]
        raise
    finally:
        pool.shutdown(wait=False)
    return [finished[e.key] for e in ordered]


def _child_pids() -> list[int]:
    """Live processes this one started (papermill's kernels, each in its own session)."""
    me, rows = os.getpid(), []
    if Path("/proc/self/stat").exists():
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:  # the fields after the command name: state, ppid, ...
                    state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                except (OSError, IndexError, ValueError):  # it ended meanwhile
                    continue
                rows.append((entry.name, ppid, state))
    else:
        table = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,stat="], capture_output=True)
        rows = [tuple(line.split()[:3]) for line in table.stdout.decode().splitlines()]
    return [int(pid) for pid, ppid, state in rows if ppid == str(me) and not state.startswith("Z")]


def stop_kernels(finished: Callable[[], bool] = lambda: True, timeout: float = 60.0) -> None:
    """Stop the kernels this process started (SIGTERM to each kernel's process group, then
    SIGKILL) until `finished()`: the notebooks using them then fail and save what they have.
    Records are written atomically, so a stopped run leaves none, never half of one."""
    deadline = time.monotonic() + timeout
    sent: dict[int, float] = {}
    while True:
        for pid in _child_pids():
            first = sent.setdefault(pid, time.monotonic())
            kill = signal.SIGKILL if time.monotonic() - first > 5 else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, kill) if os.getpgid(pid) == pid else os.kill(pid, kill)
        if finished() and not _child_pids():
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.2)


# ---------------------------------------------------------------- one sweep per study


class StudyLocked(RuntimeError):
    """Another sweep of the same study is running."""


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']} since {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def study_lock(study: str, argv: list[str] | None = None) -> Iterator[None]:
    """Hold outputs/<study>/sweep.lock for the block: one sweep of a study at a time.

    The file names its holder (pid, host, start time, command). The lock itself is an
    flock on it, which the system releases when the holder ends however it ends, so the
    file of a holder that was killed is stale and simply taken over.
    """
    path = paths.lock_path(study)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # never through a link, never blocking on a FIFO planted there
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except FileNotFoundError:  # the folder was removed by a sweep that just ended
            continue
        except OSError as error:  # ELOOP: a symbolic link; others: a folder, no permission
            raise StudyLocked(
                f"lock file {path} cannot be opened as a plain file ({error.strerror}); "
                "remove it if no sweep of this study runs, then run this again"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StudyLocked(
                f"lock file {path} is not a regular file; remove it if no sweep of this "
                "study runs, then run this again"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise StudyLocked(
                f"study {study!r} is being swept by {holder} (lock file {path}); wait for "
                "it to end or stop it, then run this again"
            ) from None
        try:  # the holder removes the file when it ends: lock the file that is there now
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        stale = os.pread(fd, 4096, 0).decode(errors="replace")
        if stale.strip():
            print(f"[sweep] taking over the stale lock of {_holder(stale)} (not running)")
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": shlex.join(["python", "-m", "lib.sweep", *(argv or [])]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
        with contextlib.suppress(OSError):  # a sweep that wrote nothing leaves no folder
            path.parent.rmdir()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise SweepInterrupted in the main thread (once: a second signal
    during the clean stop is ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        raise SweepInterrupted(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _clean_leftovers(executions: list[Execution]) -> None:
    """A sweep killed outright (SIGKILL, power) leaves its notebooks' hidden work files; with
    the lock held no one else writes them, and their executions run again."""
    for e in executions:
        paths.running_notebook(e.output).unlink(missing_ok=True)


def _keep_to_grid(study: str, configs: list[ExperimentConfig]) -> None:
    """Records of runs the params file no longer names are set aside (results.set_aside)."""
    out, back = results.set_aside(study, {c.run_key for c in configs})
    parked = paths.parked_dir(study)
    if out:
        print(f"[sweep] {out} records of runs outside this grid set aside in {parked}")
    if back:
        print(f"[sweep] {back} records brought back from {parked}: not run again")


def summarize(outcomes: list[Outcome], out: Callable[[str], None] = print) -> None:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    line = f"[sweep] {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
    for status in ("cancelled", "interrupted", "not started"):
        n = sum(o.status == status for o in outcomes)
        line += f", {n} {status}" if n else ""
    out(line)
    for o in outcomes:
        if o.status in ("failed", "cancelled"):
            out(f"[sweep]   {o.status.upper()} {o.key}: {o.error}")


def _report_stop(
    stopped: SweepInterrupted, study: str, configs: list[ExperimentConfig], argv: list[str]
) -> int:
    """What finished, and the command that resumes; exit status 128 + the signal number."""
    name = signal.Signals(stopped.signum).name
    print(f"[sweep] stopped by {name}", flush=True)
    if stopped.outcomes:
        summarize(stopped.outcomes)
    written = sum(results.has_record(c.study, c.run_key) for c in configs)
    print(f"[sweep] {written} of {len(configs)} runs of {study!r} have their record")
    print(f"[sweep] resume with: {shlex.join(['python', '-m', 'lib.sweep', *argv])}", flush=True)
    return 128 + stopped.signum


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    from lib.study.slurm import parse_args as slurm_args
    from lib.study.slurm import parser as slurm_parser

    parser = argparse.ArgumentParser(
        prog="python -m lib.sweep",
        description=__doc__,
        formatter_class=HelpFormatter,
        epilog="flags of --backend slurm:\n" + slurm_parser().format_help(),
    )
    parser.add_argument("params", help="YAML grid, e.g. params/mini.yaml")
    parser.add_argument(
        "--backend",
        choices=("local", "slurm"),
        default="local",
        help="where the notebooks run (default: local)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="local: notebooks executed at once (default 1)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate and list the executions, run nothing"
    )
    parser.add_argument("--no-report", action="store_true", help="skip the report notebook")
    accept_both_spellings(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a log file sees each line when it is printed
        sys.stdout.reconfigure(line_buffering=True)
    # The slurm backend's flags follow --backend slurm (its own parser checks them); any
    # other unknown flag is an error now, before a single import of torch.
    args, backend_args = parser.parse_known_args(argv)
    if args.backend == "local" and backend_args:
        parser.error(
            f"unrecognized arguments: {' '.join(backend_args)} (see python -m lib.sweep --help)"
        )
    if args.backend == "slurm":
        slurm_args(backend_args)  # bad cluster flags fail before anything runs
    if args.workers < 1:
        raise ValueError(f"--workers must be an int >= 1, got {args.workers}")
    paths.pin_environment()  # the kernels write where this process reads, whatever the cwd
    from lib.study.checks import missing_files, validate

    params = load_params(args.params)
    try:
        configs = expand_grid(params)  # validates every run before anything starts
        check_pretrain(params)
        # n-shots vs class sizes (labels only); checkpoint files are checked after pretrain
        validate(configs, sources=False)
    except FileNotFoundError as error:  # a dataset missing here: fatal unless only listing
        if not args.dry_run:
            raise
        print(f"[sweep] n-shots not checked: {str(error).splitlines()[0]}", flush=True)
    except ValueError as error:
        raise ValueError(f"{args.params}: {error}") from None
    results.read_records(params["study"])  # a stray or damaged record is named now
    results.check_grid_records(configs)  # a record present is a run done: it must be that run
    executions = plan(configs)
    todo = [e for e in executions if not e.done]
    print(
        f"[sweep] {params['study']}: {len(configs)} runs in {len(executions)} notebooks, "
        f"{len(todo)} to execute",
        flush=True,
    )
    if params.get("tickets"):  # shipped tickets: intact (sha256 as in the manifest) or refused
        from lib.study.tickets import verify

        manifest = verify(params["tickets"], seeds=[c.source_seed for c in configs])
        print(f"[sweep] {manifest['version']}: tickets match the manifest")
    if args.dry_run:
        dry_run(params, configs, executions, args.workers, missing_files)
        return 0
    with _stop_on_signals():
        try:
            with study_lock(params["study"], argv):
                _clean_leftovers(executions)
                _keep_to_grid(params["study"], configs)
                return _run(params, configs, executions, args, backend_args)
        except SweepInterrupted as stopped:
            if args.backend == "local":  # Slurm tasks keep running (lib.study.slurm says so)
                stop_kernels()  # a stage's kernel (pretrain, report) may still run
            return _report_stop(stopped, params["study"], configs, argv)


def dry_run(
    params: dict[str, Any],
    configs: list[ExperimentConfig],
    executions: list[Execution],
    workers: int,
    missing_files: Callable[[ExperimentConfig], list[Path]],
) -> None:
    """What a sweep would do: the pretrain stage, every execution and its runs, the missing
    source files, and an estimated time (a prior cost model: lib.study.console)."""
    # Tickets may come from the pretrain stage, weights from a download: only a warning.
    missing = sorted({path for cfg in configs for path in missing_files(cfg)})
    settings = params.get("pretrain")
    if settings and not pretrain_stamp(params).fresh:
        print(
            f"  todo  pretrain: source model + {pretrain_levels(settings)} IMP levels into "
            f"{pretrain_folder(settings)} (finished levels are kept; estimated "
            f"{console.duration(console.pretrain_prior_seconds(settings))})"
        )
    elif settings:
        print("  done  pretrain (unchanged since it ran)")
    if missing:
        listed = "".join(f"\n  {path}" for path in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        made = " (the pretrain stage makes them)" if settings else ""
        print(f"[sweep] warning: {len(missing)} source file(s) missing{made}:{listed}{more}")
    for e in executions:
        print(f"  {'done' if e.done else 'todo'}  {e.key}  ({len(e.configs)} runs)")
        for cfg in e.configs:
            print(f"      {cfg.run_key}")
    estimate = console.Estimate(executions, workers)
    pretrain_s = 0.0
    if settings and not pretrain_stamp(params).fresh:
        pretrain_s = console.pretrain_prior_seconds(settings)
    print(
        f"[sweep] dry run: {len(configs)} runs valid; estimated time with --workers {workers}: "
        f"{console.duration(pretrain_s + estimate.total_prior())} (a prior cost model; the "
        "running sweep's ETA uses measured rates)",
        flush=True,
    )


def _run(
    params: dict[str, Any],
    configs: list[ExperimentConfig],
    executions: list[Execution],
    args: argparse.Namespace,
    backend_args: list[str],
) -> int:
    """Pretrain, the transfer notebooks, results.csv and the report (the lock is held)."""
    from lib.study.checks import check_files

    start = time.perf_counter()
    pretrain(params)
    for cfg in configs:  # after pretraining, every checkpoint must exist before any run
        check_files(cfg)
    if args.backend == "slurm":
        from lib.study.slurm import run_slurm

        outcomes = run_slurm(executions, backend_args)
    else:
        estimate = console.Estimate(executions, args.workers)
        if estimate.left:
            print(
                f"[sweep] {len(estimate.left)} notebooks, {args.workers} at a time; first "
                f"estimate {console.duration(estimate.total_prior())} (refined as they finish)",
                flush=True,
            )
        outcomes = run_local(executions, args.workers)
    summarize(outcomes)
    csv = results.write_results_csv(params["study"])
    html = None
    if params.get("report", True) and not args.no_report:
        html = report(params["study"])
    print(console.final_line(outcomes, time.perf_counter() - start, html), flush=True)
    if not html:
        print(f"[sweep] results: {csv}")
    return 1 if any(o.status in ("failed", "cancelled") for o in outcomes) else 0


def cli() -> NoReturn:
    """`python -m lib.sweep`: main() as a command."""
    errors = (ValueError, FileNotFoundError, StudyLocked, UnwritableOutput, NotebookFailed)
    run_main(main, "python -m lib.sweep", errors)


if __name__ == "__main__":
    cli()
