"""Run records: one JSON per run, written atomically; results.csv rebuilt from them.

A record exists only when its run finished, so "resume" is "skip runs with a record".
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import resource
import stat
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib.core import paths
from lib.core.utils import UnwritableOutput, atomic_write_json, atomic_write_text, project_root

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn

    from lib.datasets.sampling import Splits
    from lib.study.config import ExperimentConfig
    from lib.study.run import Transfer

# The packages whose versions every record names: the stack, the calibration metrics' three
# libraries, and the extras of the CLIP / ViT arms (None where not installed).
PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "netcal",
    "uncertainty-calibration",
    "relplot",
    "papermill",
    "seaborn",
    "open-clip-torch",
    "timm",
    "sparse-vp",
)


def study_dir(study: str) -> Path:
    """<outputs>/<study>; a study name that is not a plain name is refused (lib.core.paths)."""
    return paths.study_dir(study)


def record_path(study: str, run_key: str) -> Path:
    return paths.record_path(study, run_key)


def has_record(study: str, run_key: str) -> bool:
    return record_path(study, run_key).is_file()


def write_record(record: dict[str, Any]) -> Path:
    """Write one record atomically; a record with a non-finite headline metric is refused
    (findings would drop or average it without a word)."""
    problem = _non_finite(record.get("metrics"))
    if problem:
        raise ValueError(f"run {record.get('run_key')!r}: {problem}; no record written")
    return atomic_write_json(record_path(record["study"], record["run_key"]), record)


# The metric groups every finding and comparison reads: each number in them must be finite.
HEADLINE_METRICS = ("test", "test_ts")
RECORD_LIMIT = 256 * 2**20  # bytes; a record is a few hundred kB at paper scale


def _non_finite(metrics: Any) -> str:
    """'metric test.ece is nan' for the first non-finite headline metric, '' if none."""
    if not isinstance(metrics, dict):
        return ""
    for group in HEADLINE_METRICS:
        values = metrics.get(group)
        for name, value in values.items() if isinstance(values, dict) else ():
            if isinstance(value, float) and not math.isfinite(value):
                return f"metric {group}.{name} is {value}"
    return ""


def _read_text(path: Path) -> str:
    """A record file's text: a plain file only (not a link, FIFO, device or folder), bounded."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise ValueError(
            f"{path}: not a readable record file ({error.strerror}); move it out of records/"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path}: not a regular file; move it out of records/")
        if info.st_size > RECORD_LIMIT:
            raise ValueError(f"{path}: {info.st_size} bytes, too large for a record")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(RECORD_LIMIT + 1).decode()
    finally:
        os.close(fd)


def read_record(path: str | Path) -> dict[str, Any]:
    """One record; a damaged file is named (records are written atomically, so damage
    comes from outside: delete the file and the sweep re-runs that run)."""
    try:
        record = json.loads(_read_text(Path(path)))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: corrupt record ({err}); delete it to re-run that run") from None
    problem = record_problem(record, Path(path).stem)
    if problem:
        raise ValueError(
            f"{path}: not a run record ({problem}); move it out of records/, or delete it "
            "to re-run that run"
        )
    return record


# Fields every record has, and their JSON types (what flatten and the report rely on).
RECORD_FIELDS = {"run_key": str, "study": str, "params": dict}
OPTIONAL_RECORD_FIELDS = {"metrics": dict, "timings": dict, "provenance": dict}


