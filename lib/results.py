"""Run records: one JSON per run, written atomically; results.csv rebuilt from them.

A record exists only when its run finished, so "resume" is "skip runs with a record".
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib import paths
from lib.utils import atomic_write_json, atomic_write_text, project_root

if TYPE_CHECKING:  # pandas loads on first use: command-line errors answer at once
    import pandas as pd

PACKAGES = ("torch", "torchvision", "numpy", "netcal", "papermill", "seaborn", "sparse-vp")


def study_dir(study: str) -> Path:
    """<outputs>/<study>; a study name that is not a plain name is refused (lib.paths)."""
    return paths.study_dir(study)


def record_path(study: str, run_key: str) -> Path:
    return paths.record_path(study, run_key)


def has_record(study: str, run_key: str) -> bool:
    return record_path(study, run_key).is_file()


def write_record(record: dict[str, Any]) -> Path:
    return atomic_write_json(record_path(record["study"], record["run_key"]), record)


def read_record(path: str | Path) -> dict[str, Any]:
    """One record; a damaged file is named (records are written atomically, so damage
    comes from outside: delete the file and the sweep re-runs that run)."""
    try:
        record = json.loads(Path(path).read_text())
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
    return ""


def read_records(study: str) -> list[dict[str, Any]]:
    folder = study_dir(study) / "records"
    return [read_record(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


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
    row["git_revision"] = record.get("provenance", {}).get("git_revision")
    return row


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


def results_frame(study: str) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([flatten(r) for r in read_records(study)])


def write_results_csv(study: str) -> Path:
    """Rebuild results.csv from the records: one row per record, never duplicated."""
    path, text = study_dir(study) / "results.csv", results_frame(study).to_csv(index=False)
    if path.is_file() and path.read_text() == text:
        return path  # unchanged: a warm re-run leaves every file as it was
    return atomic_write_text(path, text)


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


def provenance() -> dict[str, Any]:
    """Package versions, python, platform and the git revision of this checkout."""
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
        "git_revision": git_revision(),
    }
