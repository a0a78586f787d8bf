"""Source training loop: it learns, masked training keeps pruned weights at zero."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from lib.core.utils import project_root
from lib.models.backbone import Mask, create_backbone
from lib.models.pretrain import SourceConfig, evaluate_classifier, train_classifier
from lib.models.prune import random_prune


def _separable(n: int = 96, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 3, 8, 8, generator=g) * 0.5
    images[labels == 1, 1] += 0.5  # class 1 is greener
    return TensorDataset(images, labels)


def test_training_learns_and_reports_history() -> None:
    torch.manual_seed(0)
    model = create_backbone("cifar_resnet_8", num_classes=2)
    data = _separable()
    before = evaluate_classifier(model, data)
    history = train_classifier(model, data, epochs=3, batch_size=32, lr=0.05)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) == {"epoch", "loss", "accuracy", "seconds"}
    assert history[-1]["loss"] < history[0]["loss"]
    assert evaluate_classifier(model, data) >= max(before, 0.9)


def test_masked_training_keeps_pruned_weights_at_zero() -> None:
    torch.manual_seed(1)
    model = create_backbone("cifar_resnet_8", num_classes=2)
    mask = random_prune(Mask.ones_like(model), 0.7, seed=0)
    steps = []
    train_classifier(
        model,
        _separable(),
        epochs=2,
        batch_size=32,
        mask=mask,
        on_step=lambda step, m: steps.append(step),
    )
    params = dict(model.named_parameters())
    for name, m in mask.items():
        assert bool((params[name][m == 0] == 0).all()), name
        assert bool((params[name][m == 1] != 0).any()), name  # survivors did train
    assert steps == list(range(1, 7))  # 96 / 32 = 3 steps per epoch


def test_uint8_images_are_scaled() -> None:
    data = _separable()
    as_uint8 = TensorDataset((data.tensors[0] * 255).round().to(torch.uint8), data.tensors[1])
    model = create_backbone("cifar_resnet_8", num_classes=2).eval()
    assert evaluate_classifier(model, as_uint8) == pytest.approx(
        evaluate_classifier(model, data), abs=0.05
    )


def test_rejects_zero_epochs() -> None:
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        train_classifier(create_backbone("cifar_resnet_8", num_classes=2), _separable(), 0)


def test_source_config_validation_and_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path))
    cfg = SourceConfig()
    assert cfg.output_path == tmp_path / "checkpoints" / "glyphs_cifar_resnet_20_8"
    assert list(cfg.imp_kwargs()["states"]) == list(range(cfg.max_state + 1))
    assert SourceConfig(out_dir="/abs/x").output_path == Path("/abs/x")
    with pytest.raises(ValueError, match="unknown architecture 'resnet7'"):
        SourceConfig(arch="resnet7")
    with pytest.raises(ValueError, match="unknown dataset 'glyph'; choose one of: .*glyphs"):
        SourceConfig(dataset="glyph")
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 1.5"):
        SourceConfig(epochs=1.5)
    with pytest.raises(ValueError, match=r"random_states \(21,\) must lie in 1..max_state \(20\)"):
        SourceConfig(random_states=(21,))


# The notebook opened in JupyterLab previews IMP in a minute or two (issue 40); every other
# default is SourceConfig's, and whatever runs it for a study injects every parameter.
PREVIEW = {
    "num_classes": 10, "per_class": 100, "test_per_class": 20, "epochs": 8, "lr": 0.05,
    "batch_size": 32, "rewind_iter": 10, "max_state": 1, "random_states": [1],
    "out_dir": "outputs/checkpoints/preview",
}  # fmt: skip


def _notebook_defaults() -> dict:
    notebook = json.loads((project_root() / "notebooks" / "pretrain_source.ipynb").read_text())
    (cell,) = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    values: dict = {}
    exec("".join(cell["source"]), {}, values)  # the parameters cell: plain assignments
    values.pop("__annotations__", None)
    return values


def test_pretrain_notebook_defaults_are_the_source_config_defaults_but_the_preview() -> None:
    """The notebook run by hand and SourceConfig() differ only where the preview is quicker."""
    expected = asdict(SourceConfig())
    expected["random_states"] = list(expected["random_states"])
    assert _notebook_defaults() == {**expected, **PREVIEW}
    SourceConfig(**PREVIEW)  # a valid config


def test_the_sweep_and_make_tickets_inject_every_pretrain_parameter() -> None:
    """So the notebook's preview defaults never reach a study's source or a shipped ticket."""
    import yaml

    from lib.study.stages import pretrain_parameters
    from lib.study.tickets import pretrain_parameters as ticket_parameters

    names = set(_notebook_defaults())
    smoke = yaml.safe_load((project_root() / "params" / "smoke.yaml").read_text())["pretrain"]
    assert pretrain_parameters(smoke) == {
        **asdict(SourceConfig(**smoke)),
        "random_states": list(smoke["random_states"]),
    }
    assert set(pretrain_parameters(smoke)) == names
    spec = yaml.safe_load((project_root() / "params" / "tickets.yaml").read_text())
    assert set(ticket_parameters(spec["pretrain"], 0, Path("seed0"))) == names


def test_shipped_ticket_recipe_is_the_source_config_default() -> None:
    """params/tickets.yaml (what the shipped tickets were made with) = SourceConfig()."""
    import yaml

    spec = yaml.safe_load((project_root() / "params" / "tickets.yaml").read_text())
    expected = asdict(SourceConfig())
    expected["random_states"] = list(expected["random_states"])
    assert spec["pretrain"] == {k: v for k, v in expected.items() if k not in ("seed", "out_dir")}
