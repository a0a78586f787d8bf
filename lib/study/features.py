"""The LP feature cache: frozen-backbone features of a whole split, computed once per source
network and kept in a folder bounded by $SPARSE_VP_CACHE_MB (least recently used go first).

    from lib.study.features import cached_features
    features, labels = cached_features(cfg, extractor, data, "train", device)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from lib.adapt.train import Batches, Data, evaluate, num_samples
from lib.core import paths
from lib.core.utils import atomic_torch_save
from lib.datasets.registry import dataset_labels
from lib.study.checks import source_files
from lib.study.config import ExperimentConfig

# LP feature caches are bounded: least-recently-used files go once the folder exceeds this.
CACHE_ENV = "SPARSE_VP_CACHE_MB"
DEFAULT_CACHE_MB = 2048
FEATURE_BATCH = 256  # images per forward pass while features are computed


def content_digest(data: Data, folder: Path) -> str:
    """What features are computed from, so data changed in place is never served old features:
    in-memory tensors by their bytes (about 1 GB/s); a dataset read from files by its labels
    and the name, size and mtime of every file under `folder` (its folder of the data root)."""
    digest = hashlib.sha1()
    if isinstance(data, tuple):
        for tensor in data:
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype} {tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
        return digest.hexdigest()
    digest.update(dataset_labels(data).numpy().tobytes())
    for place, folders, files in os.walk(folder):
        folders.sort()
        for name in sorted(files):
            try:
                info = os.stat(os.path.join(place, name))
            except OSError:  # vanished while walking: it changes the digest all the same
                continue
            rel = os.path.relpath(os.path.join(place, name), folder)
            digest.update(f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _feature_cache_path(cfg: ExperimentConfig, split: str, data: Data) -> Path:
    files = [(str(p), p.stat().st_mtime) for p in source_files(cfg) if p.is_file()]
    key = dict(
        arch=cfg.arch,
        network=cfg.network,
        sparsity=cfg.sparsity,
        weights=cfg.weights,
        bits=(cfg.weight_bits, cfg.act_bits),
        files=files,
        **({"prune_sparsity": cfg.prune_sparsity} if cfg.prune_sparsity else {}),
        dataset=cfg.dataset,
        root=str(cfg.root),
        split=split,
        partition=cfg.split,
        size=cfg.input_size,
        subset=cfg.train_pool if split == "train" else cfg.max_test,
        content=content_digest(data, Path(cfg.root) / cfg.dataset),
    )
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return paths.feature_cache(cfg.dataset, split, digest)


def cache_limit_bytes() -> int:
    """Size cap of the feature cache: $SPARSE_VP_CACHE_MB megabytes (default 2048)."""
    value = os.environ.get(CACHE_ENV, "")
    try:
        megabytes = float(value) if value else DEFAULT_CACHE_MB
    except ValueError:
        raise ValueError(f"${CACHE_ENV}={value!r}: expected a number of megabytes") from None
    return int(megabytes * 2**20)


def evict_cache(folder: Path, limit: int, keep: Path | None = None) -> list[Path]:
    """Delete the least-recently-used *.pt files of `folder` until it holds at most `limit`
    bytes; `keep` (the file just written) is never deleted. Returns the deleted files."""
    entries = []
    for path in folder.glob("*.pt"):
        try:
            entries.append((path.stat().st_mtime, path.stat().st_size, path))
        except FileNotFoundError:  # evicted by a concurrent run
            continue
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        if keep is not None and path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
    return removed


def _read_cache(path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A cached (features, labels) pair, or None when absent or unusable (then recomputed)."""
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
        features, labels = cached["features"], cached["labels"]
        if not (torch.is_tensor(features) and torch.is_tensor(labels)) or len(features) != len(
            labels
        ):
            raise ValueError("not a (features, labels) pair of equal length")
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - derived data: any unusable file is recomputed
        warnings.warn(f"{path}: unusable feature cache ({error}); recomputing", stacklevel=2)
        return None
    try:
        os.utime(path)  # a hit makes the file recently used, so eviction keeps it
    except FileNotFoundError:
        pass
    return features, labels


def cached_features(
    cfg: ExperimentConfig, extractor: nn.Module, data: Data, split: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-backbone features of a whole split, computed once per source network and kept
    in a cache bounded by $SPARSE_VP_CACHE_MB."""
    path = _feature_cache_path(cfg, split, data)
    cached = _read_cache(path)
    if cached is not None and len(cached[0]) == num_samples(data):
        return cached
    features, labels = evaluate(
        extractor,
        Batches(data, FEATURE_BATCH, num_workers=cfg.num_workers),
        device,
        desc=f"features {split}",
    )
    atomic_torch_save({"features": features, "labels": labels}, path)
    evict_cache(path.parent, cache_limit_bytes(), keep=path)
    return features, labels
