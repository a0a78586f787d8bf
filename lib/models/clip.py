"""CLIP sources through open_clip: a zero-shot text classifier as ILM-VP's "source classes",
image features for LP, the seed's additive prompt, and compressed CLIP (magnitude pruning of
the image tower, or a given pruned checkpoint).

    from lib.models.clip import create_clip, clip_classifier
    model = create_clip("clip_vit_b32", "openai", "pretrained/clip")   # hub, or the local file
    source = clip_classifier(model, "clip_vit_b32", ["cat", "dog"], templates="seed")

As the seed's experiments/ilm_clip.py: the "source classes" are the text embeddings of every
(template, class) pair, template-major (T0 c0, T0 c1, ..., T1 c0, ...); ILM maps each target
class to one of them (so its own-class fraction is informative); logits are
exp(logit_scale) * cos(image, text). The prompt is a frame of width 30 added to the
CLIP-normalized image at the model's input size; SGD (momentum 0.9, lr 40), cosine decay over
all steps, 10 epochs, batch 16 (train_clip.sh).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lib.models.archs import (  # noqa: F401 - re-exported: lib.models.clip's names stay importable
    CLIP_ARCHS,
    CLIP_MEAN,
    CLIP_STD,
    is_clip,
    source_size,
)
from lib.models.archs import clip_model_config as model_config  # noqa: F401
from lib.models.archs import open_clip_module as _open_clip
from lib.models.backbone import _load_strict, _read_state_dict
from lib.models.checkpoints import CheckpointError
from lib.models.masks import Mask, apply_mask, prunable_names, prune

ADDITIVE_PAD = 30  # ilm_clip.py: AdditiveVisualPrompt(size, 30)
# ilm_clip.py's recipe (SGD momentum 0.9, lr 40, cosine over all steps, 10 epochs; batch 16
# from train_clip.sh), recorded with every CLIP VP run.
SEED_RECIPE: dict[str, Any] = {
    "optimizer": "sgd",
    "momentum": 0.9,
    "lr": 40.0,
    "schedule": "cosine_step",
    "epochs": 10,
    "batch_size": 16,
    "source": "experiments/ilm_clip.py, train_clip.sh",
}

# The seed's templates (tools/clip/templates.py): its default, then CLIP's 80 ImageNet
# templates; the same list for every dataset.
DEFAULT_TEMPLATE = "This is a photo of a {}."
IMAGENET_TEMPLATES: tuple[str, ...] = tuple(
    t + "."
    for t in (
        "a bad photo of a {}|a photo of many {}|a sculpture of a {}|a photo of the hard to see {}"
        "|a low resolution photo of the {}|a rendering of a {}|graffiti of a {}"
        "|a bad photo of the {}|a cropped photo of the {}|a tattoo of a {}|the embroidered {}"
        "|a photo of a hard to see {}|a bright photo of a {}|a photo of a clean {}"
        "|a photo of a dirty {}|a dark photo of the {}|a drawing of a {}|a photo of my {}"
        "|the plastic {}|a photo of the cool {}|a close-up photo of a {}"
        "|a black and white photo of the {}|a painting of the {}|a painting of a {}"
        "|a pixelated photo of the {}|a sculpture of the {}|a bright photo of the {}"
        "|a cropped photo of a {}|a plastic {}|a photo of the dirty {}"
        "|a jpeg corrupted photo of a {}|a blurry photo of the {}|a photo of the {}"
        "|a good photo of the {}|a rendering of the {}|a {} in a video game|a photo of one {}"
        "|a doodle of a {}|a close-up photo of the {}|a photo of a {}|the origami {}"
        "|the {} in a video game|a sketch of a {}|a doodle of the {}|a origami {}"
        "|a low resolution photo of a {}|the toy {}|a rendition of the {}"
        "|a photo of the clean {}|a photo of a large {}|a rendition of a {}"
        "|a photo of a nice {}|a photo of a weird {}|a blurry photo of a {}|a cartoon {}"
        "|art of a {}|a sketch of the {}|a embroidered {}|a pixelated photo of a {}"
        "|itap of the {}|a jpeg corrupted photo of the {}|a good photo of a {}|a plushie {}"
        "|a photo of the nice {}|a photo of the small {}|a photo of the weird {}"
        "|the cartoon {}|art of the {}|a drawing of the {}|a photo of the large {}"
        "|a black and white photo of a {}|the plushie {}|a dark photo of a {}|itap of a {}"
        "|graffiti of the {}|a toy {}|itap of my {}|a photo of a cool {}"
        "|a photo of a small {}|a tattoo of the {}"
    ).split("|")
)
SEED_TEMPLATES: tuple[str, ...] = (DEFAULT_TEMPLATE, *IMAGENET_TEMPLATES)
# One template per dataset (CoOp's / CLIP's dataset prompts); "a photo of a {}." elsewhere.
DATASET_TEMPLATES: dict[str, str] = {
    "oxfordpets": "a photo of a {}, a type of pet.",
    "flowers102": "a photo of a {}, a type of flower.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "food101": "a photo of {}, a type of food.",
    "ucf101": "a photo of a person doing {}.",
    "gtsrb": 'a zoomed in photo of a "{}" traffic sign.',
    "svhn": 'a photo of the number: "{}".',
    "mnist": 'a photo of the number: "{}".',
    "digits": 'a photo of the number: "{}".',
    "fashion_mnist": "a photo of a {}, a type of clothing.",
    "abide": "a brain connectivity matrix of a {} subject.",
}
TEMPLATE_SETS = ("seed", "dataset")


def register_clip(arch: str, model_name: str, config: dict[str, Any], tag: str = "") -> None:
    """Add an open_clip model config (a dict as in open_clip's model_configs/*.json) under
    `model_name`, reachable as `arch` (tests build tiny CLIPs this way)."""
    from open_clip import factory

    factory._MODEL_CONFIGS[model_name] = config
    CLIP_ARCHS[arch] = (model_name, tag)


def local_weights_file(arch: str, folder: str | os.PathLike, tag: str = "") -> Path:
    """Where the hub weights of `arch` are read offline: {folder}/{arch}_{tag}.pt."""
    return Path(folder) / f"{arch}_{tag or CLIP_ARCHS[arch][1]}.pt"


def is_file_name(weights: str) -> bool:
    return bool(Path(weights).suffix) or os.sep in weights


def create_clip(
    arch: str, weights: str | os.PathLike | None, folder: str | os.PathLike = "pretrained/clip"
) -> nn.Module:
    """The open_clip model of `arch`: weights None = random init; a path = an open_clip state
    dict (plain or wrapped, loaded strictly); "" or a tag = the hub weights, read from
    local_weights_file(arch, folder) when it exists, else downloaded (fails naming the file)."""
    if arch not in CLIP_ARCHS:
        raise ValueError(f"unknown CLIP arch {arch!r}; choose one of: {', '.join(CLIP_ARCHS)}")
    open_clip = _open_clip()
    name, default_tag = CLIP_ARCHS[arch]
    model = open_clip.create_model(name, pretrained=None, device="cpu")
    if weights is None:
        return model.eval()
    weights = str(weights)
    if is_file_name(weights):
        return _load_strict(model, _read_state_dict(weights), weights).eval()
    tag = weights or default_tag
    local = local_weights_file(arch, folder, tag)
    if local.is_file():
        return _load_strict(model, _read_state_dict(local), local).eval()
    try:
        return open_clip.create_model(name, pretrained=tag, device="cpu").eval()
    except Exception as err:  # offline machines land here: say exactly what to do
        cfg = open_clip.get_pretrained_cfg(name, tag) or {}
        where = cfg.get("hf_hub") or cfg.get("url") or "the open_clip hub"
        raise CheckpointError(
            f"{local}: CLIP weights {name} {tag!r} are not available and the download failed "
            f"({type(err).__name__}: {str(err)[:200]}); fetch them from {where} elsewhere, save "
            f"the state dict (torch.save(model.state_dict())) at {local}, or set weights to "
            "the path of an open_clip state-dict file"
        ) from err


def class_names(dataset: str, root: str | os.PathLike, partition: str = "coop") -> list[str]:
    """The dataset's class names as the seed writes them in prompts (lower case, no _ or -)."""
    from lib.datasets.registry import get_dataset, get_spec

    spec = get_spec(dataset)
    names = spec.classes
    if names is None:
        size = spec.image_size or 32
        names = get_dataset(dataset, "test", root, image_size=size, partition=partition).classes
    return [n.split(" - ")[0].lower().replace("_", " ").replace("-", " ") for n in names]


def templates_for(dataset: str, which: str) -> tuple[str, ...]:
    """The seed's 81 templates ("seed") or the dataset's own one ("dataset")."""
    if which not in TEMPLATE_SETS:
        raise ValueError(f"unknown templates {which!r}; choose one of: {', '.join(TEMPLATE_SETS)}")
    if which == "seed":
        return SEED_TEMPLATES
    return (DATASET_TEMPLATES.get(dataset, "a photo of a {}."),)


@torch.no_grad()
def text_embeddings(
    model: nn.Module, arch: str, names: list[str], templates: tuple[str, ...], batch: int = 256
) -> Tensor:
    """L2-normalized text embeddings [T * C, D], template-major as the seed."""
    tokenizer = _open_clip().get_tokenizer(CLIP_ARCHS[arch][0])
    texts = [t.format(n) for t in templates for n in names]
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch):
        emb = model.encode_text(tokenizer(texts[start : start + batch]).to(device)).float()
        out.append(emb / emb.norm(dim=-1, keepdim=True))
    return torch.cat(out).cpu()


