"""Backbone registry, features/head split, masks, and strict loading of ticket files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from lib.models.backbone import (
    ARCHS,
    CheckpointError,
    Mask,
    apply_mask,
    create_backbone,
    imagenet_classes,
    load_lottery_ticket,
    load_sparse_checkpoint,
    prunable_names,
    source_size,
    sparsity,
    sparsity_report,
    split_features,
    ticket_paths,
)


@pytest.mark.parametrize("arch", ARCHS)
def test_create_backbone_forward_and_split(arch: str) -> None:
    torch.manual_seed(0)
    model = create_backbone(arch, num_classes=7).eval()
    size = source_size(arch) if arch.startswith("cifar") else 64
    x = torch.randn(2, 3, size, size)
    features, head = split_features(model)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 7)
        assert torch.allclose(head(features(x)), out, atol=1e-5)
    assert isinstance(head, nn.Linear) and head.out_features == 7
    ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in features.parameters()} <= ids  # a view: shared, not copied
    assert id(head.weight) in ids


def test_default_classes_and_sizes() -> None:
    assert create_backbone("cifar_resnet_20").fc.out_features == 10
    assert create_backbone("resnet18").fc.out_features == 1000
    assert source_size("resnet50") == 224 and source_size("cifar_resnet_20") == 32
    wide = create_backbone("cifar_resnet_20_32")
    assert wide.fc.in_features == 128
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'.*resnet18"):
        create_backbone("resnet19")


def test_cifar_resnet_20_has_the_literature_shape() -> None:
    model = create_backbone("cifar_resnet_20")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 19  # first conv + 9 blocks x 2
    assert [c.out_channels for c in convs[1::6]] == [16, 32, 64]


def test_imagenet_weights_offline_error_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(CheckpointError) as err:
        create_backbone("resnet18", weights="imagenet")
    msg = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        create_backbone("resnet18", weights="IMAGENET1K_V9")


def test_imagenet_weights_from_the_hub_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    reference = create_backbone("resnet18")
    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = create_backbone("resnet18", num_classes=5, weights="IMAGENET1K_V1")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 5
    assert len(imagenet_classes()) == 1000 and imagenet_classes()[0] == "tench"


def test_weights_file_round_trip_with_wrapper(tmp_path) -> None:
    torch.manual_seed(2)
    model = create_backbone("cifar_resnet_20", num_classes=12)
    path = tmp_path / "dense.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    loaded = create_backbone("cifar_resnet_20", weights=path)
    assert loaded.fc.out_features == 12
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def _saved(tmp_path, state: dict, name: str = "ckpt.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_strict_loading_names_missing_unexpected_and_shapes(tmp_path) -> None:
    state = create_backbone("cifar_resnet_20").state_dict()
    missing = dict(state)
    del missing["blocks.0.conv1.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.0\.conv1\.weight") as err:
        load_sparse_checkpoint("cifar_resnet_20", _saved(tmp_path, missing, "m.pth"))
    assert "m.pth" in str(err.value)
    extra = {**state, "blocks.0.conv3.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected keys: blocks\.0\.conv3\.weight"):
        load_sparse_checkpoint("cifar_resnet_20", _saved(tmp_path, extra, "u.pth"))
    shape = {**state, "blocks.0.conv1.weight": torch.zeros(16, 16, 5, 5)}
    with pytest.raises(CheckpointError, match=r"shape mismatches.*blocks\.0\.conv1\.weight"):
        load_sparse_checkpoint("cifar_resnet_20", _saved(tmp_path, shape, "s.pth"))


@pytest.fixture(scope="module")
def ticket(tmp_path_factory) -> tuple[nn.Module, Mask, os.PathLike, os.PathLike]:
    """A resnet18 ticket written exactly as the paper's files: "model."-prefixed keys."""
    torch.manual_seed(3)
    model = create_backbone("resnet18", num_classes=10)
    with torch.no_grad():  # no exact zeros before masking, so zero counts are the mask's
        for p in model.parameters():
            p.add_(torch.where(p >= 0, 1e-3, -1e-3))
    params = dict(model.named_parameters())
    mask = Mask(
        {
            n: (torch.rand_like(params[n]) > 0.6).float()
            for n in prunable_names(model)
            if n != "fc.weight"
        }
    )
    ckpt, mask_path = ticket_paths(tmp_path_factory.mktemp("ticket"), "resnet18", 4)
    torch.save({f"model.{k}": v for k, v in model.state_dict().items()}, ckpt)
    torch.save({f"model.{k}": v for k, v in mask.items()}, mask_path)
    return model, mask, ckpt, mask_path


