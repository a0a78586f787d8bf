"""Run a sweep's notebook executions as one Slurm array job, through submitit.

    python -m lib.sweep params/paper.yaml --backend slurm --partition gpu --time 240
    python -m lib.sweep params/smoke.yaml --backend slurm      # a CPU-only partition: no flags
    python -m lib.sweep params/smoke.yaml --backend slurm --executor local  # no cluster needed

Each array task runs a chunk of executions with papermill
(lib.study.executions.run_execution), so the records land exactly where the local backend
puts them. Executions whose records exist are not submitted: re-submitting after a crash,
a cancellation or a timeout runs only what is missing. The flags are checked against the
partition (sinfo, lib.study.cluster) before anything is submitted; a task near its time
limit is requeued with the executions of its chunk that have no records (submitit's
checkpointing, at most MAX_REQUEUES times); a task pending on a reason that never clears
stops the wait.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib.core.cli import accept_both_spellings
from lib.core.utils import PROGRESS_ENV, env_value, headless_kernel, outputs_dir, project_root
from lib.study import results
from lib.study.executions import Outcome

if TYPE_CHECKING:
    import submitit

    from lib.study.executions import Execution

EXECUTORS = ("slurm", "local")
# A GPU cluster's task (the paper's grid): one GPU, 8 cores to feed it, 32 GB. On a
# partition without GPUs (or --cpu-only) the CPUs and memory are capped to its largest node.
GPU_TASK = {"gpus_per_task": 1, "cpus_per_task": 8, "mem_gb": 32.0}
# How often to ask for task states: squeue is shared by the whole cluster, a local process not.
POLL_SECONDS = {"slurm": 30.0, "local": 0.5}
# Times a task that reached its time limit is requeued with what its chunk has left.
MAX_REQUEUES = 3
# The tasks find the data and write their records where this process would.
FORWARDED_ENV = ("SPARSE_VP_OUTPUTS", "SPARSE_VP_DATA")
# Slurm states of a task that was cancelled (squeue: CANCELLED; sacct: "CANCELLED by 0").
CANCELLED = "CANCELLED"


def _count(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    """Flags of the slurm backend (given after `python -m lib.sweep X.yaml --backend slurm`)."""
    p = argparse.ArgumentParser(prog="python -m lib.sweep PARAMS --backend slurm")
    a = p.add_argument
    a("--partition", default=None, help="Slurm partition (default: the cluster's)")
    a(
        "--gpus-per-task",
        type=_count(0),
        default=None,
        help="GPUs per array task (default 1; 0 on a partition without GPUs)",
    )
    a("--cpu-only", action="store_true", help="no GPUs (the default on a partition without)")
    a(
        "--cpus-per-task",
        type=_count(1),
        default=None,
        help="CPU cores per array task (default 8; without GPUs at most the largest node's)",
    )
    a("--time", type=_count(1), default=240, help="time limit of one task in minutes (default 240)")
    a(
        "--mem-gb",
        type=float,
        default=None,
        help="memory per task in GB (default 32; without GPUs at most the largest node's)",
    )
    a(
        "--array-parallelism",
        type=_count(1),
        default=32,
        help="array tasks running at once (default 32)",
    )
    a(
        "--chunk-size",
        type=_count(1),
        default=1,
        help="notebook executions per array task, run one after the other (default 1)",
    )
    a(
        "--slurm-folder",
        default=None,
        help="submitit logs and pickles (default outputs/<study>/slurm/%%j)",
    )
    a("--poll", type=float, default=None, help="seconds between task-state queries (default 30)")
    a(
        "--executor",
        choices=EXECUTORS,
        default="slurm",
        help="local = submitit's LocalExecutor: the same code path on this machine, for "
        "tests and debugging (all tasks start at once, at most --array-parallelism)",
    )
    return accept_both_spellings(p)


def parse_args(backend_args: list[str]) -> argparse.Namespace:
    """The backend flags, checked, defaults resolved; on Slurm checked against the partition
    (lib.study.cluster.ClusterRefusal, a ValueError: one line, exit status 2)."""
    p = parser()
    args = p.parse_args(backend_args)
    if args.cpu_only and args.gpus_per_task:
        p.error(f"--cpu-only and --gpus-per-task {args.gpus_per_task}: choose one")
    if args.executor == "slurm" and shutil.which("srun") is None:
        p.error(
            "no Slurm on this machine (srun not found): submit from the cluster's login "
            "node, or pass --executor local to run the same code path here"
        )
    offer = None
    if args.executor == "slurm":
        from lib.study import cluster

        offer = cluster.partition(args.partition)
        args.partition = offer.name
    defaults = dict(GPU_TASK)
    if args.cpu_only or (offer is not None and offer.gpus == 0):
        defaults["gpus_per_task"] = 0
        if offer is not None:
            defaults["cpus_per_task"] = min(defaults["cpus_per_task"], offer.cpus)
            defaults["mem_gb"] = min(defaults["mem_gb"], offer.mem_gb)
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if offer is not None:
        from lib.study import cluster

        cluster.check_request(offer, args.gpus_per_task, args.cpus_per_task, args.mem_gb, args.time)
    args.poll = args.poll or POLL_SECONDS[args.executor]
    return args


def chunks(executions: list[Execution], size: int) -> list[list[Execution]]:
    return [executions[i : i + size] for i in range(0, len(executions), size)]


class RunChunk:
    """One array task: the executions of its chunk, one after the other.

    Near the time limit submitit calls checkpoint(): the task is requeued with the
    executions that have no records yet. SIGTERM (scancel) ends the chunk: the notebook
    that ran is reported cancelled, the others are not started."""

    def __call__(
        self, executions: list[Execution], threads: int, env: dict[str, str]
    ) -> list[Outcome]:
        os.environ.update(env)  # the papermill kernels inherit it
        os.chdir(project_root())  # relative paths in params mean the project root, as locally
        from lib.study.executions import run_execution

        terminated: list[int] = []
        # submitit's requeue handler ends the task with SystemExit; raised inside a signal
        # handler that interrupts a weakref callback, Python ignores it and the chunk ran on.
        # Keep what the handler raised and raise it between notebooks, where it cannot be lost.
        stopping: list[BaseException] = []
        previous_term = signal.getsignal(signal.SIGTERM)
        previous_usr2 = signal.getsignal(signal.SIGUSR2)

        def note(signum: int, frame: Any) -> None:
            terminated.append(signum)
            if callable(previous_term):
                previous_term(signum, frame)

        def requeue(signum: int, frame: Any) -> None:
            try:
                if callable(previous_usr2):
                    previous_usr2(signum, frame)
            except BaseException as stop:
                stopping.append(stop)
                raise

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, note)
            signal.signal(signal.SIGUSR2, requeue)
        outcomes = []
        for e in executions:
            outcome = Outcome(e.key, "cancelled") if terminated else run_execution(e, threads)
            if stopping:  # requeued (or refused a requeue): submitit reports it, not this chunk
                raise stopping[0]
            if terminated and outcome.status == "failed":  # its kernel was killed with the task
                outcome = Outcome(e.key, "cancelled", outcome.seconds, "stopped by SIGTERM")
            outcomes.append(outcome)
        return outcomes

    def checkpoint(self, executions: list[Execution], threads: int, env: dict[str, str]) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, [e for e in executions if not e.done], threads, env)


run_chunk = RunChunk()  # submitit requeues a callable with a checkpoint() method


def make_executor(args: argparse.Namespace, study: str) -> submitit.AutoExecutor:
    import submitit

    folder = args.slurm_folder or results.study_dir(study) / "slurm" / "%j"
    executor = submitit.AutoExecutor(
        folder=folder, cluster=args.executor, slurm_max_num_timeout=MAX_REQUEUES
    )
    # A Slurm task starts where sbatch ran; `cd` first so `python -m` finds lib/ (also when
    # the package is not installed). Locally the environment.yml install (-e .) finds it,
    # and a setup line would wrap the task in a shell that ignores cancel().
    setup = [f"cd {shlex.quote(str(project_root()))}"]
    executor.update_parameters(
        name=f"sparse-vp-{study}",
        timeout_min=args.time,  # also LocalExecutor's limit, whose default is 2 minutes
        mem_gb=args.mem_gb,
        cpus_per_task=args.cpus_per_task,
        gpus_per_node=args.gpus_per_task,  # one task per node: per task = per node
        tasks_per_node=1,
        nodes=1,
        slurm_partition=args.partition,
        slurm_array_parallelism=args.array_parallelism,
        slurm_setup=setup,
        # The checkpoint signal comes this long before the limit (Slurm checks every 30 s);
        # a short limit keeps most of its time for notebooks.
        slurm_signal_delay_s=min(90, max(30, 15 * args.time)),
    )
    return executor


def _task_error(job: submitit.Job, error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1][:300] if lines else type(error).__name__
    return f"task {job.job_id} failed ({type(error).__name__}): {last}; log {job.paths.stderr}"


def _task_outcomes(job: submitit.Job, part: list[Execution], stuck: str) -> list[Outcome]:
    """The outcomes of one finished task; executions done before it died count as done."""
    state = job.state
    by_slurm = str(state).upper().startswith(CANCELLED)
    cancelled = by_slurm and not stuck  # by someone (scancel), not by this sweep
    got: dict[str, Outcome] = {}
    message = stuck
    # A result, or the error of the task; a cancelled one without a result file has nothing
    # more to say (submitit would wait 15 s for one, per task).
    if job.paths.result_pickle.exists() or not by_slurm:
        try:
            got = {o.key: o for o in job.result()}
        except Exception as error:  # noqa: BLE001 - report it, keep collecting the others
            message = message or _task_error(job, error)
    message = message or f"task {job.job_id} never ran (state {state})"
    outcomes = []
    for e in part:
        o = got.get(e.key) or (Outcome(e.key, "done") if e.done else Outcome(e.key, "failed"))
        if o.status in ("failed", "cancelled") and cancelled:
            o = Outcome(e.key, "cancelled", o.seconds, f"cancelled by Slurm (task {job.job_id})")
        elif o.status == "failed" and not o.error:
            o.error = message
        outcomes.append(o)
    return outcomes


def _states_line(
    jobs: list[submitit.Job], watcher: Any, finished: int, total: int
) -> tuple[str, str]:
    """'1/4 tasks finished; 1 running, 2 pending (JobArrayTaskLimit)', and the first pending
    reason that never clears ('' if none)."""
    from lib.study.cluster import NEVER_CLEARS, never_clears

    states: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    stuck = ""
    for job in jobs:
        info = watcher.get_info(job.job_id, mode="cache") if watcher else {"State": "waiting"}
        state = info.get("State", "PENDING")
        states[state.lower()] += 1
        if state == "PENDING" and info.get("Reason", "None") != "None":
            reasons[info["Reason"]] += 1
            name = never_clears(info["Reason"])
            if name and not stuck:
                stuck = (
                    f"task {job.job_id} pends on {name}: {NEVER_CLEARS[name]} ({info['Reason']})"
                )
    parts = []
    for state, n in sorted(states.items()):
        why = ", ".join(reasons) if state == "pending" and reasons else ""
        parts.append(f"{n} {state}" + (f" ({why})" if why else ""))
    return f"{finished}/{total} tasks finished; " + ", ".join(parts), stuck


def collect(
    jobs: list[submitit.Job], parts: list[list[Execution]], poll_seconds: float
) -> list[Outcome]:
    """Wait for the tasks and return one Outcome per execution. A line tells how many tasks
    run and why the others pend (the scheduler's reason), when that changes; a reason that
    never clears cancels the job and ends the wait with it.

    A task that died (timeout, node failure, scancel) fails the executions of its chunk that
    have no records, cancelled ones as cancelled; those it finished count as done."""
    from tqdm import tqdm

    from lib.study.cluster import SqueueWatcher, cancel

    watcher = jobs[0].watcher if isinstance(jobs[0].watcher, SqueueWatcher) else None
    quiet = bool(env_value(PROGRESS_ENV) or env_value("CI") or headless_kernel())
    bar = tqdm(total=len(jobs), desc="slurm tasks", unit="task", disable=quiet, dynamic_ncols=True)
    part_of = {job.job_id: part for job, part in zip(jobs, parts, strict=True)}
    waiting = list(jobs)
    outcomes: dict[str, Outcome] = {}
    shown = stuck = ""
    while waiting:
        if watcher is not None:
            watcher.update()
        for job in [j for j in waiting if j.done()]:
            waiting.remove(job)
            outcomes.update((o.key, o) for o in _task_outcomes(job, part_of[job.job_id], stuck))
            bar.update(1)
        if not waiting:
            break
        line, reason = _states_line(waiting, watcher, len(jobs) - len(waiting), len(jobs))
        if reason and not stuck:
            stuck = f"{reason}; job {jobs[0].job_id.split('_')[0]} cancelled"
            print(f"[slurm] {stuck}", flush=True)
            cancel(jobs[0].job_id.split("_")[0])
        if line != shown:
            bar.set_postfix_str(line.split("; ", 1)[1])
            if quiet:
                print(f"[slurm] {line}", flush=True)
            shown = line
        time.sleep(poll_seconds)
    bar.close()
    return [outcomes[e.key] for part in parts for e in part]


def run_slurm(executions: list[Execution], backend_args: list[str]) -> list[Outcome]:
    """Submit the executions without records as one array job; wait; one Outcome each."""

    args = parse_args(backend_args)
    todo = [e for e in executions if not e.done]
    outcomes = {e.key: Outcome(e.key, "skipped") for e in executions if e.done}
    if todo:
        size = args.chunk_size
        if args.executor == "local":  # no scheduler queues the tasks: bound them by chunking
            size = max(size, math.ceil(len(todo) / args.array_parallelism))
        parts = chunks(todo, size)
        env = {k: str(Path(v).resolve()) for k in FORWARDED_ENV if (v := env_value(k))}
        env["SPARSE_VP_OUTPUTS"] = str(outputs_dir().resolve())
        executor = make_executor(args, todo[0].configs[0].study)
        jobs = executor.map_array(
            run_chunk, parts, [args.cpus_per_task] * len(parts), [env] * len(parts)
        )
        if args.executor == "slurm":  # squeue: pending reasons, and no sacct needed
            from lib.study.cluster import SqueueWatcher

            watcher = SqueueWatcher(delay_s=int(args.poll))
            for job in jobs:
                job.watcher = watcher
                watcher.register_job(job.job_id)
        resources = f"{args.cpus_per_task} CPUs, {args.mem_gb:g} GB, {args.gpus_per_task} GPUs"
        where = f" on {args.partition!r}" if args.partition else ""
        print(
            f"[slurm] {len(todo)} notebooks in {len(jobs)} {args.executor} tasks{where} "
            f"({resources}, {args.time} min each), job {jobs[0].job_id.split('_')[0]}; logs in "
            f"{jobs[0].paths.folder}",
            flush=True,
        )
        try:
            outcomes.update((o.key, o) for o in collect(jobs, parts, args.poll))
        except KeyboardInterrupt:
            print(
                "[slurm] stopped waiting; the tasks keep running. Run the same command again "
                "later: finished runs are skipped.",
                flush=True,
            )
            raise
    return [outcomes[e.key] for e in executions]
