"""Expand a params grid into runs and execute the notebooks headlessly with papermill.

    python -m lib.sweep params/mini.yaml                 # pretrain (cached), runs, report
    python -m lib.sweep params/paper.yaml --backend slurm --partition gpu --time 240

The whole grid is validated before the first job starts. Runs whose record exists are
skipped, so an interrupted sweep resumes where it stopped; a failing run does not stop
the others and leaves no record.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from lib import results
from lib.config import METHODS, ExperimentConfig
from lib.experiment import check_files, missing_files, validate
from lib.utils import atomic_write_json, atomic_write_text, progress, project_root

NOTEBOOKS = project_root() / "notebooks"
KERNEL = "sparse-vp"
TOP_LEVEL_KEYS = (
    "study",
    "description",
    "pretrain",
    "defaults",
    "method_defaults",
    "grid",
    "report",
)


# ---------------------------------------------------------------- params files


def load_params(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} not found")
    params = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(params) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"choose from: {', '.join(TOP_LEVEL_KEYS)}"
        )
    if "study" not in params or "grid" not in params:
        raise ValueError(f"{path}: needs 'study' and 'grid'")
    return params


def _section(where: str, section: Any, allowed: set[str]) -> dict[str, Any]:
    """A mapping of the params file whose keys must be `allowed` (named in the error)."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError(f"{where} must be a mapping of parameter: value(s), got {section!r}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
            f"choose from: {', '.join(sorted(allowed))}"
        )
    return section


def expand_grid(params: dict[str, Any]) -> list[ExperimentConfig]:
    """Every run of the study, validated; duplicates (same run key) appear once."""
    known = {f.name for f in fields(ExperimentConfig)}
    defaults = {**_section("defaults", params.get("defaults"), known), "study": params["study"]}
    # e.g. {lp: {epochs: 50}, vp: {epochs: 4}}: LP on cached features affords more epochs
    per_method = _section("method_defaults", params.get("method_defaults"), set(METHODS))
    for method, section in per_method.items():
        _section(f"method_defaults.{method}", section, known)
    grids = params["grid"] if isinstance(params["grid"], list) else [params["grid"]]
    configs: dict[str, ExperimentConfig] = {}
    for i, grid in enumerate(grids):
        axes = {
            k: v if isinstance(v, list) else [v]
            for k, v in _section(f"grid entry {i}", grid, known).items()
        }
        empty = [k for k, v in axes.items() if not v]
        if empty:
            raise ValueError(f"grid entry {i}: no values for {', '.join(map(repr, empty))}")
        for values in itertools.product(*axes.values()):
            run = dict(zip(axes, values, strict=True))
            method = run.get("method", defaults.get("method", "vp"))
            try:
                cfg = ExperimentConfig.from_dict(
                    {**defaults, **(per_method.get(method) or {}), **run}
                )
            except ValueError as error:
                raise ValueError(f"grid entry {i}: {error}") from None
            configs.setdefault(cfg.run_key, cfg)
    return list(configs.values())


# ---------------------------------------------------------------- executions


@dataclass
class Execution:
    """One papermill execution of notebooks/transfer.ipynb: configs over n-shots x seeds."""

    key: str
    params: dict[str, Any]
    configs: list[ExperimentConfig] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return all(results.has_record(c.study, c.run_key) for c in self.configs)


def plan(configs: list[ExperimentConfig]) -> list[Execution]:
    """Group configs that differ only in n-shot and seed into one execution.

    One execution pays the kernel start and imports (~4 s here) once, and shares the data,
    the source model and the LP feature cache between its runs.
    """
    groups: dict[str, list[ExperimentConfig]] = {}
    for cfg in configs:
        shared = {k: v for k, v in cfg.to_dict().items() if k not in ("n_shot", "seed")}
        groups.setdefault(json.dumps(shared, sort_keys=True, default=str), []).append(cfg)
    executions = []
    for shared_json, members in groups.items():
        shared = json.loads(shared_json)
        shots = sorted({c.n_shot for c in members})
        seeds = sorted({c.seed for c in members})
        # Grids are products; if a group is not, split it by n-shot.
        parts = (
            [(shots, seeds)]
            if len(members) == len(shots) * len(seeds)
            else [([n], sorted(c.seed for c in members if c.n_shot == n)) for n in shots]
        )
        for n_shots, part_seeds in parts:
            params = {**shared, "n_shots": n_shots, "seeds": part_seeds}
            digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
            first = members[0]
            name = first.run_key.rsplit("-", 3)[0]  # dataset-network-method
            executions.append(
                Execution(
                    key=f"{name}-{digest}",
                    params=params,
                    configs=[c for c in members if c.n_shot in n_shots and c.seed in part_seeds],
                )
            )
    return executions


@dataclass
class Outcome:
    key: str
    status: str  # done | skipped | failed
    seconds: float = 0.0
    error: str = ""


