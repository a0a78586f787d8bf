"""The transformer architecture families by name: which archs are CLIP (open_clip) and which
are ViTs (timm), and the facts lib.models.backbone needs about them (input size, statistics) without
importing the arms that build them.

    from lib.models.archs import family
    family("clip_vit_b32")   # "clip"; "deit_tiny" -> "vit"; "cifar_resnet_20" -> "cnn"

lib.models.clip and lib.models.vit build the models and import lib.models.backbone;
lib.models.backbone asks this module, so the two never import each other.
"""

from __future__ import annotations

from typing import Any

# arch -> (open_clip model name, pretrained tag on the hub). The paper's UPop checkpoints are
# CLIP ViT-L/14 (retrieval, COCO) at 336 px; the others are there for smaller budgets.
CLIP_ARCHS: dict[str, tuple[str, str]] = {
    "clip_vit_b32": ("ViT-B-32", "openai"),
    "clip_vit_b16": ("ViT-B-16", "openai"),
    "clip_vit_l14": ("ViT-L-14", "openai"),
    "clip_vit_l14_336": ("ViT-L-14-336", "openai"),
    "clip_rn50": ("RN50", "openai"),
}
# OpenAI CLIP's input statistics (open_clip.constants.OPENAI_DATASET_MEAN/STD).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# arch -> (timm model name, extra kwargs). Tests add tiny entries (lib.models.vit.register_vit).
VIT_ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "deit_tiny": ("deit_tiny_patch16_224", {}),
    "deit_small": ("deit_small_patch16_224", {}),
    "swin_tiny": ("swin_tiny_patch4_window7_224", {}),
}


def is_clip(arch: str) -> bool:
    return arch in CLIP_ARCHS


def is_vit(arch: str) -> bool:
    return arch in VIT_ARCHS


def family(arch: str) -> str:
    """ "clip" (open_clip), "vit" (timm) or "cnn" (lib.models.backbone's own registry)."""
    return "clip" if is_clip(arch) else "vit" if is_vit(arch) else "cnn"


def open_clip_module() -> Any:
    try:
        import open_clip
    except ImportError as err:  # an optional extra
        raise ImportError(
            "CLIP archs need open_clip: pip install -e '.[clip]' (open-clip-torch)"
        ) from err
    return open_clip


def timm_module() -> Any:
    try:
        import timm
    except ImportError as err:  # an optional extra
        raise ImportError("ViT archs need timm: pip install -e '.[clip]' (timm)") from err
    return timm


def clip_model_config(arch: str) -> dict[str, Any]:
    name = CLIP_ARCHS[arch][0]
    config = open_clip_module().get_model_config(name)
    if config is None:
        raise ValueError(f"open_clip has no model config {name!r} (arch {arch})")
    return config


def source_size(arch: str) -> int:
    """Input size of a CLIP image tower (open_clip's vision_cfg.image_size) or a timm ViT (224
    for DeiT/Swin; a tiny test model's img_size)."""
    if is_clip(arch):
        size = clip_model_config(arch)["vision_cfg"]["image_size"]
        return int(size if isinstance(size, int) else size[0])
    name, kwargs = VIT_ARCHS[arch]
    if "img_size" in kwargs:
        size = kwargs["img_size"]
        return int(size if isinstance(size, int) else size[0])
    cfg = timm_module().models.get_pretrained_cfg(name)
    return int(cfg.input_size[-1]) if cfg is not None else 224
