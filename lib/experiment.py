"""One experiment: a source network transferred to a dataset by LP or VP, over n-shots/seeds.

    from lib.config import ExperimentConfig
    from lib.experiment import run_experiments
    records = run_experiments([ExperimentConfig(dataset="digits", method="lp", epochs=5)])

Configs that share the dataset, network and method share the loaded data, the source model
and (for LP) the cached features; each config still gets its own record. Runs whose
record exists are skipped (resume).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import resource
import time
import warnings
from dataclasses import fields, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lib import clip, results, vit
from lib.backbone import (
    create_backbone,
    imagenet_classes,
    input_stats,
    load_lottery_ticket,
    load_sparse_checkpoint,
    sparsity,
    split_features,
    ticket_paths,
    torchvision_weights_file,
)
from lib.calibration import (
    RECORD_RESAMPLES,
    calibration_metrics,
    confidence_analysis,
    fit_temperature,
    reliability_data,
)
from lib.config import ExperimentConfig
from lib.console import run_line
from lib.data import as_tensors, dataset_labels, get_dataset, get_spec
from lib.labelmap import LabelMapper, build_mapper, mapping_hyperparameters
from lib.prompt import build_prompt, lower_triangle_mask, prompt_hyperparameters
from lib.quant import quantize_backbone, weight_levels
from lib.sampling import Splits, draw_splits, per_class_counts, stratified_subset
from lib.tracking import track_run
from lib.train import (
    CONVERGED_GAIN,
    Batches,
    Data,
    Normalized,
    PromptedClassifier,
    evaluate,
    fold_batchnorm,
    freeze,
    num_samples,
    subset,
    train_linear_probe,
    train_visual_prompt,
)
from lib.utils import (
    atomic_torch_save,
    get_device,
    headless_kernel,
    outputs_dir,
    progress,
    set_seed,
)

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
# What the temperature is fitted on, per selection: without a validation set, "last" uses
# the training sample (the only labels it has) and "test" the test set (optimistic, as the
# epoch it picks there).
TEMPERATURE_SET = {"val": "val", "last": "train", "test": "test"}
QUANT_CALIBRATION_BATCHES = 4  # batches of 128 training images set the activation ranges
# LP feature caches are bounded: least-recently-used files go once the folder exceeds this.
CACHE_ENV = "SPARSE_VP_CACHE_MB"
DEFAULT_CACHE_MB = 2048


# ---------------------------------------------------------------- source networks


def source_files(cfg: ExperimentConfig) -> list[Path]:
    """Checkpoint files the config needs (none for torchvision weights)."""
    if clip.is_clip(cfg.arch) or vit.is_vit(cfg.arch):  # open_clip / timm sources
        return (clip if clip.is_clip(cfg.arch) else vit).source_files(cfg)
    root = cfg.pretrained_path
    if cfg.network == "sparsezoo":
        return [Path(cfg.checkpoint)]
    if cfg.network == "dense" and cfg.weights:
        return [] if not Path(cfg.weights).suffix else [Path(cfg.weights)]
    kind = "random" if cfg.network == "random_pruned" else "dyn4"
    return list(ticket_paths(root, cfg.arch, cfg.sparsity, kind))


def missing_files(cfg: ExperimentConfig) -> list[str]:
    """What the config needs and this machine lacks: checkpoint files, and torchvision weights
    not in $TORCH_HOME's cache (those download on first use where there is a network)."""
    if clip.is_clip(cfg.arch):
        return clip.missing_files(cfg)
    missing = [str(p) for p in source_files(cfg) if not p.is_file()]
    if cfg.network == "dense" and cfg.weights and not Path(cfg.weights).suffix:
        _, path = torchvision_weights_file(cfg.arch, cfg.weights)
        if not path.is_file():
            missing.append(f"{path} (torchvision {cfg.arch} {cfg.weights})")
    return missing


def check_files(cfg: ExperimentConfig) -> None:
    """Fail before any compute when a checkpoint the config needs is missing."""
    if clip.is_clip(cfg.arch):  # hub weights may still download
        return clip.check_files(cfg)
    if vit.is_vit(cfg.arch):
        return vit.check_files(cfg)
    missing = [p for p in source_files(cfg) if not p.is_file()]
    if missing:
        root = cfg.pretrained_path
        found = sorted(p.name for p in root.glob("*_checkpoint.pth")) if root.is_dir() else []
        raise FileNotFoundError(
            f"{cfg.network} sparsity state {cfg.sparsity} of {cfg.arch}: missing "
            f"{', '.join(map(str, missing))}; checkpoints in {root}: "
            f"{', '.join(found) or 'none'} (run notebooks/pretrain_source.ipynb or set "
            f"pretrained_dir)"
        )


