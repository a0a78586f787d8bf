"""Small shared helpers: progress bars, atomic writes, seeding, device choice."""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from tqdm import tqdm  # text bars: tqdm.auto needs ipywidgets inside notebooks

if TYPE_CHECKING:  # torch and numpy load lazily: every command's --help answers at once
    import torch

T = TypeVar("T")

# Progress bars stay in the code; CI and tests silence them through this variable.
PROGRESS_ENV = "SPARSE_VP_NO_PROGRESS"
# Set by lib.study.sweep for the kernels papermill starts: a bar redrawn inside a headless kernel
# becomes hundreds of saved stderr outputs in the executed notebook, so there are none.
HEADLESS_ENV = "SPARSE_VP_HEADLESS"


def headless_kernel() -> bool:
    """True inside a kernel that papermill runs for lib.study.sweep (nobody watches its bars)."""
    return bool(env_value(HEADLESS_ENV)) and "ipykernel" in sys.modules


def progress(iterable: Iterable[T], **kwargs: Any) -> Iterator[T]:
    """tqdm over `iterable`, silenced when $SPARSE_VP_NO_PROGRESS or $CI is set, and inside
    a headless kernel (the sweep prints one line per finished notebook instead)."""
    disable = bool(env_value(PROGRESS_ENV) or env_value("CI") or headless_kernel())
    return iter(tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs))


class UnwritableOutput(OSError):
    """A file under the outputs root cannot be written (a folder in its place, a read-only
    mount, a full disk); the message names it. Commands print it as one line."""


@contextlib.contextmanager
def _replacing(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temporary file beside it, renamed over it
    once the block succeeds (never a partial file), removed if it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename: never a partial file."""
    with _replacing(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save through a temporary file and a rename."""
    import torch

    with _replacing(path) as f:
        torch.save(obj, f)
    return Path(path)


def set_seed(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda when present, else cpu."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def env_value(name: str) -> str | None:
    """$name, or None when it is unset, empty or blank: `SPARSE_VP_OUTPUTS=` means the default,
    never the current directory (which a kernel started in the project root reads otherwise)."""
    value = os.environ.get(name)
    return value if value and value.strip() else None


def outputs_dir() -> Path:
    """Root of all generated files, absolute; $SPARSE_VP_OUTPUTS overrides (tests use a tmp
    dir). lib.core.paths.pin_environment makes a relative value absolute for the kernels too."""
    value = env_value("SPARSE_VP_OUTPUTS")
    return Path(os.path.abspath(os.path.expanduser(value) if value else project_root() / "outputs"))


def data_root() -> Path:
    """Where datasets live; $SPARSE_VP_DATA overrides the default outputs/data."""
    value = env_value("SPARSE_VP_DATA")
    return Path(os.path.expanduser(value)) if value else outputs_dir() / "data"


def resolve_path(path: str | Path) -> Path:
    """A path from params: absolute as is; 'outputs/...' under outputs_dir() (so
    $SPARSE_VP_OUTPUTS moves checkpoints too); anything else from the project root."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    if path.parts and path.parts[0] == "outputs":
        return outputs_dir().joinpath(*path.parts[1:])
    return project_root() / path