class ImageFeatures(nn.Module):
    """CLIP image tower -> L2-normalized embedding [N, D]: LP's features."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, x: Tensor) -> Tensor:
        emb = self.visual(x)
        return emb / emb.norm(dim=-1, keepdim=True)


class CLIPClassifier(nn.Module):
    """Zero-shot classifier over text prompts: exp(logit_scale) * cos(image, text)."""

    def __init__(self, visual: nn.Module, text: Tensor, logit_scale: float, names: list[str]):
        super().__init__()
        self.features = ImageFeatures(visual)
        self.head = nn.Linear(text.shape[1], text.shape[0], bias=False)
        with torch.no_grad():
            self.head.weight.copy_(text * logit_scale)
        self.logit_scale = logit_scale
        self.names = names  # the class name of every source class (text prompt)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def split_features(self) -> tuple[nn.Module, nn.Linear]:
        return self.features, self.head


def clip_classifier(
    model: nn.Module, arch: str, names: list[str], templates: tuple[str, ...]
) -> CLIPClassifier:
    """The image tower of `model` with the text classifier of `names` x `templates` (the text
    tower is dropped afterwards: only the image tower runs during transfer)."""
    text = text_embeddings(model, arch, names, templates)
    scale = float(model.logit_scale.detach().clamp(0, 4.6052).exp())  # the seed's clamp
    return CLIPClassifier(model.visual, text, scale, [n for _ in templates for n in names])


def prune_image_tower(model: nn.Module, sparsity: float) -> Mask:
    """One-shot global magnitude pruning of the image tower's conv, linear and attention
    projection weights to `sparsity` (lib.models.prune.prune: one threshold over all of them); the
    mask is applied in place and returned (names relative to `model`)."""
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"prune_sparsity must be in (0, 1), got {sparsity!r}")
    params = dict(model.named_parameters())
    names = [n for n in prunable_names(model) if n.startswith(("visual.", "features.visual."))]
    mask = prune(model, Mask({n: torch.ones_like(params[n]) for n in names}), sparsity)
    apply_mask(model, mask)
    return mask


# ---------------------------------------------------------------- experiment hooks


def check_config(cfg: Any) -> None:
    """The CLIP-specific rules of an ExperimentConfig besides its network (lib.models.sources)."""
    if not is_clip(cfg.arch):
        if cfg.prompt == "additive":
            raise ValueError(f"prompt 'additive' is CLIP's (arch clip_*), got arch {cfg.arch!r}")
        return
    if cfg.templates not in TEMPLATE_SETS:
        raise ValueError(
            f"unknown templates {cfg.templates!r}; choose one of: {', '.join(TEMPLATE_SETS)}"
        )


def from_hub(cfg: Any) -> bool:
    """The config's weights are a hub tag (read from the local file when it is there)."""
    return not (cfg.weights and is_file_name(cfg.weights))


