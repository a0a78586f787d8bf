"""One validated experiment configuration: every run of the study is one of these.

    from lib.study.config import ExperimentConfig
    cfg = ExperimentConfig(dataset="mnist", method="vp", network="ticket", sparsity=8)

Construction checks every field and names the bad value and the allowed ones, so a
misconfigured run fails before any data is loaded or any weight is trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.adapt.schedules import OPTIMIZERS, SCHEDULES
from lib.core.paths import check_name

METHODS = ("lp", "vp")
# the kinds of lib.models.sources.SOURCES
NETWORKS = ("dense", "ticket", "random_pruned", "quantized", "sparsezoo", "magnitude_pruned")
# blm / blmpp: Bayesian-guided label mapping and BLM+ (lib.adapt.labelmap); smm: sample-specific
# masks (lib.adapt.prompt, whose PROMPTS it holds); additive: CLIP's (AdditivePrompt, there).
MAPPINGS = ("ilm", "flm", "rlm", "linear", "blm", "blmpp")
PROMPTS = ("expansive", "pad", "additive", "smm")
# Where the expansive prompt is learned besides the border: auto = lower_triangle for abide
# (the paper's ABIDE.get_mask(): the connectivity image fills the strict upper triangle, the
# prompt the lower triangle and diagonal), border elsewhere.
PROMPT_MASKS = ("auto", "border", "lower_triangle")
BITS = (2, 3, 4, 5, 6, 7, 8, 32)
# Settings that do not change what a run computes: not part of its identity.
NOT_IN_KEY = ("wandb", "tensorboard", "num_workers", "data_root")
# Fields added with the CLIP / ViT arms: at these defaults they stay out of the identity, so
# the run keys of existing studies do not change.
LATER_FIELDS = {"prune_sparsity": 0.0, "templates": "seed", "optimizer": "adam"}
# The paper's scripts spell the networks differently; accepted on the command line.
NETWORK_ALIASES = {"LT": "ticket", "lt": "ticket", "random": "random_pruned"}


def _choices(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(map(str, allowed))}")


_TYPE_NAMES = {bool: "true or false", int: "an int", float: "a number", str: "a string"}


def _has_type(value: Any, kind: Any) -> bool:
    """Strict: a bool is not an int, a float is not an int, an int is a number."""
    if typing.get_origin(kind) is tuple:
        return isinstance(value, tuple | list) and all(_has_type(v, int) for v in value)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return not isinstance(kind, type) or isinstance(value, kind)


def check_fields(cls: type, values: dict[str, Any]) -> None:
    """Each value has the type its field of dataclass `cls` is annotated with (int, float,
    str, bool, tuple of ints); the error names the field, the value and the type it needs."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        kind = hints.get(name)
        if kind is not None and not _has_type(value, kind):
            needed = _TYPE_NAMES.get(kind, "a list of ints")
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise ValueError(f"{name} must be {needed}, got {shown} ({type(value).__name__})")
        if kind is float and not math.isfinite(value):  # `.inf` / `.nan` are YAML floats
            raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_source_axis(configs: list[ExperimentConfig]) -> None:
    """Several source_seed values must load several source models: a pretrained_dir without
    "{source_seed}" gives each of them the same files, labelled as different sources (and a
    bootstrap over sources that resamples one model)."""
    seeds: dict[str, set[int]] = {}
    for cfg in configs:
        if "{source_seed}" not in cfg.pretrained_dir:
            seeds.setdefault(cfg.pretrained_dir, set()).add(cfg.source_seed)
    for folder, values in seeds.items():
        if len(values) > 1:
            raise ValueError(
                f"source_seed {sorted(values)} with pretrained_dir {folder!r}, which lacks "
                "'{source_seed}': every source seed would load the same files; put "
                "'{source_seed}' in pretrained_dir or keep one source_seed"
            )


