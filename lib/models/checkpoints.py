"""Reading checkpoint and mask files safely: one error type that names the file and the problem.

from lib.models.checkpoints import safe_load, unwrap
tensors = unwrap(safe_load("ticket_checkpoint.pth"), "ticket_checkpoint.pth")
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

# Wrappers and prefixes seen in published checkpoints (the paper's files use "model.").
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")
KEY_PREFIXES = ("module.", "model.")


class CheckpointError(ValueError):
    """A checkpoint or mask file that cannot be used; the message names the file and the problem."""


def few(items: list[str], n: int = 8) -> str:
    more = f" ... and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def safe_load(path: str | os.PathLike) -> Any:
    """torch.load(weights_only=True); any failure -> CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    check_crc(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = unpickling_reason(err)
        if reason.startswith("Unsupported operand"):  # garbage, or a pickle it cannot check
            raise CheckpointError(
                f"{path}: refused to load: not a file of tensors that the safe loader "
                f"(weights_only=True) reads: corrupted, or a pickle it cannot check: {reason}"
            ) from err
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain "
            f"containers, which could run code when unpickled (weights_only=True): {reason}"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable, truncated or corrupted file: {err}") from err


def unpickling_reason(err: Exception) -> str:
    """The line of torch's weights-only error that says what was refused."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].split(". Please", 1)[0] if lines else type(err).__name__


def check_crc(path: Path) -> None:
    """torch.load does not verify the zip checksums, so flipped bytes inside a tensor would
    load silently as wrong weights; check them (one read of the file)."""
    if not zipfile.is_zipfile(path):
        return  # legacy torch format: no checksums to verify
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable, truncated or corrupted file: {err}") from err
    if bad is not None:
        raise CheckpointError(f"{path}: corrupted file: checksum mismatch in entry {bad!r}")


def strip_prefixes(key: str) -> str:
    while key.startswith(KEY_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def unwrap(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: plain, or under one of STATE_DICT_KEYS."""
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            odd = [
                f"{k} ({type(v).__name__})"
                for k, v in obj.items()
                if not isinstance(v, torch.Tensor)
            ]
            raise CheckpointError(
                f"{path}: not a state dict: entries that are not tensors: {few(odd)}; "
                f"wrapped state dicts are read from the keys {', '.join(STATE_DICT_KEYS)}"
            )
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return dict(obj)