def load_source(cfg: ExperimentConfig, calibration: list[torch.Tensor] | None = None) -> nn.Module:
    """The compressed (or dense) source classifier the config names."""
    check_files(cfg)
    if clip.is_clip(cfg.arch):
        return clip.load_source(cfg)
    if vit.is_vit(cfg.arch):
        return vit.load_source(cfg, calibration)
    if cfg.network == "sparsezoo":
        return load_sparse_checkpoint(cfg.arch, cfg.checkpoint)
    if cfg.network == "dense" and cfg.weights:
        return create_backbone(cfg.arch, weights=cfg.weights)
    kind = "random" if cfg.network == "random_pruned" else "dyn4"
    model = load_lottery_ticket(
        cfg.arch, *ticket_paths(cfg.pretrained_path, cfg.arch, cfg.sparsity, kind)
    )
    if cfg.network == "quantized":
        model = quantize_backbone(freeze(model), cfg.weight_bits, cfg.act_bits, calibration)
    return model


def source_classes(cfg: ExperimentConfig, num_source: int) -> list[str] | None:
    if clip.is_clip(cfg.arch):  # the text prompts' class names, template-major
        names = clip.class_names(cfg.dataset, cfg.root, cfg.split)
        return [n for _ in range(num_source // len(names)) for n in names]
    path = cfg.pretrained_path / "classes.json"
    if cfg.network != "sparsezoo" and not cfg.weights and path.is_file():
        return json.loads(path.read_text())
    return list(imagenet_classes()) if num_source == 1000 else None


# ---------------------------------------------------------------- data


def _fixed_subset(data: Data, labels: torch.Tensor, size: int) -> tuple[Data, torch.Tensor]:
    """A stratified subset of about `size` items, the same for every run (seed 0)."""
    if size == -1 or size >= len(labels):
        return data, labels
    index = stratified_subset(labels, size)
    return subset(data, index), labels[index]


def load_data(cfg: ExperimentConfig) -> tuple[Data, Data, torch.Tensor]:
    """Training pool, test set and the pool's labels, at the size the method feeds in."""
    spec = get_spec(cfg.dataset)
    size, partition = cfg.input_size, cfg.split
    train = get_dataset(cfg.dataset, "train", cfg.root, image_size=size, partition=partition)
    test = get_dataset(cfg.dataset, "test", cfg.root, image_size=size, partition=partition)
    if spec.kind == "mini":  # small: keep in memory as tensors, batches are plain slices
        train, test = as_tensors(train), as_tensors(test)
    train, labels = _fixed_subset(train, _labels(train), cfg.train_pool)
    test, _ = _fixed_subset(test, _labels(test), cfg.max_test)
    return train, test, labels


def _labels(data: Data) -> torch.Tensor:
    return data[1] if isinstance(data, tuple) else dataset_labels(data)


@lru_cache(maxsize=32)
def _pool_labels(dataset: str, root: str, train_pool: int, partition: str) -> torch.Tensor:
    """Labels of the training pool load_data would build (only labels are kept)."""
    size = get_spec(dataset).image_size or 224  # labels do not depend on it; some sets need one
    pool = get_dataset(dataset, "train", root, image_size=size, partition=partition)
    labels = dataset_labels(pool)
    return _fixed_subset((labels, labels), labels, train_pool)[1]


def validate(configs: list[ExperimentConfig], sources: bool = True) -> None:
    """Everything about the configs that can fail, checked before any data or training:
    checkpoint files (when `sources`) and n-shots against the class sizes (labels only)."""
    checked = set()
    for cfg in configs:
        if sources:
            check_files(cfg)
        # the splits depend on these alone: a paper grid has few distinct ones
        key = (cfg.dataset, str(cfg.root), cfg.train_pool, cfg.val_fraction, cfg.max_val)
        key += (cfg.max_train, cfg.n_shot, cfg.seed, cfg.split, cfg.n_shot_policy)
        key += (cfg.selection, cfg.val_shots)
        if key in checked:
            continue
        checked.add(key)
        try:
            make_splits(cfg, _pool_labels(cfg.dataset, str(cfg.root), cfg.train_pool, cfg.split))
        except ValueError as error:
            raise ValueError(f"{cfg.dataset} (seed {cfg.seed}): {error}") from None


def make_splits(cfg: ExperimentConfig, labels: torch.Tensor) -> Splits:
    """The run's training sample and validation set (lib.sampling.draw_splits)."""
    return draw_splits(
        labels,
        cfg.n_shot,
        cfg.seed,
        policy=cfg.n_shot_policy,
        selection=cfg.selection,
        val_shots=cfg.val_shots,
        val_fraction=cfg.val_fraction,
        max_val=cfg.max_val,
        max_train=cfg.max_train,
    )


# ---------------------------------------------------------------- LP features


def _feature_cache_path(cfg: ExperimentConfig, split: str) -> Path:
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
    )
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return outputs_dir() / "cache" / "features" / f"{cfg.dataset}-{split}-{digest}.pt"


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
    path = _feature_cache_path(cfg, split)
    cached = _read_cache(path)
    if cached is not None and len(cached[0]) == num_samples(data):  # else the data changed
        return cached
    features, labels = evaluate(
        extractor, Batches(data, 256, num_workers=cfg.num_workers), device, desc=f"features {split}"
    )
    atomic_torch_save({"features": features, "labels": labels}, path)
    evict_cache(path.parent, cache_limit_bytes(), keep=path)
    return features, labels


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
    device = get_device(base.device)
    start = time.perf_counter()
    pool, test, labels = load_data(base)
    splits = {c.run_key: make_splits(c, labels) for c in todo}  # bad n_shot fails here
    set_seed(0)
    calibration = _calibration_batches(pool, base) if base.network == "quantized" else None
    source = freeze(load_source(base, calibration)).to(device)
    # BN folded into the convs: same function, faster. Not under activation quantization,
    # where float rounding can flip a value to the next quantization level.
    fast = source if base.network == "quantized" else fold_batchnorm(source)
    shared = {"load_s": time.perf_counter() - start}
    context: dict[str, Any] = {"source": source, "fast": fast, "device": device}
    if base.method == "lp":
        t0 = time.perf_counter()
        features, _ = split_features(fast)
        extractor = Normalized(features, base.source_size, *input_stats(base.arch))
        extractor = freeze(extractor).to(device)
        context["train_features"] = cached_features(base, extractor, pool, "train", device)
        context["test_features"] = cached_features(base, extractor, test, "test", device)
        shared["features_s"] = time.perf_counter() - t0
    for cfg in progress(todo, desc=f"{base.dataset} {base.network}{base.sparsity} {base.method}"):
        record = _run_one(cfg, splits[cfg.run_key], labels, pool, test, context, shared)
        results.write_record(record)
        track_run(cfg, record)  # optional TensorBoard / W&B (cfg.tensorboard, cfg.wandb)
        if headless_kernel():  # the bars are off there: one line per run instead
            print(run_line(record), flush=True)
    return [results.read_record(results.record_path(c.study, c.run_key)) for c in configs]


def _run_one(
    cfg: ExperimentConfig,
    splits: Splits,
    labels: torch.Tensor,
    pool: Data,
    test: Data,
    context: dict[str, Any],
    shared: dict[str, float],
) -> dict[str, Any]:
    t0 = time.perf_counter()
    set_seed(cfg.seed)
    source, device = context["source"], context["device"]
    spec = get_spec(cfg.dataset)
    num_target = spec.num_classes
    artifacts: dict[str, Any] = {}
    mapping_info: dict[str, Any] = {}
    if cfg.method == "lp":
        feats, flabels = context["train_features"]
        test_feats, test_labels = context["test_features"]
        selection_set = {
            "val": (feats[splits.val], flabels[splits.val]),
            "last": None,
            "test": (test_feats, test_labels),  # the paper's protocol: optimistic
        }[cfg.selection]
        head, fit = train_linear_probe(
            (feats[splits.train], flabels[splits.train]),
            selection_set,
            num_target,
            cfg.epochs,
            cfg.lr,
            cfg.batch_size,
            cfg.seed,
            cfg.n_bins,
            cfg.schedule,
            cfg.patience,
        )
        t1 = time.perf_counter()
        fit_index = splits.train if cfg.selection == "last" else splits.val
        with torch.inference_mode():
            test_logits = head(test_feats)
            fit_logits, fit_labels = head(feats[fit_index]), flabels[fit_index]
    else:
        num_source = source(
            torch.zeros(1, 3, cfg.source_size, cfg.source_size, device=device)
        ).shape[1]
        stats = input_stats(cfg.arch)
        if cfg.prompt == "additive":  # CLIP's, after normalization (lib.clip)
            prompt = clip.AdditivePrompt(cfg.source_size, cfg.pad, stats)
        else:
            inner = cfg.inner_mask == "lower_triangle"
            prompt = build_prompt(
                cfg.prompt,
                cfg.source_size,
                cfg.input_size,
                stats,
                cfg.learn_scale,
                inner_mask=lower_triangle_mask(cfg.input_size) if inner else None,
                pad=cfg.pad,
            )
        mapper = build_mapper(
            cfg.mapping, num_source, num_target, cfg.per_target, cfg.mapping_interval, cfg.seed
        )
        model = PromptedClassifier(prompt, context["fast"], mapper)
        selection_data = {"val": subset(pool, splits.val), "last": None, "test": test}
        fit = train_visual_prompt(
            model,
            subset(pool, splits.train),
            selection_data[cfg.selection],
            cfg.epochs,
            cfg.lr,
            cfg.batch_size,
            cfg.seed,
            cfg.n_bins,
            device,
            cfg.num_workers,
            schedule=cfg.schedule,
            patience=cfg.patience,
            optimizer=cfg.optimizer,
        )
        t1 = time.perf_counter()
        test_logits, test_labels = evaluate(
            model, Batches(test, 256, num_workers=cfg.num_workers), device, desc="test"
        )
        fit_logits, fit_labels = test_logits, test_labels
        if cfg.selection != "test":
            fit_index = splits.train if cfg.selection == "last" else splits.val
            fit_logits, fit_labels = evaluate(
                model, Batches(subset(pool, fit_index), 256, num_workers=cfg.num_workers), device
            )
        artifacts["prompt"] = prompt.pattern().detach().cpu()
        mapping_info = _mapping_info(cfg, mapper, num_source, spec.classes)
        mapping_info["changes"] = fit.mapping_changes
        mapping_info["hyperparameters"] = mapping_hyperparameters(cfg.mapping, num_target)
        mapping_info["prompt_hyperparameters"] = prompt_hyperparameters(prompt)
        if mapper.weights is not None:  # blm/blmpp: the many-to-many matrix [S, T] itself
            mapping_info["weights"] = mapper.weights.round(decimals=5).tolist()
    if cfg.selection == "test":  # LP: the head's test logits
        fit_logits, fit_labels = test_logits, test_labels
    temperature = fit_temperature(fit_logits, fit_labels)
    probs = test_logits.softmax(1)
    seed_batch = cfg.seed_test_batch_size  # the paper's legacy ECE sums per test batch
    used = _labels_used(cfg, splits, labels, num_target)
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
        "val": calibration_metrics(fit_logits, fit_labels, cfg.n_bins, seed_batch)
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
        "mapping_own_class_fraction": mapping_info.get("own_class_fraction"),
    }
    if cfg.network == "quantized":
        metrics["weight_levels"] = weight_levels(source)
    if test_logits.numel() <= 2_000_000:  # keep artifacts small at paper scale
        artifacts.update(test_logits=test_logits.half(), test_labels=test_labels)
    folder = results.study_dir(cfg.study) / "artifacts"
    atomic_torch_save(artifacts, folder / f"{cfg.run_key}.pt")
    return {
        "run_key": cfg.run_key,
        "study": cfg.study,
        "params": cfg.to_dict(),
        "metrics": metrics,
        "reliability": {
            "raw": reliability_data(probs, test_labels, cfg.n_bins),
            "ts": reliability_data((test_logits / temperature).softmax(1), test_labels, cfg.n_bins),
        },
        "mapping": mapping_info,
        "history": fit.history,
        "training": clip.recipe(cfg),  # optimizer and schedule (and the CLIP seed's recipe)
        "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(test_labels)},
        "labels": used,
        "timings": {**shared, "train_s": t1 - t0, "eval_s": time.perf_counter() - t1},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(device),
        "provenance": results.provenance(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _labels_used(
    cfg: ExperimentConfig, splits: Splits, labels: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    """Every label the run saw besides the test set: requested and actual per-class counts."""
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


def _class_name(name: str) -> str:
    return name.split(" - ")[0].strip().lower()  # torchvision MNIST: "7 - seven"


def _mapping_info(
    cfg: ExperimentConfig,
    mapper: LabelMapper,
    num_source: int,
    target_classes: tuple[str, ...] | None,
) -> dict[str, Any]:
    if mapper.mapping is None:
        return {"indices": None}
    indices = mapper.mapping.view(-1, cfg.per_target).tolist()
    info: dict[str, Any] = {"indices": indices}
    names = source_classes(cfg, num_source)
    if names:
        info["source_names"] = [[names[s] for s in row] for row in indices]
    if names and target_classes:
        own = [
            _class_name(t) in {_class_name(names[s]) for s in row}
            for t, row in zip(target_classes, indices, strict=True)
        ]
        if any(_class_name(t) in {_class_name(n) for n in names} for t in target_classes):
            info["own_class_fraction"] = sum(own) / len(own)
    return info


# The transfer notebook's parameters cell: the config fields, with n-shots, seeds and source
# models as lists (one execution runs their product).
LIST_PARAMETERS = {"n_shot": "n_shots", "seed": "seeds", "source_seed": "source_seeds"}
NOTEBOOK_PARAMETERS = frozenset(
    {f.name for f in fields(ExperimentConfig)} - set(LIST_PARAMETERS)
    | set(LIST_PARAMETERS.values())
    | {"threads"}
)


def injected_parameters(namespace: dict[str, Any]) -> list[str]:
    """Names papermill injected into this kernel (its "# Parameters" cell); [] when none.

    The kernel's input history (`In`) holds the injected cell as it was executed.
    """
    for source in reversed(namespace.get("In") or []):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                body = ast.parse(source).body
            except SyntaxError:
                return []
            return [
                target.id
                for node in body
                if isinstance(node, ast.Assign | ast.AnnAssign)
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Name)
            ]
    return []


def check_injected(namespace: dict[str, Any], allowed: frozenset[str]) -> None:
    """A parameter the notebook does not have (`-p datset x`) is an error, not ignored."""
    unknown = sorted(
        name
        for name in injected_parameters(namespace)
        if name not in allowed and not name.startswith("PAPERMILL_")  # --inject-paths
    )
    if unknown:
        raise ValueError(
            f"unknown notebook parameter(s) {', '.join(map(repr, unknown))}; "
            f"choose from: {', '.join(sorted(allowed))}"
        )


def notebook_parameters(configs: list[ExperimentConfig]) -> dict[str, Any]:
    """The transfer notebook's parameters for `configs` (equal but for the list fields, and
    their product): what `configs_from_parameters` turns back into the same configs."""
    params = {k: v for k, v in configs[0].to_dict().items() if k not in LIST_PARAMETERS}
    for field_name, name in LIST_PARAMETERS.items():
        params[name] = sorted({getattr(c, field_name) for c in configs})
    return params


def configs_from_parameters(namespace: dict[str, Any]) -> list[ExperimentConfig]:
    """The configs of one transfer-notebook execution: its parameters over source models x
    n-shots x seeds.

    `namespace` is the notebook's globals(); every ExperimentConfig field found there is used,
    and a name papermill injected that is not a parameter is an error.
    """
    check_injected(namespace, NOTEBOOK_PARAMETERS)
    names = NOTEBOOK_PARAMETERS - set(LIST_PARAMETERS.values()) - {"threads"}
    base = ExperimentConfig.from_dict({k: namespace[k] for k in names if k in namespace})
    lists = {}
    for field_name, name in LIST_PARAMETERS.items():
        values = namespace.get(name, [getattr(base, field_name)])
        if not isinstance(values, list) or not values:
            raise ValueError(f"{name} must be a non-empty list, got {values!r}")
        lists[field_name] = values
    configs = [
        replace(base, source_seed=src, n_shot=n, seed=s)
        for src in lists["source_seed"]
        for n in lists["n_shot"]
        for s in lists["seed"]
    ]
    validate(configs)  # missing tickets and too many shots fail here, not mid-notebook
    return configs