def execute_notebook(name: str, output: Path, parameters: dict[str, Any]) -> None:
    """papermill into a temporary file, renamed on success; a failure keeps *.failed.ipynb."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.running.ipynb")
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS / name),
            str(tmp),
            parameters=parameters,
            kernel_name=KERNEL,
            cwd=str(project_root()),
            progress_bar=False,
            log_output=False,
        )
    except BaseException:
        if tmp.exists():
            os.replace(tmp, output.with_name(f"{output.stem}.failed.ipynb"))
        raise
    os.replace(tmp, output)
    output.with_name(f"{output.stem}.failed.ipynb").unlink(missing_ok=True)


def _describe(error: BaseException) -> str:
    cell = getattr(error, "exec_count", None)
    ename, evalue = getattr(error, "ename", type(error).__name__), getattr(error, "evalue", error)
    where = f"cell {cell}: " if cell is not None else ""
    return f"{where}{ename}: {str(evalue).splitlines()[0] if str(evalue) else ''}"


def run_execution(execution: Execution, threads: int = 0) -> Outcome:
    if execution.done:
        return Outcome(execution.key, "skipped")
    start = time.perf_counter()
    study = execution.configs[0].study
    output = results.study_dir(study) / "runs" / f"{execution.key}.ipynb"
    try:
        execute_notebook("transfer.ipynb", output, {**execution.params, "threads": threads})
    except Exception as error:  # noqa: BLE001 - one failing run must not stop the sweep
        return Outcome(execution.key, "failed", time.perf_counter() - start, _describe(error))
    return Outcome(execution.key, "done", time.perf_counter() - start)


def run_local(executions: list[Execution], workers: int = 1) -> list[Outcome]:
    """Execute on this machine; `workers` notebooks at a time share the CPU cores.

    VP notebooks (the long ones) go first, so the last in flight are short LP ones and no
    core idles at the end while one long notebook runs alone on its share of threads.
    """
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
    ordered = sorted(executions, key=lambda e: e.params.get("method") != "vp")
    bar = progress(range(len(executions)), desc="runs", unit="notebook")
    outcomes = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for outcome in pool.map(lambda e: run_execution(e, threads), ordered):
            outcomes.append(outcome)
            next(bar, None)
    return outcomes


# ---------------------------------------------------------------- stages


class Stamp:
    """Remembers the inputs a stage last ran with, so re-running it unchanged does nothing."""

    def __init__(self, study: str, name: str, inputs: Any) -> None:
        self.path = results.study_dir(study) / ".stamps" / f"{name}.json"
        self.digest = hashlib.sha1(
            json.dumps(inputs, sort_keys=True, default=str).encode()
        ).hexdigest()

    @property
    def fresh(self) -> bool:
        return self.path.is_file() and json.loads(self.path.read_text())["digest"] == self.digest

    def write(self) -> None:
        atomic_write_json(self.path, {"digest": self.digest})


def pretrain(params: dict[str, Any]) -> None:
    """Source model and tickets (the notebook caches everything it trains)."""
    study, settings = params["study"], params.get("pretrain")
    stamp = Stamp(study, "pretrain", settings)
    if not settings or stamp.fresh:
        return
    print(f"[sweep] pretraining the source model and tickets ({study})", flush=True)
    execute_notebook("pretrain_source.ipynb", results.study_dir(study) / "pretrain.ipynb", settings)
    stamp.write()


def report(study: str) -> None:
    """Execute the report notebook over all records and export it to HTML."""
    records = sorted((results.study_dir(study) / "records").glob("*.json"))
    stamp = Stamp(study, "report", [p.name for p in records])
    if not records or stamp.fresh:
        return
    print(f"[sweep] report over {len(records)} records", flush=True)
    output = results.study_dir(study) / "report.ipynb"
    execute_notebook("report.ipynb", output, {"study": study})
    export_html(output)
    stamp.write()


def export_html(notebook: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    return atomic_write_text(notebook.with_suffix(".html"), body)


def summarize(outcomes: list[Outcome], out: Callable[[str], None] = print) -> None:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    out(f"[sweep] {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    for o in outcomes:
        if o.status == "failed":
            out(f"[sweep]   FAILED {o.key}: {o.error}")


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    from lib.slurm import parse_args as slurm_args
    from lib.slurm import parser as slurm_parser

    parser = argparse.ArgumentParser(
        prog="python -m lib.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    args, backend_args = parser.parse_known_args(argv)
    if args.backend == "slurm":
        slurm_args(backend_args)  # bad cluster flags fail before anything runs

    params = load_params(args.params)
    configs = expand_grid(params)  # validates every run before anything starts
    try:  # n-shots vs class sizes (labels only); checkpoint files are checked after pretrain
        validate(configs, sources=False)
    except FileNotFoundError as error:  # a dataset missing here: fatal unless only listing
        if not args.dry_run:
            raise
        print(f"[sweep] n-shots not checked: {str(error).splitlines()[0]}", flush=True)
    executions = plan(configs)
    todo = [e for e in executions if not e.done]
    print(
        f"[sweep] {params['study']}: {len(configs)} runs in {len(executions)} notebooks, "
        f"{len(todo)} to execute",
        flush=True,
    )
    if args.dry_run:
        # Tickets may come from the pretrain stage, weights from a download: only a warning.
        missing = sorted({path for cfg in configs for path in missing_files(cfg)})
        if missing:
            listed = "".join(f"\n  {path}" for path in missing[:20])
            more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
            print(f"[sweep] warning: {len(missing)} source file(s) missing:{listed}{more}")
        for e in executions:
            print(f"  {'done' if e.done else 'todo'}  {e.key}  ({len(e.configs)} runs)")
            for cfg in e.configs:
                print(f"      {cfg.run_key}")
        print(f"[sweep] dry run: {len(configs)} runs valid", flush=True)
        return 0
    pretrain(params)
    for cfg in configs:  # after pretraining, every checkpoint must exist before any run
        check_files(cfg)
    if args.backend == "slurm":
        from lib.slurm import run_slurm

        outcomes = run_slurm(executions, backend_args)
    else:
        if backend_args:
            parser.error(f"unrecognized arguments: {' '.join(backend_args)}")
        outcomes = run_local(executions, args.workers)
    summarize(outcomes)
    results.write_results_csv(params["study"])
    if params.get("report", True) and not args.no_report:
        report(params["study"])
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as error:  # bad params or files: no traceback
        print(f"python -m lib.sweep: error: {error}", file=sys.stderr)
        sys.exit(2)
