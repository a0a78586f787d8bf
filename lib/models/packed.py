"""Lean, exact storage of ticket files: one compressed archive per source model.

A ticket is two files in the paper's format, `{arch}_{kind}_{k}_checkpoint.pth` (a state dict
whose pruned weights are zero) and `_mask.pth` (one bool tensor per prunable weight). Stored
as they are, a source model with states 0, 12 and random 12 takes about 1.2 MB; most of it is
zeros and bools. `pack` keeps, per ticket, the mask as bits, the weights inside the mask, the
sign of each pruned zero (IMP multiplies by the mask, so half of them are -0.0) and every
unmasked tensor (batch norm) whole, in one `packed.npz` (0.34 MB for those states).
`unpack` rebuilds the dicts and writes them with torch.save exactly as training did: the
files are byte-identical to the originals, which the release manifest checks by sha256.

The archive is a NumPy .npz read with allow_pickle=False: arrays and one JSON index, no code.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.core.utils import atomic_torch_save, atomic_write_bytes, torch_bytes

PACKED = "packed.npz"
FORMAT = 1
_INDEX = "index"  # the JSON member: format, and per file its kind, keys, shapes and dtypes


class PackError(ValueError):
    """A packed archive that does not hold what was asked, or a file that cannot be packed."""


def _load(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, weights_only=True, map_location="cpu")
    if type(obj) is not dict or not all(torch.is_tensor(v) for v in obj.values()):
        raise PackError(f"{path}: not a dict of tensors; only ticket files are packed")
    return obj


def _bits(flags: torch.Tensor) -> np.ndarray:
    return np.packbits(flags.reshape(-1).numpy())


def _unbits(bits: np.ndarray, count: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(bits, count=count).astype(bool))


def pack(folder: str | Path, checkpoints: list[str]) -> Path:
    """Pack the tickets `checkpoints` (names of `*_checkpoint.pth` in `folder`, each with its
    `_mask.pth`) into `folder/packed.npz`; the .pth files are left in place."""
    folder = Path(folder)
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, Any] = {"format": FORMAT, "files": {}}
    for name in checkpoints:
        mask_name = name.replace("_checkpoint.pth", "_mask.pth")
        if mask_name == name:
            raise PackError(f"{name}: not a `*_checkpoint.pth` ticket file")
        state, mask = _load(folder / name), _load(folder / mask_name)
        if set(mask) - set(state) or any(m.dtype != torch.bool for m in mask.values()):
            raise PackError(f"{folder / mask_name}: not bool masks of {name}'s weights")
        index["files"][mask_name] = {
            "kind": "mask",
            "keys": list(mask),
            "shapes": [list(m.shape) for m in mask.values()],
        }
        arrays[f"{mask_name}/bits"] = np.concatenate([_bits(m) for m in mask.values()])
        whole: dict[str, list[torch.Tensor]] = {}  # unmasked tensors, flat, one array per dtype
        kept, negative = [], []
        for key, value in state.items():
            if key not in mask:
                whole.setdefault(str(value.dtype), []).append(value.reshape(-1))
                continue
            m = mask[key]
            if value.dtype != torch.float32:
                raise PackError(f"{folder / name}: {key} is {value.dtype}; packed: float32")
            if bool((value[~m] != 0).any()):
                raise PackError(f"{folder / name}: {key} is not zero where its mask prunes")
            kept.append(value[m])
            negative.append(torch.signbit(value[~m]))
        index["files"][name] = {
            "kind": "checkpoint",
            "mask": mask_name,
            "keys": list(state),
            "whole": {k: str(v.dtype) for k, v in state.items() if k not in mask},
            "shapes": [list(v.shape) for v in state.values()],
            "strides": [list(v.stride()) for v in state.values()],  # training's channels_last
        }
        for dtype, parts in whole.items():
            arrays[f"{name}/{dtype}"] = torch.cat(parts).numpy()
        arrays[f"{name}/kept"] = torch.cat(kept).numpy() if kept else np.zeros(0, np.float32)
        arrays[f"{name}/negative_zeros"] = _bits(torch.cat(negative)) if negative else np.zeros(0)
    arrays[_INDEX] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic_write_bytes(folder / PACKED, buffer.getvalue())


def _read(archive: Path) -> tuple[dict[str, Any], Any]:
    try:
        data = np.load(archive, allow_pickle=False)
        index = json.loads(data[_INDEX].tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise PackError(f"{archive}: not a packed ticket archive ({error})") from None
    if index.get("format") != FORMAT:
        raise PackError(f"{archive}: format {index.get('format')!r}, this code reads {FORMAT}")
    return index, data


def contents(archive: str | Path) -> list[str]:
    """The file names `archive` can rebuild."""
    return list(_read(Path(archive))[0]["files"])


def _mask(entry: dict[str, Any], bits: np.ndarray) -> dict[str, torch.Tensor]:
    sizes = [int(np.prod(s)) for s in entry["shapes"]]
    offsets = np.cumsum([0] + [(n + 7) // 8 for n in sizes])  # each mask padded to a byte
    return {
        key: _unbits(bits[offsets[i] : offsets[i + 1]], sizes[i]).reshape(entry["shapes"][i])
        for i, key in enumerate(entry["keys"])
    }


def rebuild(archive: str | Path, name: str) -> dict[str, torch.Tensor]:
    """The dict that file `name` of `archive` holds, as torch.load gives it."""
    archive = Path(archive)
    index, data = _read(archive)
    entry = index["files"].get(name)
    if entry is None:
        raise PackError(f"{archive}: holds no {name!r} (it holds {', '.join(index['files'])})")
    if entry["kind"] == "mask":
        return _mask(entry, data[f"{name}/bits"])
    masks = _mask(index["files"][entry["mask"]], data[f"{entry['mask']}/bits"])
    kept = torch.from_numpy(data[f"{name}/kept"])
    pruned = sum(int((~m).sum()) for m in masks.values())
    negative = _unbits(data[f"{name}/negative_zeros"], pruned)
    state, used, signs = {}, 0, 0
    dtypes = set(entry["whole"].values())
    flat = {dtype: torch.from_numpy(data[f"{name}/{dtype}"]) for dtype in dtypes}
    start = dict.fromkeys(flat, 0)
    for key, shape, stride in zip(entry["keys"], entry["shapes"], entry["strides"], strict=True):
        if key in entry["whole"]:
            dtype, n = entry["whole"][key], int(np.prod(shape))
            value = flat[dtype][start[dtype] : start[dtype] + n].reshape(shape)
            start[dtype] += n
        else:
            m = masks[key]
            value = torch.zeros(shape, dtype=torch.float32)
            n, p = int(m.sum()), int((~m).sum())
            value[m] = kept[used : used + n]
            value[~m] = torch.where(negative[signs : signs + p], -0.0, 0.0)
            used, signs = used + n, signs + p
        state[key] = torch.empty_strided(shape, stride, dtype=value.dtype).copy_(value)
    return state


def digest(archive: str | Path, name: str) -> str:
    """The sha256 of file `name` as `unpack` writes it, computed in memory."""
    return hashlib.sha256(torch_bytes(rebuild(archive, name))).hexdigest()


def unpack(archive: str | Path, names: list[str]) -> list[Path]:
    """Write the files `names` of `archive` beside it (torch.save, as training wrote them)."""
    archive = Path(archive)
    return [atomic_torch_save(rebuild(archive, n), archive.parent / n) for n in names]
