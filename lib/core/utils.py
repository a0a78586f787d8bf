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

from tqdm import tqdm  # text bars (a terminal); widget bars: tqdm.notebook (_widget_bar)

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


def _widget_bar() -> type[tqdm] | None:
    """tqdm's widget bar inside a Jupyter kernel that a person watches (JupyterLab), else None.

    A text bar there is a new stderr line per refresh: hundreds of lines above the results.
    """
    if "ipykernel" not in sys.modules or headless_kernel():
        return None
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or "IPKernelApp" not in shell.config:
        return None
    try:
        import ipywidgets  # noqa: F401 - tqdm.notebook falls back to text without it
        from tqdm.notebook import tqdm as widget_bar
    except ImportError:
        return None
    return widget_bar


def progress(iterable: Iterable[T], **kwargs: Any) -> Iterator[T]:
    """tqdm over `iterable`, silenced when $SPARSE_VP_NO_PROGRESS or $CI is set, and inside
    a headless kernel (the sweep prints one line per finished notebook instead).

    In a terminal a text bar; in JupyterLab one widget bar per level, updated in place: a bar
    opened while another runs is an inner level and closes when done (leave=False)."""
    disable = bool(env_value(PROGRESS_ENV) or env_value("CI") or headless_kernel())
    widget_bar = None if disable else _widget_bar()
    if widget_bar is None:
        return iter(tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs))
    if any(not bar.disable for bar in list(getattr(widget_bar, "_instances", ()))):
        kwargs["leave"] = False
    return _widget_loop(widget_bar(iterable, **kwargs))


def _widget_loop(bar: tqdm) -> Iterator[Any]:
    """The items of a widget bar's iterable, counted; a loop left early (early stopping, the
    steps to IMP's rewind point) closes its bar, where tqdm.notebook would leave it red as for
    an error."""
    finished = False
    try:
        for item in bar.iterable:
            yield item
            bar.update()
        finished = True
    finally:
        if not finished:
            bar.total, bar.leave = bar.n, False
        bar.close()


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


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """A matplotlib figure saved through a temporary file and a rename: never a partial image,
    and never written through a link planted at `path` (the rename replaces the link)."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or None)
    with _replacing(path) as f:
        fig.savefig(f, **kwargs)
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """torch.save through a temporary file and a rename."""
    import torch

    with _replacing(path) as f:
        torch.save(obj, f)
    return Path(path)


def torch_bytes(obj: Any) -> bytes:
    """The bytes atomic_torch_save writes for `obj` (torch.save to a file object), in memory."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


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
