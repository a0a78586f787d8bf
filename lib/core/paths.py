"""Names and places of a study's files: one rule for every name a user gives, one root.

    from lib.core.paths import check_name, study_dir
    study_dir("mini")        # <outputs root>/mini
    check_name("../x")       # ValueError: study '../x' is not a valid name: use letters, ...

A study name (params `study:`, the CLI's --run_name, papermill's `-p study`) becomes a
folder under the outputs root, so it may not hold a path: letters, digits and `-_.`, not
starting with '.', and not a folder the tree itself keeps beside the studies (RESERVED:
`make clean` deletes outputs/cache and outputs/compare, datasets live in outputs/data). A
path in a params file that names where outputs go (the `pretrain:` section's `out_dir`)
must resolve to a place under the outputs root. Places typed on the command line or in the
environment ($SPARSE_VP_OUTPUTS, the CLI's --results_path, the Slurm backend's
--slurm-folder) are the user's own choice and are not confined.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from lib.core.utils import env_value, outputs_dir

OUTPUTS_ENV = "SPARSE_VP_OUTPUTS"
DATA_ENV = "SPARSE_VP_DATA"
NAME_RULE = "letters, digits and - _ . only, not starting with '.' (no path separators)"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
LOCK_NAME = "sweep.lock"
# Folders of the outputs root that are not studies: a study of that name would share them
# (`make clean` removes cache/ and compare/; data/ holds the datasets). Compared ignoring case,
# as a case-insensitive file system does.
RESERVED = ("cache", "checkpoints", "compare", "data", "features", "tickets")


def check_name(value: object, what: str = "study") -> str:
    """`value` if it is a valid file or folder name (NAME_RULE), else a ValueError naming it;
    a study name may also not be one of RESERVED."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ValueError(f"{what} {shown} is not a valid name: use {NAME_RULE}")
    if what == "study" and value.lower() in RESERVED:
        raise ValueError(
            f"{what} {value!r} is reserved: outputs/{value.lower()} holds the tree's own files; "
            f"choose another name (reserved: {', '.join(RESERVED)})"
        )
    return value


def outputs_root() -> Path:
    """The outputs root as an absolute path ($SPARSE_VP_OUTPUTS or <project>/outputs)."""
    return Path(os.path.abspath(outputs_dir()))


def pin_environment() -> None:
    """Make a relative $SPARSE_VP_OUTPUTS / $SPARSE_VP_DATA absolute, once, in this process.

    Kernels inherit the environment but start in the project root: a relative value would
    mean one folder to this process and another to the notebooks it executes.
    """
    for name in (OUTPUTS_ENV, DATA_ENV):
        value = env_value(name)
        if value is None:  # empty means unset, for this process and every kernel it starts
            os.environ.pop(name, None)
        elif not os.path.isabs(os.path.expanduser(value)):
            os.environ[name] = os.path.abspath(os.path.expanduser(value))


def confined(path: str | Path, what: str) -> Path:
    """`path` if it resolves (symlinks and '..' followed) to a place under the outputs root."""
    root = outputs_root().resolve()
    resolved = Path(path).expanduser().resolve()
    if resolved != root and root not in resolved.parents:
        raise ValueError(
            f"{what} {str(path)!r} resolves to {resolved}, outside the outputs root {root}; "
            f"choose a folder under it (or set ${OUTPUTS_ENV})"
        )
    return Path(path)


def check_writable(path: str | Path, what: str) -> Path:
    """`path` if it is a folder, or can become one, that this process can write in; else a
    ValueError naming it. Nothing is left behind (a probe folder is made and removed)."""
    path = Path(path).expanduser()
    place = next(p for p in (path, *path.absolute().parents) if p.exists() or p.is_symlink())
    try:
        if not place.is_dir():
            raise NotADirectoryError(f"{place} is not a folder")
        os.rmdir(tempfile.mkdtemp(dir=place, prefix=".probe-"))
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"{what} {str(path)!r}: cannot write there ({reason})") from None
    return path


def study_dir(study: str) -> Path:
    """<outputs root>/<study>; the name is checked, so the folder is always under the root."""
    return outputs_root() / check_name(study)


def runs_dir(study: str) -> Path:
    return study_dir(study) / "runs"


def records_dir(study: str) -> Path:
    return study_dir(study) / "records"


def parked_dir(study: str) -> Path:
    """Records of runs the study's params file no longer names (lib.study.results.set_aside)."""
    return study_dir(study) / "parked"


def record_path(study: str, run_key: str) -> Path:
    return records_dir(study) / f"{check_name(run_key, 'run key')}.json"


def run_notebook(study: str, key: str) -> Path:
    """Executed transfer notebook of one sweep execution."""
    return runs_dir(study) / f"{check_name(key, 'execution key')}.ipynb"


def running_notebook(output: Path) -> Path:
    """Where papermill writes `output` while it runs (renamed to `output` when it ends)."""
    return output.with_name(f".{output.stem}.running.ipynb")


def failed_notebook(output: Path) -> Path:
    return output.with_name(f"{output.stem}.failed.ipynb")


def lock_path(study: str) -> Path:
    """The lock file a sweep of `study` holds while it runs (lib.study.sweep.study_lock)."""
    return study_dir(study) / LOCK_NAME


def artifacts_path(study: str, run_key: str) -> Path:
    """Test logits, labels and the learned prompt of one run."""
    return study_dir(study) / "artifacts" / f"{check_name(run_key, 'run key')}.pt"


def feature_cache(dataset: str, split: str, digest: str) -> Path:
    """One cached feature file of the LP feature cache (lib.study.features)."""
    return outputs_root() / "cache" / "features" / f"{dataset}-{split}-{digest}.pt"