def record_problem(record: Any, run_key: str) -> str:
    """What makes `record` (parsed JSON of the file <run_key>.json) not a record; '' if none."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__} instead of an object"
    for name, kind in {**RECORD_FIELDS, **OPTIONAL_RECORD_FIELDS}.items():
        if name not in record:
            if name in RECORD_FIELDS:
                return f"field {name!r} missing"
        elif not isinstance(record[name], kind):
            return f"field {name!r} is a {type(record[name]).__name__}, not a {kind.__name__}"
    if record["run_key"] != run_key:
        return f"field 'run_key' is {record['run_key']!r} but the file is {run_key}.json"
    if not record.get("metrics"):
        return "field 'metrics' missing or empty"
    return _non_finite(record["metrics"])


def set_aside(study: str, grid: set[str]) -> tuple[int, int]:
    """Make records/ hold the runs of `grid` (run keys) only: a record of a run the grid no
    longer names moves to parked/, never deleted, and a parked record the grid names again
    moves back instead of running again. So the report and results.csv read what the params
    file asks for, warm or cold. Returns (records set aside, records brought back)."""
    records, parked = paths.records_dir(study), paths.parked_dir(study)
    out = [p for p in records.glob("*.json") if p.stem not in grid]
    back = [p for p in parked.glob("*.json") if p.stem in grid]
    for path, folder in [*((p, parked) for p in out), *((p, records) for p in back)]:
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(path, folder / path.name)  # a record run again meanwhile wins over its copy
    return len(out), len(back)


def read_records(study: str) -> list[dict[str, Any]]:
    """Every record of `study`; one of another study (copied in) is refused, naming it."""
    folder = paths.records_dir(study)
    records = (
        [(p, read_record(p)) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    )
    for path, record in records:
        if record["study"] != study:
            raise ValueError(
                f"{path}: a record of study {record['study']!r} in the records of {study!r}; "
                "move it out of records/"
            )
    return [record for _, record in records]


def check_grid_records(configs: list[ExperimentConfig]) -> None:
    """A record present is a run done: its params must be those of the config its file name
    (the run key) stands for, else the file was renamed or edited, and is refused by name."""
    for cfg in configs:
        path = record_path(cfg.study, cfg.run_key)
        if not path.is_file():
            continue
        params = read_record(path)["params"]
        want = cfg.identity()
        got = {k: params.get(k, v) for k, v in want.items()}
        if json.dumps(got, sort_keys=True, default=str) != json.dumps(
            want, sort_keys=True, default=str
        ):
            differ = sorted(k for k in want if got[k] != want[k])
            raise ValueError(
                f"{path}: its params are not run {cfg.run_key}'s (they differ in "
                f"{', '.join(differ[:5])}); delete it to re-run that run"
            )


class NoRecords(FileNotFoundError):
    """A study with no records yet; in a notebook its message is all it shows (one line)."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook: no traceback for this one
        return [f"{type(self).__name__}: {self}"]


def require_records(study: str) -> None:
    """NoRecords naming the command that makes them, where `study` has none."""
    if not any(paths.records_dir(study).glob("*.json")):
        made = "make study" if study == "mini" else f"python -m lib.sweep params/{study}.yaml"
        raise NoRecords(
            f"{paths.records_dir(study)} holds no records: run `{made}` first, or set `study` "
            "to a study that has them"
        )


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One tidy row: params and scalar metrics as columns (lists and dicts stay in the JSON)."""
    row: dict[str, Any] = {"run_key": record["run_key"], "study": record["study"]}
    row.update({k: v for k, v in record["params"].items() if not isinstance(v, dict | list)})
    for group in ("metrics", "timings"):
        for name, value in record.get(group, {}).items():
            if isinstance(value, dict):
                row.update({f"{name}_{k}": v for k, v in value.items() if _scalar(v)})
            elif _scalar(value):
                row[name] = value
    prov = record.get("provenance", {})
    row["cpu"] = prov.get("cpu", {}).get("model")
    row["git_revision"] = prov.get("git_revision")
    return row


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


def results_frame(study: str) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([flatten(r) for r in read_records(study)])


def write_results_csv(study: str) -> Path:
    """Rebuild results.csv from the records: one row per record, never duplicated."""
    path, text = study_dir(study) / "results.csv", results_frame(study).to_csv(index=False)
    try:
        if path.is_file() and path.read_text() == text:
            return path  # unchanged: a warm re-run leaves every file as it was
        if path.is_dir():
            raise IsADirectoryError(21, "a folder is in its place")
        return atomic_write_text(path, text)
    except OSError as error:  # a folder, a read-only mount, a full disk: records are intact
        raise UnwritableOutput(
            f"cannot write {path} ({error.strerror or error}); the records are intact: "
            "rebuild it with `python -m lib.sweep <params>` once the place is writable"
        ) from None


@functools.cache
def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project_root(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_root(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo; `platform` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_avx512() -> bool:
    """Whether the CPU has AVX-512 (training runs ~2.4x faster here than on AVX2-only CPUs)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


@functools.cache
def cpu() -> dict[str, Any]:
    """The machine a run's timings and float rounding belong to."""
    return {"model": cpu_name(), "avx512": has_avx512(), "cores": os.cpu_count()}