def check_types(config: Any) -> None:
    """check_fields over every field of the dataclass instance `config`."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    check_fields(type(config), values)


def _at_least(name: str, value: Any, low: float, note: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise ValueError(f"{name} must be a number >= {low}{note}, got {value!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Defaults are the mini study's; paper-scale values live in params/paper.yaml."""

    study: str = "adhoc"  # folder under outputs/ that collects the records
    dataset: str = "mnist"  # target dataset (lib.datasets.registry.DATASETS)
    data_root: str = ""  # "" = $SPARSE_VP_DATA or outputs/data
    arch: str = "cifar_resnet_20_8"  # source architecture (lib.models.backbone.ARCHS, clip_*, ViTs)
    network: str = "dense"  # NETWORKS: dense | ticket | ... | magnitude_pruned (CLIP, ViT)
    sparsity: int = 0  # IMP state k: the ticket keeps 0.8**k of its prunable weights
    # tickets live here; the default is the shipped release (params/tickets.yaml)
    pretrained_dir: str = "tickets/glyphs-v2/seed{source_seed}"
    source_seed: int = 0  # which IMP run (source model); "{source_seed}" in pretrained_dir
    weights: str = ""  # dense only: "" = state-0 checkpoint in pretrained_dir; or IMAGENET1K_V1..
    checkpoint: str = ""  # sparsezoo only: path of the sparse checkpoint
    weight_bits: int = 32  # quantized only: bits per weight (per output channel, symmetric)
    act_bits: int = 32  # quantized only: bits per activation after each ReLU
    method: str = "vp"  # lp (linear probe) | vp (visual prompt + label mapping)
    mapping: str = "ilm"  # vp only: ilm | flm | rlm | linear | blm | blmpp
    per_target: int = 1  # vp only: source classes averaged per target class
    mapping_interval: int = 1  # ilm: recompute the mapping every k epochs
    prompt: str = "expansive"  # vp only: expansive | pad | additive (CLIP) | smm (SMM masks)
    target_size: int = 0  # vp: inner image size; 0 = the dataset's (paper: 32 or 128)
    pad: int = 30  # pad prompter only: width of the learnable frame
    learn_scale: bool = False  # vp: learn the inner image size (AutoVP style)
    prompt_mask: str = "auto"  # vp expansive: auto | border | lower_triangle (PROMPT_MASKS)
    n_shot: int = -1  # training images per class; -1 = all
    n_shot_policy: str = "strict"  # a class under n_shot images: strict (refuse) | at_most (paper)
    selection: str = "val"  # epoch + temperature: val | last | test (the paper's, optimistic)
    val_shots: str = "n_shot"  # n-shot validation per class: n_shot (<= n) | coop (min(n, 4))
    split: str = "coop"  # paper datasets' partition: coop | seed (the paper's prepare_data.py)
    max_train: int = -1  # cap on the training set after n-shot sampling; -1 = none
    train_pool: int = -1  # use a fixed stratified subset of the training split; -1 = all
    max_test: int = -1  # use a fixed stratified subset of the test split; -1 = all
    seed: int = 1  # seeds sampling, init and data order
    epochs: int = 10  # paper: 100 (with patience, the most epochs)
    schedule: str = "multistep"  # multistep (the paper: x0.1 at 50%, 72%) | cosine
    patience: int = 0  # stop after this many epochs without better val accuracy; 0 = never
    lr: float = 0.01  # Adam, as the paper
    batch_size: int = 128  # as the paper
    val_fraction: float = 0.1  # stratified validation split carved from train
    max_val: int = 1000  # cap on the validation split (selection + temperature fit)
    n_bins: int = 15  # calibration bins, as the paper
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 0  # DataLoader workers (paper-scale image folders)
    wandb: bool = False  # log to Weights & Biases with the paper's keys (optional)
    tensorboard: bool = False  # log to TensorBoard under outputs/<study>/tensorboard (optional)
    prune_sparsity: float = 0.0  # magnitude_pruned only: fraction of weights removed, one shot
    templates: str = "seed"  # CLIP only: seed (ilm_clip.py's 81, every dataset) | dataset
    optimizer: str = "adam"  # vp: adam (the paper) | sgd (momentum 0.9, ilm_clip.py)

    def __post_init__(self) -> None:
        from lib.datasets.paper import PARTITIONS
        from lib.datasets.registry import DATASETS
        from lib.datasets.sampling import N_SHOT_POLICIES, SELECTIONS, VAL_SHOTS
        from lib.models.backbone import source_size
        from lib.models.sources import source_kind

        check_types(self)  # before any comparison: `sparsity: true` is not state 1
        check_name(self.study)  # a folder under the outputs root, never a path
        _choices("dataset", self.dataset, DATASETS)
        source_size(self.arch)  # validates the name (ARCHS or cifar_resnet_N[_W])
        _choices("network", self.network, NETWORKS)
        _choices("method", self.method, METHODS)
        _choices("mapping", self.mapping, MAPPINGS)
        _choices("prompt", self.prompt, PROMPTS)
        _choices("weight_bits", self.weight_bits, BITS)
        _choices("act_bits", self.act_bits, BITS)
        _choices("device", self.device, ("auto", "cpu", "cuda"))
        _choices("schedule", self.schedule, SCHEDULES)
        _choices("optimizer", self.optimizer, OPTIMIZERS)
        from lib.models.clip import check_config as check_clip

        check_clip(self)  # templates, the additive prompt (the network: lib.models.sources)
        if not 0 <= self.prune_sparsity < 1:
            raise ValueError(f"prune_sparsity must be in (0, 1), got {self.prune_sparsity!r}")
        if self.schedule == "cosine_step" and self.method != "vp":
            raise ValueError("schedule 'cosine_step' (per batch) is for method 'vp'")
        if self.optimizer != "adam" and self.method != "vp":
            raise ValueError(f"optimizer {self.optimizer!r} is for method 'vp'; LP uses adam")
        _choices("n_shot_policy", self.n_shot_policy, N_SHOT_POLICIES)
        _choices("selection", self.selection, SELECTIONS)
        _choices("val_shots", self.val_shots, VAL_SHOTS)
        _choices("split", self.split, PARTITIONS)
        _choices("prompt_mask", self.prompt_mask, PROMPT_MASKS)
        if self.prompt_mask == "lower_triangle" and (
            self.method != "vp" or self.prompt != "expansive" or self.learn_scale
        ):
            raise ValueError(
                "prompt_mask 'lower_triangle' needs method 'vp', prompt 'expansive' and "
                "learn_scale False; choose prompt_mask 'auto' or 'border'"
            )
        if not isinstance(self.sparsity, int) or not 0 <= self.sparsity <= 30:
            raise ValueError(f"sparsity state must be an int in 0..30, got {self.sparsity!r}")
        source_kind(self).validate(self)  # what the network kind needs (lib.models.sources)
        if self.wandb and importlib.util.find_spec("wandb") is None:
            raise ValueError("wandb=True needs the wandb package: pip install wandb")
        if self.n_shot != -1:
            _at_least("n_shot", self.n_shot, 1, " (or -1 for all)")
        for name in ("max_train", "train_pool", "max_test"):
            if getattr(self, name) != -1:
                _at_least(name, getattr(self, name), 1, " (or -1 for no cap)")
        _at_least("epochs", self.epochs, 1)
        _at_least("patience", self.patience, 0)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("per_target", self.per_target, 1)
        _at_least("mapping_interval", self.mapping_interval, 1)
        _at_least("n_bins", self.n_bins, 2)
        _at_least("max_val", self.max_val, 1)
        _at_least("num_workers", self.num_workers, 0)
        _at_least("seed", self.seed, 0)
        _at_least("source_seed", self.source_seed, 0)
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.val_fraction, float) and 0 < self.val_fraction < 1):
            raise ValueError(f"val_fraction must be a float in (0, 1), got {self.val_fraction!r}")
        if self.method == "vp" and self.prompt == "expansive":
            if self.target_size < 0 or self.target_size > self.source_size:
                raise ValueError(
                    f"target_size {self.target_size} must be in 1..{self.source_size} "
                    f"(the source size of {self.arch}), or 0 for the dataset's default"
                )
        if self.method == "vp" and self.prompt == "smm" and self.learn_scale:
            raise ValueError(
                "prompt 'smm' resizes the image to the source size (no inner image to scale): "
                "learn_scale must be False, or choose prompt 'expansive'"
            )
        if (
            self.method == "vp"
            and self.prompt in ("pad", "additive")
            and not 0 < 2 * self.pad < self.source_size
        ):
            raise ValueError(f"pad {self.pad} must be in 1..{(self.source_size - 1) // 2}")

    # Derived values: computed from fields, never set by hand.
    @property
    def source_size(self) -> int:
        from lib.models.backbone import source_size

        return source_size(self.arch)

    @property
    def input_size(self) -> int:
        """Size the images are loaded at: the source size for LP, the inner size for VP."""
        from lib.datasets.registry import get_spec

        if self.method == "lp" or self.prompt in ("pad", "additive", "smm"):
            return self.source_size
        return self.target_size or min(get_spec(self.dataset).vp_size, self.source_size)

    @property
    def inner_mask(self) -> str:
        """Where the prompt is learned inside the image: "none" or "lower_triangle"."""
        if self.method != "vp" or self.prompt != "expansive" or self.learn_scale:
            return "none"
        if self.prompt_mask == "lower_triangle" or (
            self.prompt_mask == "auto" and self.dataset == "abide"
        ):
            return "lower_triangle"
        return "none"

    @property
    def seed_test_batch_size(self) -> int:
        """The paper's test batch for this dataset and method (its legacy ECE sums per batch)."""
        from lib.datasets.paper import seed_test_batch_size

        return seed_test_batch_size(self.dataset, self.method, self.batch_size)

    @property
    def pretrained_path(self) -> Path:
        """pretrained_dir resolved (lib.core.utils.resolve_path): never relative to the cwd."""
        from lib.core.utils import resolve_path

        return resolve_path(self.pretrained_dir.replace("{source_seed}", str(self.source_seed)))

    @property
    def root(self) -> Path:
        from lib.core.utils import data_root

        return Path(self.data_root) if self.data_root else data_root()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that change what the run computes (its run key's hash)."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if k not in NOT_IN_KEY and not (k in LATER_FIELDS and v == LATER_FIELDS[k])
        }

    @property
    def run_key(self) -> str:
        """Readable, unique name of the run: what varies in studies, plus a hash of the rest."""
        digest = hashlib.sha1(
            json.dumps(self.identity(), sort_keys=True, default=str).encode()
        ).hexdigest()[:8]
        from lib.models.sources import source_kind

        net = source_kind(self).run_name(self)
        method = self.method if self.method == "lp" else f"vp-{self.mapping}"
        if self.method == "vp" and self.prompt == "smm":
            method += "-smm"  # the other prompts keep their (older) keys
        shots = "full" if self.n_shot == -1 else f"{self.n_shot}shot"
        return f"{self.dataset}-{net}-{method}-{shots}-s{self.seed}-{digest}"

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> ExperimentConfig:
        """Build from a params mapping; unknown keys are an error, not silently ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(map(repr, unknown))}; "
                f"choose from: {', '.join(sorted(known))}"
            )
        params = dict(params)
        if "network" in params:
            params["network"] = NETWORK_ALIASES.get(params["network"], params["network"])
        if isinstance(params.get("val_fraction"), int):
            params["val_fraction"] = float(params["val_fraction"])
        return cls(**params)
