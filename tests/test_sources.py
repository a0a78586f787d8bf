"""The registry of source-network kinds (lib.models.sources) and the one function that
applies masks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from lib.models.backbone import create_backbone, sparsity
from lib.models.masks import Mask, apply_mask
from lib.models.sources import SOURCES, paper_source, source_kind
from lib.study.config import NETWORKS, ExperimentConfig

LIB = Path(__file__).resolve().parents[1] / "lib"


def test_every_network_of_the_config_is_a_registered_kind() -> None:
    assert tuple(SOURCES) == NETWORKS


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"network": "dense"}, "dense"),
        ({"network": "ticket", "sparsity": 2}, "lt2"),
        ({"network": "random_pruned", "sparsity": 2}, "random_pruned2"),
        (
            {"network": "quantized", "sparsity": 2, "weight_bits": 4, "act_bits": 4},
            "quantized2w4a4",
        ),
        ({"network": "sparsezoo", "checkpoint": "x.pth"}, "sparsezoo"),
    ],
)
def test_run_keys_name_the_network_as_before(params, name) -> None:
    cfg = ExperimentConfig(dataset="digits", **params)
    assert cfg.run_key.split("-")[1] == name


def test_files_per_kind(tickets) -> None:
    base = dict(dataset="digits", pretrained_dir=str(tickets))
    ticket = ExperimentConfig(network="ticket", sparsity=2, **base)
    random = ExperimentConfig(network="random_pruned", sparsity=2, **base)
    torchvision = ExperimentConfig(network="dense", arch="resnet18", weights="IMAGENET1K_V1")
    assert [p.name for p in source_kind(ticket).files(ticket)] == [
        f"{ticket.arch}_dyn4_2_checkpoint.pth",
        f"{ticket.arch}_dyn4_2_mask.pth",
    ]
    assert "_random_2_" in source_kind(random).files(random)[0].name
    assert source_kind(torchvision).files(torchvision) == []
    assert source_kind(ticket).missing(ticket) == []


def test_kinds_load_what_they_name(tickets) -> None:
    base = dict(dataset="digits", pretrained_dir=str(tickets), sparsity=2)
    ticket = ExperimentConfig(network="ticket", **base)
    model = source_kind(ticket).load(ticket)
    assert abs(sparsity(model) - (1 - 0.8**2)) < 0.01
    quantized = ExperimentConfig(network="quantized", weight_bits=4, act_bits=32, **base)
    kind = source_kind(quantized)
    assert kind.quantized and not source_kind(ticket).quantized
    q = kind.load(quantized)
    rows = dict(q.named_parameters())["fc.weight"].detach()
    assert max(len(r.unique()) for r in rows) <= 2**4  # 4-bit weights per output channel
    assert source_kind(ticket).classes(ticket, 45)[:3] == ["0", "1", "2"]  # classes.json


def test_kind_checks_are_config_errors() -> None:
    with pytest.raises(ValueError, match="network 'dense' has sparsity state 0, got 3"):
        ExperimentConfig(network="dense", sparsity=3)
    with pytest.raises(ValueError, match="network 'quantized' needs weight_bits or act_bits"):
        ExperimentConfig(network="quantized")
    with pytest.raises(ValueError, match="network 'sparsezoo' needs checkpoint="):
        ExperimentConfig(network="sparsezoo")


def test_paper_source_defaults() -> None:
    assert paper_source("dense", "resnet50", "", None, 9) == ("IMAGENET1K_V2", 0)
    assert paper_source("ticket", "resnet50", "", None, 9) == ("", 9)
    assert paper_source("ticket", "resnet50", "", 4, 9) == ("", 4)


def _network_comparisons(path: Path) -> list[int]:
    """Lines of `path` that compare something's `.network` to a value."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "network" for s in sides):
                lines.append(node.lineno)
    return lines


def test_network_is_compared_in_the_sources_module_only() -> None:
    found = {str(p.relative_to(LIB)): _network_comparisons(p) for p in LIB.rglob("*.py")}
    assert "models/sources.py" in found
    assert {name for name, lines in found.items() if lines} <= {"models/sources.py"}, found


def _mask_multiplications(path: Path) -> list[str]:
    """Functions of `path` that multiply tensors by something named like a mask in place or
    by `*` (the ways masks are applied)."""
    hits = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            text = ast.unparse(node) if isinstance(node, ast.Call | ast.BinOp) else ""
            if isinstance(node, ast.Call) and text.split("(")[0].endswith("mul_"):
                hits.append(fn.name)
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and "mask" in text:
                hits.append(fn.name)
    return hits


def test_one_function_applies_masks() -> None:
    found = {str(p.relative_to(LIB)): _mask_multiplications(p) for p in LIB.rglob("*.py")}
    appliers = {(name, fn) for name, fns in found.items() for fn in fns}
    # the prompts multiply their learnable border by its (fixed) region, not a weight mask;
    # prune._count multiplies a fraction by the mask's count of surviving weights
    appliers -= {
        ("adapt/prompt.py", "forward"),
        ("adapt/prompt.py", "pattern"),
        ("models/prune.py", "_count"),
    }
    assert appliers == {("models/masks.py", "apply_mask")}


def test_apply_mask_checks_then_zeroes_a_model_or_a_state_dict() -> None:
    model = create_backbone("cifar_resnet_20_8", num_classes=4)
    mask = Mask.ones_like(model)
    mask["fc.weight"] = torch.zeros_like(mask["fc.weight"])
    apply_mask(model, mask)
    assert not model.fc.weight.any()
    state = {"w": torch.ones(2, 2), "b": torch.ones(2)}
    apply_mask(state, Mask({"w": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}))
    assert state["w"].tolist() == [[1, 0], [0, 1]] and state["b"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="mask names are not tensors of the state dict: v"):
        apply_mask(state, Mask({"v": torch.ones(2)}))
    with pytest.raises(ValueError, match="mask shapes differ"):
        apply_mask(state, Mask({"b": torch.ones(3)}))


def test_prune_pairs_in_a_checkpoint_are_folded_by_apply_mask(tmp_path) -> None:
    model = create_backbone("cifar_resnet_20_8", num_classes=4)
    state = model.state_dict()
    weight = state.pop("fc.weight")
    mask = (torch.rand_like(weight) > 0.5).float()
    state["fc.weight_orig"], state["fc.weight_mask"] = weight, mask
    torch.save(state, tmp_path / "pruned.pth")
    loaded = create_backbone("cifar_resnet_20_8", weights=tmp_path / "pruned.pth")
    assert torch.equal(loaded.fc.weight, weight * mask)
