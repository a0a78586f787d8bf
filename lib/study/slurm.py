"""Run a sweep's notebook executions as one Slurm array job, through submitit.

    python -m lib.sweep params/paper.yaml --backend slurm --partition gpu --time 240
    python -m lib.sweep params/smoke.yaml --backend slurm --executor local  # no cluster needed

Each array task runs a chunk of executions with papermill
(lib.study.executions.run_execution), so the records land exactly where the local backend
puts them. Executions whose records exist are
not submitted: re-submitting after a crash or a timeout runs only what is missing.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lib.core.cli import accept_both_spellings
from lib.core.utils import env_value, outputs_dir, progress, project_root
from lib.study import results
from lib.study.executions import Outcome

if TYPE_CHECKING:
    import submitit

    from lib.study.executions import Execution

EXECUTORS = ("slurm", "local")
# How often to ask for job states: sacct is shared by the whole cluster, a local process is not.
POLL_SECONDS = {"slurm": 30.0, "local": 0.5}
# The tasks find the data and write their records where this process would.
FORWARDED_ENV = ("SPARSE_VP_OUTPUTS", "SPARSE_VP_DATA")


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
    a("--gpus-per-task", type=_count(0), default=1, help="GPUs per array task (default 1)")
    a("--cpus-per-task", type=_count(1), default=8, help="CPU cores per array task (default 8)")
    a("--time", type=_count(1), default=240, help="time limit of one task in minutes (default 240)")
    a("--mem-gb", type=float, default=32.0, help="memory per task in GB (default 32)")
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
    a(
        "--executor",
        choices=EXECUTORS,
        default="slurm",
        help="local = submitit's LocalExecutor: the same code path on this machine, for "
        "tests and debugging (all tasks start at once, at most --array-parallelism)",
    )
    return accept_both_spellings(p)


def parse_args(backend_args: list[str]) -> argparse.Namespace:
    """The backend flags, checked; without Slurm here only `--executor local` can run."""
    p = parser()
    args = p.parse_args(backend_args)
    if args.executor == "slurm" and shutil.which("srun") is None:
        p.error(
            "no Slurm on this machine (srun not found): submit from the cluster's login "
            "node, or pass --executor local to run the same code path here"
        )
    return args


def chunks(executions: list[Execution], size: int) -> list[list[Execution]]:
    return [executions[i : i + size] for i in range(0, len(executions), size)]


def run_chunk(executions: list[Execution], threads: int, env: dict[str, str]) -> list[Outcome]:
    """One array task: the executions of its chunk, one after the other."""
    os.environ.update(env)  # the papermill kernels inherit it
    os.chdir(project_root())  # relative paths in params mean the project root, as locally
    from lib.study.executions import run_execution

    return [run_execution(e, threads) for e in executions]


def make_executor(args: argparse.Namespace, study: str) -> submitit.AutoExecutor:
    import submitit

    folder = args.slurm_folder or results.study_dir(study) / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=args.executor)
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
    )
    return executor


def _task_error(job: submitit.Job, error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1][:300] if lines else type(error).__name__
    return f"task {job.job_id} failed ({type(error).__name__}): {last}; log {job.paths.stderr}"


def collect(
    jobs: list[submitit.Job], parts: list[list[Execution]], poll_seconds: float
) -> list[Outcome]:
    """Wait for the tasks (progress bar) and return one Outcome per execution.

    A task that died (timeout, node failure, scancel) fails the executions of its chunk that
    have no records; those it finished before dying count as done.
    """
    from submitit.helpers import as_completed

    part_of = {job.job_id: part for job, part in zip(jobs, parts, strict=True)}
    outcomes: dict[str, Outcome] = {}
    finished = as_completed(jobs, poll_frequency=poll_seconds)
    for job in progress(finished, total=len(jobs), desc="slurm tasks", unit="task"):
        try:
            outcomes.update((o.key, o) for o in job.result())
        except Exception as error:  # noqa: BLE001 - report it, keep collecting the others
            message = _task_error(job, error)
            for e in part_of[job.job_id]:
                outcomes[e.key] = (
                    Outcome(e.key, "done") if e.done else Outcome(e.key, "failed", error=message)
                )
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
        print(
            f"[slurm] {len(todo)} notebooks in {len(jobs)} {args.executor} tasks, job "
            f"{jobs[0].job_id.split('_')[0]}; logs in {jobs[0].paths.folder}",
            flush=True,
        )
        try:
            outcomes.update((o.key, o) for o in collect(jobs, parts, POLL_SECONDS[args.executor]))
        except KeyboardInterrupt:
            print(
                "[slurm] stopped waiting; the tasks keep running. Run the same command again "
                "later: finished runs are skipped.",
                flush=True,
            )
            raise
    return [outcomes[e.key] for e in executions]