def weights_file(cfg: Any) -> Path:
    """The weights file a CLIP config reads: the given file, or the hub weights' local copy."""
    from lib.core.utils import resolve_path

    if not from_hub(cfg):
        return resolve_path(cfg.weights)
    return local_weights_file(cfg.arch, cfg.pretrained_path, cfg.weights)


def hub_note(cfg: Any) -> str:
    return f" (or the open_clip hub: {CLIP_ARCHS[cfg.arch][0]} {cfg.weights or 'openai'})"


def source_class_names(cfg: Any, num_source: int) -> list[str]:
    """The text prompts' class names, template-major (the source classes ILM maps to)."""
    names = class_names(cfg.dataset, cfg.root, cfg.split)
    return [n for _ in range(num_source // len(names)) for n in names]


def classifier_for(cfg: Any, model: nn.Module) -> CLIPClassifier:
    """The CLIP classifier of `model` over the config's dataset's text prompts."""
    names = class_names(cfg.dataset, cfg.root, cfg.split)
    # LP reads the image features only: one template is enough for its (unused) head.
    templates = templates_for(cfg.dataset, cfg.templates) if cfg.method == "vp" else ("{}",)
    return clip_classifier(model, cfg.arch, names, templates)


def recipe(cfg: Any) -> dict[str, Any]:
    """What the run's record says about its optimizer and schedule."""
    momentum = 0.9 if cfg.optimizer == "sgd" else None
    seed = is_clip(cfg.arch) and cfg.method == "vp"  # ilm_clip.py's recipe is for VP
    matches = all(
        getattr(cfg, k) == SEED_RECIPE[k] for k in ("optimizer", "lr", "schedule", "epochs")
    )
    return {
        "optimizer": cfg.optimizer,
        "momentum": momentum,
        "lr": cfg.lr,
        "schedule": cfg.schedule,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "seed_recipe": dict(SEED_RECIPE) if seed else None,
        "is_seed_recipe": matches if seed else None,
    }
