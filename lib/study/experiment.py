"""One experiment: a source network transferred to a dataset by LP or VP, over n-shots/seeds.

    from lib.study.config import ExperimentConfig
    from lib.study.experiment import run_experiments
    records = run_experiments([ExperimentConfig(dataset="digits", method="lp", epochs=5)])

Configs that share the dataset, network and method share the loaded data, the source model
and (for LP) the cached features; each config still gets its own record. Runs whose
record exists are skipped (resume). The flow of one run: config -> lib.study.checks (before
any compute) -> data + lib.models.sources -> lib.study.run.transfer_lp / transfer_vp ->
lib.study.results.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from lib.adapt.train import Batches, Data, Normalized, subset
from lib.core.utils import get_device, headless_kernel, progress, set_seed
from lib.datasets.registry import as_tensors, dataset_labels, get_dataset, get_spec
from lib.datasets.sampling import stratified_subset
from lib.models.backbone import fold_batchnorm, freeze, input_stats, split_features
from lib.models.sources import source_kind
from lib.study import results
from lib.study.checks import (  # noqa: F401 - re-exported: lib.study.experiment's names stay importable
    LIST_PARAMETERS,
    NOTEBOOK_PARAMETERS,
    check_files,
    check_injected,
    configs_from_parameters,
    injected_parameters,
    make_splits,
    missing_files,
    notebook_parameters,
    source_files,
    validate,
)
from lib.study.config import ExperimentConfig
from lib.study.console import run_line
from lib.study.features import (  # noqa: F401 - re-exported
    CACHE_ENV,
    DEFAULT_CACHE_MB,
    cache_limit_bytes,
    cached_features,
    evict_cache,
)
from lib.study.results import TEMPERATURE_SET  # noqa: F401 - re-exported
from lib.study.run import transfer_lp, transfer_vp
from lib.study.tracking import track_run

# Fields that may differ between configs sharing one source model, data and features.
PER_RUN_FIELDS = (
    "n_shot",
    "seed",
    "epochs",
    "lr",
    "batch_size",
    "max_train",
    "mapping",
    "per_target",
    "mapping_interval",
    "learn_scale",
    "val_fraction",
    "max_val",
    "n_bins",
    "n_shot_policy",
    "selection",
    "val_shots",
    "prompt_mask",
)
QUANT_CALIBRATION_BATCHES = 4  # batches of 128 training images set the activation ranges


def load_source(cfg: ExperimentConfig, calibration: list[torch.Tensor] | None = None) -> nn.Module:
    """The compressed (or dense) source classifier the config names (lib.models.sources)."""
    check_files(cfg)
    return source_kind(cfg).load(cfg, calibration)


def source_classes(cfg: ExperimentConfig, num_source: int) -> list[str] | None:
    return source_kind(cfg).classes(cfg, num_source)


# ---------------------------------------------------------------- data


def _fixed_subset(data: Data, labels: torch.Tensor, size: int) -> tuple[Data, torch.Tensor]:
    """The fixed stratified subset of about `size` items (lib.datasets.sampling), the same
    every run."""
    index = stratified_subset(labels, size)
    if len(index) == len(labels):
        return data, labels
    return subset(data, index), labels[index]


def load_data(cfg: ExperimentConfig) -> tuple[Data, Data, torch.Tensor]:
    """Training pool, test set and the pool's labels, at the size the method feeds in."""
    spec = get_spec(cfg.dataset)
    size, partition = cfg.input_size, cfg.split
    train = get_dataset(cfg.dataset, "train", cfg.root, image_size=size, partition=partition)
    test = get_dataset(cfg.dataset, "test", cfg.root, image_size=size, partition=partition)
    train, labels = _fixed_subset(train, _labels(train), cfg.train_pool)
    test, _ = _fixed_subset(test, _labels(test), cfg.max_test)
    if spec.kind == "mini":  # small: in memory as tensors (after subsetting), plain slices
        train, test = as_tensors(train), as_tensors(test)
    return train, test, labels


def _labels(data: Data) -> torch.Tensor:
    return data[1] if isinstance(data, tuple) else dataset_labels(data)


# ---------------------------------------------------------------- one group of runs


def _calibration_batches(pool: Data, cfg: ExperimentConfig) -> list[torch.Tensor]:
    """A fixed set of normalized training images at the source size (quantizer ranges)."""
    n = QUANT_CALIBRATION_BATCHES * 128
    index = torch.randperm(
        len(pool[0]) if isinstance(pool, tuple) else len(pool),
        generator=torch.Generator().manual_seed(0),
    )[:n]
    images, _ = next(iter(Batches(subset(pool, index), n)))
    prep = Normalized(nn.Identity(), cfg.source_size, *input_stats(cfg.arch))
    return list(prep(images).split(128))


def _group_key(cfg: ExperimentConfig) -> tuple:
    d = cfg.to_dict()
    return tuple((k, str(v)) for k, v in sorted(d.items()) if k not in PER_RUN_FIELDS)


def run_experiments(configs: list[ExperimentConfig], force: bool = False) -> list[dict[str, Any]]:
    """Run every config that has no record yet; return all their records."""
    validate(configs)  # every group's files and n-shots, before the first group trains
    groups: dict[tuple, list[ExperimentConfig]] = {}
    for cfg in configs:
        groups.setdefault(_group_key(cfg), []).append(cfg)
    out = []
    for members in groups.values():
        out += _run_group(members, force)
    return out


def _run_group(configs: list[ExperimentConfig], force: bool) -> list[dict[str, Any]]:
    todo = [c for c in configs if force or not results.has_record(c.study, c.run_key)]
    if not todo:
        return [results.read_record(results.record_path(c.study, c.run_key)) for c in configs]
    base = todo[0]
    kind = source_kind(base)
    device = get_device(base.device)
    start = time.perf_counter()
    pool, test, labels = load_data(base)
    splits = {c.run_key: make_splits(c, labels) for c in todo}  # bad n_shot fails here
    set_seed(0)
    calibration = _calibration_batches(pool, base) if kind.quantized else None
    source = freeze(load_source(base, calibration)).to(device)
    # BN folded into the convs: same function, faster. Not under activation quantization,
    # where float rounding can flip a value to the next quantization level.
    fast = source if kind.quantized else fold_batchnorm(source)
    shared = {"load_s": time.perf_counter() - start}
    if base.method == "lp":
        t0 = time.perf_counter()
        features, _ = split_features(fast)
        extractor = Normalized(features, base.source_size, *input_stats(base.arch))
        extractor = freeze(extractor).to(device)
        train_features = cached_features(base, extractor, pool, "train", device)
        test_features = cached_features(base, extractor, test, "test", device)
        shared["features_s"] = time.perf_counter() - t0
    for cfg in progress(todo, desc=f"{base.dataset} {base.network}{base.sparsity} {base.method}"):
        started = time.perf_counter()
        set_seed(cfg.seed)
        split = splits[cfg.run_key]
        if cfg.method == "lp":
            run = transfer_lp(cfg, split, train_features, test_features)
        else:
            run = transfer_vp(cfg, split, pool, test, source, fast, device)
        record = results.make_record(cfg, split, labels, run, source, device, shared, started)
        results.write_record(record)
        track_run(cfg, record)  # optional TensorBoard / W&B (cfg.tensorboard, cfg.wandb)
        if headless_kernel():  # the bars are off there: one line per run instead
            print(run_line(record), flush=True)
    return [results.read_record(results.record_path(c.study, c.run_key)) for c in configs]
