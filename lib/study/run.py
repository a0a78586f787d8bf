"""One run of LP or VP from a run's config: the source, prompt and label map the config
names, trained by lib.adapt.train's loops, and the Transfer the record is written from.

    from lib.study.run import transfer_lp, transfer_vp
    run = transfer_vp(cfg, split, pool, test, source, fast, device)  # or transfer_lp
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lib.adapt.labelmap import LabelMapper, mapping_hyperparameters
from lib.adapt.prompt import (
    AdditivePrompt,
    build_prompt,
    lower_triangle_mask,
    prompt_hyperparameters,
)
from lib.adapt.train import (
    EVAL_BATCH,
    Batches,
    Data,
    Fit,
    PromptedClassifier,
    evaluate,
    subset,
    train_linear_probe,
    train_visual_prompt,
)
from lib.datasets.registry import get_spec
from lib.models.backbone import input_stats
from lib.models.sources import source_kind

if TYPE_CHECKING:
    from lib.datasets.sampling import Splits
    from lib.study.config import ExperimentConfig


@dataclass
class Transfer:
    """What one LP or VP run hands to its record: logits on the test set and on the set the
    temperature is fitted on, the loop's Fit, artifacts and (VP) the label mapping."""

    fit: Fit
    test_logits: torch.Tensor
    test_labels: torch.Tensor
    fit_logits: torch.Tensor
    fit_labels: torch.Tensor
    trained: float  # time.perf_counter() when training ended (evaluation follows)
    artifacts: dict = field(default_factory=dict)
    mapping: dict = field(default_factory=dict)


def transfer_lp(
    cfg: ExperimentConfig,
    splits: Splits,
    features: tuple[torch.Tensor, torch.Tensor],
    test_features: tuple[torch.Tensor, torch.Tensor],
) -> Transfer:
    """Linear probing on the cached features of the training pool and the test set."""
    feats, flabels = features
    test_feats, test_labels = test_features
    selection_set = {
        "val": (feats[splits.val], flabels[splits.val]),
        "last": None,
        "test": (test_feats, test_labels),  # the paper's protocol: optimistic
    }[cfg.selection]
    head, fit = train_linear_probe(
        (feats[splits.train], flabels[splits.train]),
        selection_set,
        get_spec(cfg.dataset).num_classes,
        cfg.epochs,
        cfg.lr,
        cfg.batch_size,
        cfg.seed,
        cfg.n_bins,
        cfg.schedule,
        cfg.patience,
    )
    trained = time.perf_counter()
    fit_index = splits.train if cfg.selection == "last" else splits.val
    with torch.inference_mode():
        test_logits = head(test_feats)
        fit_logits, fit_labels = head(feats[fit_index]), flabels[fit_index]
    if cfg.selection == "test":  # the head's test logits
        fit_logits, fit_labels = test_logits, test_labels
    return Transfer(fit, test_logits, test_labels, fit_logits, fit_labels, trained)


def transfer_vp(
    cfg: ExperimentConfig,
    splits: Splits,
    pool: Data,
    test: Data,
    source: nn.Module,
    fast: nn.Module,
    device: torch.device,
) -> Transfer:
    """Visual prompting with label mapping through the frozen `fast` copy of `source`."""
    spec = get_spec(cfg.dataset)
    probe = torch.zeros(1, 3, cfg.source_size, cfg.source_size, device=device)
    num_source = source(probe).shape[1]
    stats = input_stats(cfg.arch)
    if cfg.prompt == "additive":  # CLIP's, after normalization
        prompt = AdditivePrompt(cfg.source_size, cfg.pad, stats)
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
    mapper = LabelMapper(
        cfg.mapping, num_source, spec.num_classes, cfg.per_target, cfg.mapping_interval, cfg.seed
    )
    model = PromptedClassifier(prompt, fast, mapper)
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
    trained = time.perf_counter()
    test_logits, test_labels = evaluate(
        model, Batches(test, EVAL_BATCH, num_workers=cfg.num_workers), device, desc="test"
    )
    fit_logits, fit_labels = test_logits, test_labels
    if cfg.selection != "test":
        fit_index = splits.train if cfg.selection == "last" else splits.val
        fit_logits, fit_labels = evaluate(
            model,
            Batches(subset(pool, fit_index), EVAL_BATCH, num_workers=cfg.num_workers),
            device,
        )
    mapping = mapping_info(cfg, mapper, num_source, spec.classes)
    mapping["changes"] = fit.mapping_changes
    mapping["hyperparameters"] = mapping_hyperparameters(cfg.mapping, spec.num_classes)
    mapping["prompt_hyperparameters"] = prompt_hyperparameters(prompt)
    if mapper.weights is not None:  # blm/blmpp: the many-to-many matrix [S, T] itself
        mapping["weights"] = mapper.weights.round(decimals=5).tolist()
    artifacts = {"prompt": prompt.pattern().detach().cpu()}
    return Transfer(
        fit, test_logits, test_labels, fit_logits, fit_labels, trained, artifacts, mapping
    )


def _class_name(name: str) -> str:
    return name.split(" - ")[0].strip().lower()  # torchvision MNIST: "7 - seven"


def mapping_info(
    cfg: ExperimentConfig,
    mapper: LabelMapper,
    num_source: int,
    target_classes: tuple[str, ...] | None,
) -> dict[str, Any]:
    """The label mapping of a VP run for its record: source indices and names per target
    class, and the fraction mapped to a source class of their own name (digits -> glyphs)."""
    if mapper.mapping is None:
        return {"indices": None}
    indices = mapper.mapping.view(-1, cfg.per_target).tolist()
    info: dict[str, Any] = {"indices": indices}
    names = source_kind(cfg).classes(cfg, num_source)
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