def provenance() -> dict[str, Any]:
    """Package versions, python, platform, CPU and the git revision of this checkout."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu(),
        "git_revision": git_revision(),
    }


# ---------------------------------------------------------------- assembling a record

# What the temperature is fitted on, per selection: without a validation set, "last" uses
# the training sample (the only labels it has) and "test" the test set (optimistic, as the
# epoch it picks there).
TEMPERATURE_SET = {"val": "val", "last": "train", "test": "test"}
ARTIFACT_LOGITS_LIMIT = 2_000_000  # test logits kept beside the record up to this many values


def make_record(
    cfg: ExperimentConfig,
    splits: Splits,
    labels: torch.Tensor,
    run: Transfer,
    source: nn.Module,
    device: torch.device,
    timings: dict[str, float],
    started: float,
) -> dict[str, Any]:
    """The record of one finished run (params, metrics, reliability, mapping, history, label
    use, timings, versions); writes its artifacts (test logits, prompt) beside. `timings`:
    the group's shared ones; `started`: time.perf_counter() when this run began."""
    from lib.adapt.train import CONVERGED_GAIN
    from lib.core.utils import atomic_torch_save
    from lib.datasets.registry import get_spec
    from lib.metrics.calibration import (
        RECORD_RESAMPLES,
        calibration_metrics,
        confidence_analysis,
        fit_temperature,
        reliability_data,
    )
    from lib.models.backbone import sparsity
    from lib.models.clip import recipe
    from lib.models.sources import source_kind

    fit, test_logits, test_labels = run.fit, run.test_logits, run.test_labels
    temperature = fit_temperature(run.fit_logits, run.fit_labels)
    probs = test_logits.softmax(1)
    seed_batch = cfg.seed_test_batch_size  # the paper's legacy ECE sums per test batch
    used = labels_used(cfg, splits, labels, get_spec(cfg.dataset).num_classes)
    metrics = {
        "test": calibration_metrics(
            test_logits, test_labels, cfg.n_bins, seed_batch, bootstrap=RECORD_RESAMPLES
        ),
        "test_ts": calibration_metrics(
            test_logits / temperature,
            test_labels,
            cfg.n_bins,
            seed_batch,
            bootstrap=RECORD_RESAMPLES,
        ),
        "val": calibration_metrics(run.fit_logits, run.fit_labels, cfg.n_bins, seed_batch)
        if cfg.selection == "val"
        else None,
        "temperature": temperature,
        "temperature_fitted_on": TEMPERATURE_SET[cfg.selection],
        "optimistic": cfg.selection == "test",
        "seed_ece_batch_size": seed_batch,
        "labels_per_class": {
            "train_min": min(used["train_per_class"]),
            "train_max": max(used["train_per_class"]),
            "val_min": min(used["val_per_class"]),
            "val_max": max(used["val_per_class"]),
        },
        "confidence": confidence_analysis(probs, test_labels),
        "best_epoch": fit.best_epoch,
        "epochs_trained": len(fit.history),
        "stopped_early": fit.stopped_early,
        "converged": fit.converged,
        "converged_criterion": f"last 25% of epochs gained < {CONVERGED_GAIN} val accuracy",
        "sparsity_measured": sparsity(source),
        "mapping_own_class_fraction": run.mapping.get("own_class_fraction"),
    }
    if source_kind(cfg).quantized:
        from lib.models.quant import weight_levels

        metrics["weight_levels"] = weight_levels(source)
    artifacts = dict(run.artifacts)
    if test_logits.numel() <= ARTIFACT_LOGITS_LIMIT:  # keep artifacts small at paper scale
        artifacts.update(test_logits=test_logits.half(), test_labels=test_labels)
    atomic_torch_save(artifacts, paths.artifacts_path(cfg.study, cfg.run_key))
    return {
        "run_key": cfg.run_key,
        "study": cfg.study,
        "params": cfg.to_dict(),
        "metrics": metrics,
        "reliability": {
            "raw": reliability_data(probs, test_labels, cfg.n_bins),
            "ts": reliability_data((test_logits / temperature).softmax(1), test_labels, cfg.n_bins),
        },
        "mapping": run.mapping,
        "history": fit.history,
        "training": recipe(cfg),  # optimizer and schedule (and the CLIP seed's recipe)
        "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(test_labels)},
        "labels": used,
        "timings": {
            **timings,
            "train_s": run.trained - started,
            "eval_s": time.perf_counter() - run.trained,
        },
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(device),
        "provenance": provenance(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def labels_used(
    cfg: ExperimentConfig, splits: Splits, labels: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    """Every label the run saw besides the test set: requested and actual per-class counts."""
    from lib.datasets.sampling import per_class_counts

    return {
        "split": cfg.split,
        "n_shot_requested": cfg.n_shot,
        "n_shot_policy": cfg.n_shot_policy,
        "selection": cfg.selection,
        "selected_on": {"val": "val", "last": None, "test": "test"}[cfg.selection],
        "optimistic": cfg.selection == "test",
        "val_shots": cfg.val_shots if cfg.n_shot != -1 and cfg.selection == "val" else None,
        "temperature_fitted_on": TEMPERATURE_SET[cfg.selection],
        "train_per_class": per_class_counts(labels, splits.train, num_classes),
        "val_per_class": per_class_counts(labels, splits.val, num_classes),
        "train_total": len(splits.train),
        "val_total": len(splits.val),
    }