def test_lottery_ticket_round_trip_paper_format(ticket) -> None:
    model, mask, ckpt, mask_path = ticket
    assert ckpt.name == "resnet18_dyn4_4_checkpoint.pth"
    assert mask_path.name == "resnet18_dyn4_4_mask.pth"
    loaded = load_lottery_ticket("resnet18", ckpt, mask_path)
    assert loaded.fc.out_features == 10  # inferred from the checkpoint
    params = dict(loaded.named_parameters())
    for name, m in mask.items():
        assert torch.equal(params[name], dict(model.named_parameters())[name] * m)
    assert torch.equal(params["fc.weight"], model.fc.weight)  # not in the mask: dense
    kept = sum(float(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    report = sparsity_report(loaded)
    assert report["zeros"] == total - kept
    assert sparsity(loaded) == pytest.approx((total - kept) / report["total"])
    assert load_lottery_ticket("resnet18", ckpt, mask_path, num_classes=3).fc.out_features == 3


def test_mask_file_name_variants(tmp_path, ticket) -> None:
    _, mask, ckpt, _ = ticket
    # torch.nn.utils.prune style: "module." prefix and "weight_mask" suffix.
    variant = _saved(tmp_path, {f"module.{k}_mask": v for k, v in mask.items()}, "v.pth")
    assert set(Mask.load(variant)) == set(mask)
    load_lottery_ticket("resnet18", ckpt, variant)


def test_lottery_ticket_mask_that_does_not_fit(tmp_path, ticket) -> None:
    _, mask, ckpt, _ = ticket
    bad = {**mask, "bn1.weight": torch.ones(64)}
    with pytest.raises(CheckpointError, match=r"bad\.pth.*not prunable.*bn1\.weight"):
        load_lottery_ticket("resnet18", ckpt, _saved(tmp_path, bad, "bad.pth"))
    shape = {**mask, "conv1.weight": torch.ones(64, 3, 3, 3)}
    with pytest.raises(CheckpointError, match=r"shape\.pth.*conv1\.weight"):
        load_lottery_ticket("resnet18", ckpt, _saved(tmp_path, shape, "shape.pth"))


def test_corrupted_and_truncated_files(tmp_path, ticket) -> None:
    _, _, ckpt, mask_path = ticket
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(ckpt.read_bytes()[: os.path.getsize(ckpt) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: unreadable, truncated"):
        load_lottery_ticket("resnet18", truncated, mask_path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        Mask.load(garbage)
    with pytest.raises(CheckpointError, match=r"nothere\.pth: no such file"):
        load_sparse_checkpoint("resnet18", tmp_path / "nothere.pth")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/sparse_vp_pwned",))


def test_pickle_that_would_run_code_is_rejected(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Exploit()}, f, protocol=2)
    torch.save({"conv.weight": torch.zeros(1), "payload": _Exploit()}, tmp_path / "evil2.pth")
    for name in ("evil.pth", "evil2.pth"):
        with pytest.raises(CheckpointError, match=rf"{name}: refused to load"):
            load_sparse_checkpoint("cifar_resnet_20", tmp_path / name)
    assert not os.path.exists("/tmp/sparse_vp_pwned")


def test_mask_validation() -> None:
    with pytest.raises(ValueError, match=r"'a\.weight' has values other than 0 and 1.*0\.5"):
        Mask({"a.weight": torch.tensor([0.0, 0.5, 1.0])})
    model = create_backbone("cifar_resnet_20")
    mask = Mask.ones_like(model)
    assert set(mask) == set(prunable_names(model)) and mask.sparsity == 0.0
    assert not any("bn" in n or n.endswith("bias") for n in mask)
    wrong = Mask({"fc.weight": torch.ones(3, 3)})
    with pytest.raises(ValueError, match=r"shapes differ.*fc\.weight \(3, 3\) vs \(10, 64\)"):
        apply_mask(model, wrong)
    with pytest.raises(ValueError, match=r"not prunable.*bn\.weight"):
        apply_mask(model, Mask({"bn.weight": torch.ones(16)}))
    mask["fc.weight"][0, 0] = 3.0  # mutated after validation: apply_mask checks again
    with pytest.raises(ValueError, match=r"other than 0 and 1 in: fc\.weight"):
        apply_mask(model, mask)


def test_mask_save_load_and_report(tmp_path) -> None:
    model = create_backbone("cifar_resnet_20")
    with torch.no_grad():  # random init can hold exact zeros; the count below must be exact
        for p in model.parameters():
            p.abs_().add_(0.1)
    mask = Mask.ones_like(model)
    mask["fc.weight"] = torch.zeros_like(mask["fc.weight"])
    path = mask.save(tmp_path / "m_mask.pth", prefix="model.")
    raw = torch.load(path, weights_only=True)
    assert all(k.startswith("model.") for k in raw)
    # stored as bool (a quarter of float32's bytes); the paper's `mask * weight` still works
    assert {v.dtype for v in raw.values()} == {torch.bool}
    weight = model.state_dict()["fc.weight"]
    assert torch.equal(raw["model.fc.weight"] * weight, torch.zeros_like(weight))
    loaded = Mask.load(path)
    assert all(v.dtype == torch.float32 for v in loaded.values())
    assert set(loaded) == set(mask) and loaded.sparsity == pytest.approx(mask.sparsity)
    report = (tmp_path / "m_mask.sparsity.json").read_text()
    assert '"sparsity"' in report and "fc.weight" in report
    apply_mask(model, loaded)
    assert sparsity_report(model)["layers"]["fc.weight"]["sparsity"] == 1.0
    assert sparsity(model) == pytest.approx(mask.sparsity)
