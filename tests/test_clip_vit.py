"""The CLIP and ViT arms at tiny size: models the tests build (a small open_clip config, a tiny
DeiT / Swin through timm), their native checkpoint formats, no download."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("open_clip")
pytest.importorskip("timm")

from lib.adapt.prompt import AdditivePrompt  # noqa: E402
from lib.models import clip, vit  # noqa: E402
from lib.models.backbone import CheckpointError, prunable_names, sparsity, split_features  # noqa: E402
from lib.models.quant import QuantLinear, quantize_backbone, weight_levels  # noqa: E402
from lib.study.config import ExperimentConfig  # noqa: E402

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
clip.register_clip("clip_tiny", "tiny-clip-test", TINY_CLIP, tag="test")
vit.register_vit(
    "deit_test",
    "deit_tiny_patch16_224",
    embed_dim=16,
    depth=2,
    num_heads=2,
    img_size=32,
    patch_size=8,
)
vit.register_vit(
    "swin_test",
    "swin_tiny_patch4_window7_224",
    embed_dim=16,
    depths=(1, 1),
    num_heads=(1, 2),
    img_size=32,
    window_size=4,
    patch_size=4,
)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[nn.Module, Path]:
    """A randomly initialised tiny CLIP and its open_clip state-dict file."""
    torch.manual_seed(0)
    model = clip.create_clip("clip_tiny", None)
    path = tmp_path_factory.mktemp("clip") / "clip_tiny.pt"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def tiny_deit(tmp_path_factory) -> tuple[nn.Module, Path]:
    """A tiny DeiT saved as the DeiT releases are: {"model": state_dict}."""
    torch.manual_seed(0)
    model = vit.create_vit("deit_test")
    path = tmp_path_factory.mktemp("deit") / "deit_test.pth"
    torch.save({"model": model.state_dict()}, path)
    return model, path


# ---------------------------------------------------------------- CLIP


def test_zero_shot_classifier_is_clip_cosine_over_templates_x_classes(tiny_clip):
    model, _ = tiny_clip
    names, templates = ["cat", "dog", "car"], ("a photo of a {}.", "{} texture.")
    source = clip.clip_classifier(model, "clip_tiny", names, templates)
    assert source.head.weight.shape == (6, 16)
    assert source.names == ["cat", "dog", "car"] * 2  # template-major, as the seed
    x = torch.rand(4, 3, 32, 32)
    import open_clip

    tokens = open_clip.get_tokenizer("tiny-clip-test")(
        [t.format(n) for t in templates for n in names]
    )
    with torch.no_grad():
        image = model.encode_image(x)
        text = model.encode_text(tokens)
        expected = model.logit_scale.exp() * (
            (image / image.norm(dim=-1, keepdim=True)) @ (text / text.norm(dim=-1, keepdim=True)).T
        )
        assert torch.allclose(source(x), expected, atol=1e-4)
        features, head = split_features(source)
        assert torch.allclose(head(features(x)), source(x), atol=1e-5)
    assert len(clip.SEED_TEMPLATES) == 81 and clip.SEED_TEMPLATES[0] == "This is a photo of a {}."
    assert clip.templates_for("eurosat", "dataset") == ("a centered satellite photo of {}.",)


def test_clip_weights_from_file_strictly_and_offline_error_names_the_file(tiny_clip, tmp_path):
    model, path = tiny_clip
    loaded = clip.create_clip("clip_tiny", path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    state = torch.load(path, weights_only=True)
    del state["visual.transformer.resblocks.0.attn.in_proj_weight"]
    torch.save({"state_dict": state}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="missing keys: visual.transformer.resblocks.0.attn"):
        clip.create_clip("clip_tiny", tmp_path / "broken.pt")
    # a hub tag that cannot be had: the error names the file to place for offline use
    with pytest.raises(CheckpointError, match=str(tmp_path / "clip_tiny_test.pt")):
        clip.create_clip("clip_tiny", "test", tmp_path)
    # ... and once placed, it is read from there
    torch.save(model.state_dict(), tmp_path / "clip_tiny_test.pt")
    assert torch.equal(
        clip.create_clip("clip_tiny", "", tmp_path).visual.conv1.weight, model.visual.conv1.weight
    )


def test_magnitude_pruning_of_the_image_tower_only(tiny_clip):
    model = clip.create_clip("clip_tiny", tiny_clip[1])
    text_before = {
        k: v.clone() for k, v in model.state_dict().items() if not k.startswith("visual.")
    }
    mask = clip.prune_image_tower(model, 0.5)
    names = prunable_names(model.visual)
    assert "transformer.resblocks.0.attn.in_proj_weight" in names  # MHA's packed projection
    assert set(mask) == {f"visual.{n}" for n in names}
    assert mask.sparsity == pytest.approx(0.5, abs=1e-6)
    assert sparsity(model.visual) == pytest.approx(0.5, abs=1e-3)
    # one global threshold: no pruned weight is larger than a kept one
    params = dict(model.named_parameters())
    kept = torch.cat([params[n].detach()[m.bool()].abs() for n, m in mask.items()])
    cut = torch.cat([params[n].detach()[~m.bool()].abs() for n, m in mask.items()])
    assert float(cut.max()) == 0.0 and float(kept.min()) > 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in text_before.items())
    with pytest.raises(ValueError, match=r"prune_sparsity must be in \(0, 1\)"):
        clip.prune_image_tower(model, 1.0)


def test_additive_prompt_adds_a_frame_after_normalization():
    prompt = AdditivePrompt(32, 4, (clip.CLIP_MEAN, clip.CLIP_STD))
    with torch.no_grad():
        prompt.delta.fill_(5.0)  # unbounded: no sigmoid, no clamp
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(clip.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(clip.CLIP_STD).view(1, 3, 1, 1)
    out = prompt(x)
    assert torch.allclose(out[..., 10:20, 10:20], ((x - mean) / std)[..., 10:20, 10:20])
    assert torch.allclose(out[..., :4, :], ((x - mean) / std)[..., :4, :] + 5.0)


def test_clip_config_rules():
    base = dict(dataset="digits", arch="clip_tiny", method="vp", prompt="additive", pad=4)
    cfg = ExperimentConfig(**base, optimizer="sgd", schedule="cosine_step", lr=40.0)
    assert cfg.source_size == 32 and cfg.input_size == 32
    with pytest.raises(ValueError, match="network 'ticket' is not available for clip_tiny"):
        ExperimentConfig(**base, network="ticket", sparsity=2)
    with pytest.raises(ValueError, match="unknown templates 'coop'; choose one of: seed, dataset"):
        ExperimentConfig(**base, templates="coop")
    with pytest.raises(ValueError, match="prune_sparsity .* goes with network 'magnitude_pruned'"):
        ExperimentConfig(**base, network="magnitude_pruned")
    with pytest.raises(ValueError, match="prompt 'additive' is CLIP's"):
        ExperimentConfig(dataset="digits", method="vp", prompt="additive")
    with pytest.raises(ValueError, match="unknown architecture 'clip_vit_b99'.*clip_vit_b32"):
        ExperimentConfig(dataset="digits", arch="clip_vit_b99")
    # run keys of existing studies do not change with the new fields at their defaults
    assert "prune_sparsity" in ExperimentConfig().to_dict()
    key = ExperimentConfig(dataset="digits").run_key
    assert key == ExperimentConfig(dataset="digits", templates="seed").run_key


@pytest.mark.slow
def test_clip_vp_lp_pruned_and_given_checkpoint_end_to_end(tiny_clip, outputs, tmp_path):
    from lib.study.experiment import run_experiments

    model, path = tiny_clip
    pruned = clip.create_clip("clip_tiny", path)
    clip.prune_image_tower(pruned, 0.75)
    torch.save({"state_dict": pruned.state_dict()}, tmp_path / "clip_tiny_pruned.pt")
    base = dict(
        study="clip",
        dataset="digits",
        arch="clip_tiny",
        epochs=2,
        max_train=60,
        max_test=60,
        device="cpu",
        max_val=30,
    )
    vp = dict(
        method="vp",
        prompt="additive",
        pad=4,
        optimizer="sgd",
        schedule="cosine_step",
        lr=40.0,
        batch_size=16,
    )
    configs = [
        ExperimentConfig(**base, **vp, weights=str(path)),
        ExperimentConfig(
            **base,
            **vp,
            weights=str(path),
            network="magnitude_pruned",
            prune_sparsity=0.5,
            templates="dataset",
        ),
        ExperimentConfig(**base, method="lp", weights=str(path)),
        ExperimentConfig(
            **base,
            method="lp",
            network="sparsezoo",
            checkpoint=str(tmp_path / "clip_tiny_pruned.pt"),
        ),
    ]
    dense_vp, pruned_vp, dense_lp, given_lp = run_experiments(configs)
    assert dense_vp["training"]["optimizer"] == "sgd" and dense_vp["training"]["momentum"] == 0.9
    assert dense_vp["training"]["seed_recipe"]["lr"] == 40.0
    assert dense_vp["history"][0]["lr"] == 40.0 and dense_vp["history"][1]["lr"] < 40.0  # per step
    assert len(dense_vp["mapping"]["indices"]) == 10  # ILM over 81 templates x 10 digit names
    assert dense_vp["mapping"]["own_class_fraction"] is not None
    assert max(max(row) for row in dense_vp["mapping"]["indices"]) < 810
    assert max(max(row) for row in pruned_vp["mapping"]["indices"]) < 10  # one template
    tower = sparsity(pruned.visual)
    assert pruned_vp["metrics"]["sparsity_measured"] > 0.45  # the text head stays dense
    assert given_lp["metrics"]["sparsity_measured"] == pytest.approx(
        tower * _tower_share(pruned), abs=0.01
    )
    assert dense_lp["metrics"]["sparsity_measured"] == 0.0
    assert {r["params"]["arch"] for r in (dense_vp, given_lp)} == {"clip_tiny"}


def _tower_share(model: nn.Module) -> float:
    """Share of the image tower's prunable weights among those of the CLIP classifier (the
    tower plus a 10 x embed_dim text head)."""
    params = dict(model.visual.named_parameters())
    tower = sum(params[n].numel() for n in prunable_names(model.visual))
    return tower / (tower + 10 * 16)


# ---------------------------------------------------------------- ViTs


def test_deit_from_release_file_and_swin_from_timm_file(tiny_deit, tmp_path):
    model, path = tiny_deit
    loaded = vit.create_vit("deit_test", path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))
        features, head = split_features(loaded)
        assert torch.allclose(head(features(x)), loaded(x), atol=1e-5)
    assert vit.source_size("deit_test") == 32 and vit.source_size("deit_tiny") == 224
    swin = vit.create_vit("swin_test")
    torch.save(swin.state_dict(), tmp_path / "swin.pth")
    with torch.no_grad():
        assert torch.allclose(vit.create_vit("swin_test", tmp_path / "swin.pth")(x), swin(x))
    state = torch.load(path, weights_only=True)["model"]
    state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"][:, :8]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatches .*blocks\.0\.attn\.qkv\.weight"):
        vit.create_vit("deit_test", tmp_path / "bad.pth")


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_fake_quantized_vit_linear_weights_and_inputs(tiny_deit, bits, monkeypatch):
    model, _ = tiny_deit
    calibration = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    q = quantize_backbone(model, bits, bits, calibration)  # auto: no ReLU -> Linear inputs
    linears = [n for n, m in q.named_modules() if isinstance(m, nn.Linear)]
    assert linears and all(isinstance(q.get_submodule(n), QuantLinear) for n in linears)
    assert weight_levels(q)["max"] <= 2**bits - 1  # symmetric: -(2^(b-1)-1) .. 2^(b-1)-1
    # every Linear sees at most 2**bits distinct input values
    original = QuantLinear.quantize_input
    inputs = {}

    def spy(self, t):
        out = original(self, t)
        inputs[id(self)] = out.unique().numel()
        return out

    monkeypatch.setattr(QuantLinear, "quantize_input", spy)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = q(x)
        ref = model(x)
    assert all(v <= 2**bits for v in inputs.values()) and len(inputs) == len(linears)
    assert not torch.allclose(out, ref)
    if bits == 8:  # 8 bits stay close to float
        assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.95


def _qat_state(model: nn.Module, extra: dict[str, torch.Tensor] | None = None) -> dict:
    """An OFQ-style QAT state dict: timm's weights, LSQ input steps, StatsQ weights and
    OFQ's shifts on every Linear, one LSQ weight step on the head."""
    state = dict(model.state_dict())
    for name, m in model.named_modules():
        if type(m) is nn.Linear:
            state[f"{name}.input_quant_fn.s"] = torch.tensor([0.05])
            state[f"{name}.move_b4.bias"] = torch.full((m.in_features,), 0.01)
            state[f"{name}.move_aft.bias"] = torch.zeros(m.in_features)
            if name != "head":
                state[f"{name}.statsq_fn.clip_val"] = torch.tensor([2.0])
    state["head.lsqw_fn.s"] = torch.full((model.head.out_features,), 0.02)
    state.update(extra or {})
    return {"model": state}


def test_qat_checkpoint_maps_quantizers_and_refuses_the_rest(tiny_deit, tmp_path):
    model, _ = tiny_deit
    torch.save(_qat_state(model), tmp_path / "qat.pth")
    q = vit.load_qat("deit_test", tmp_path / "qat.pth", weight_bits=4, act_bits=4)
    qkv = q.get_submodule("blocks.0.attn.qkv")
    assert isinstance(qkv, QuantLinear) and torch.allclose(qkv.step, torch.tensor(0.05))
    assert torch.allclose(qkv.shift_before, torch.full((16,), 0.01))
    assert qkv.unsigned is False and q.get_submodule("blocks.0.mlp.fc2").unsigned is True
    # StatsQ: 2**bits mid-rise levels per row; the head: the given LSQ step
    assert weight_levels(q)["layers"]["blocks.0.attn.qkv.weight"] <= 16
    head = q.get_submodule("head").weight
    assert torch.allclose(head, (model.head.weight / 0.02).round().clamp(-8, 7) * 0.02)
    refused = {
        "blocks.0.attn.quan_a_q_fn.s": torch.tensor([0.1]),
        "blocks.1.attn.q.weight": torch.zeros(16, 16),
    }
    torch.save(_qat_state(model, refused), tmp_path / "ofq_attn.pth")
    with pytest.raises(
        CheckpointError, match=r"2 QAT parameter\(s\).*blocks\.0\.attn\.quan_a_q_fn\.s"
    ):
        vit.load_qat("deit_test", tmp_path / "ofq_attn.pth", 4, 4)
    bad = {"blocks.0.attn.qkv.input_quant_fn.s": torch.ones(5)}
    torch.save(_qat_state(model, bad), tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="blocks.0.attn.qkv act_step has 5 values"):
        vit.load_qat("deit_test", tmp_path / "shape.pth", 4, 4)


def test_vit_config_rules(tiny_deit):
    _, path = tiny_deit
    with pytest.raises(ValueError, match="deit_test needs weights=<timm checkpoint file>"):
        ExperimentConfig(dataset="digits", arch="deit_test")
    with pytest.raises(ValueError, match="network 'ticket' is not available for deit_test"):
        ExperimentConfig(dataset="digits", arch="deit_test", weights=str(path), network="ticket")
    cfg = ExperimentConfig(dataset="cifar10", arch="deit_tiny", weights="x.pth", method="vp")
    assert (cfg.source_size, cfg.input_size) == (224, 32)  # the seed: 32 padded to 224
    assert ExperimentConfig(dataset="dtd", arch="swin_tiny", weights="x.pth").input_size == 128
    from lib.study.experiment import check_files

    qat = ExperimentConfig(dataset="dtd", arch="deit_tiny", network="quantized", weight_bits=4,
                           act_bits=4, checkpoint="nowhere/deit_w4a4.pth")  # fmt: skip
    with pytest.raises(FileNotFoundError, match="missing QAT checkpoint .*nowhere/deit_w4a4.pth"):
        check_files(qat)


@pytest.mark.slow
def test_vit_lp_vp_fake_quantized_and_qat_end_to_end(tiny_deit, outputs, tmp_path):
    from lib.study.experiment import run_experiments

    model, path = tiny_deit
    torch.save(_qat_state(model), tmp_path / "qat.pth")
    base = dict(
        study="vit",
        dataset="digits",
        arch="deit_test",
        epochs=1,
        max_train=60,
        max_test=60,
        device="cpu",
        max_val=30,
    )
    configs = [
        ExperimentConfig(**base, method="vp", weights=str(path), target_size=16),
        ExperimentConfig(
            **base, method="lp", weights=str(path), network="quantized", weight_bits=4, act_bits=4
        ),
        ExperimentConfig(
            **base,
            method="vp",
            target_size=16,
            network="quantized",
            checkpoint=str(tmp_path / "qat.pth"),
            weight_bits=3,
            act_bits=3,
        ),
        ExperimentConfig(
            **base, method="lp", weights=str(path), network="magnitude_pruned", prune_sparsity=0.5
        ),
    ]
    vp, lp_q, vp_qat, lp_pruned = run_experiments(configs)
    assert len(vp["mapping"]["indices"]) == 10 and vp["training"]["optimizer"] == "adam"
    assert lp_q["metrics"]["weight_levels"]["max"] <= 15
    assert vp_qat["metrics"]["weight_levels"]["max"] <= 8
    body = sum(p.numel() for n, p in model.named_parameters() if n in prunable_names(model))
    head = model.head.weight.numel()  # the source classifier stays dense
    expected = 0.5 * (body - head) / body
    assert lp_pruned["metrics"]["sparsity_measured"] == pytest.approx(expected, abs=1e-3)
    assert "w3a3" in vp_qat["run_key"] and "mag50" in lp_pruned["run_key"]


# ---------------------------------------------------------------- paper-scale grids

PAPER_DATASETS = ["cifar10", "cifar100", "svhn", "gtsrb", "dtd", "flowers102", "food101",
                  "eurosat", "oxfordpets", "stanfordcars", "sun397", "ucf101", "abide"]  # fmt: skip


@pytest.fixture(scope="module")
def fake_paper_root(tmp_path_factory) -> Path:
    from lib.datasets.fake_data import write_fake

    return write_fake(tmp_path_factory.mktemp("fake"), PAPER_DATASETS)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "runs", "files"),
    [
        ("clip", 1950, ["pretrained/clip/clip_vit_l14_336_openai.pt (or the open_clip hub",
                        "pretrained/clip/clip_vit_l14_336_pruned_2x.pt",
                        "pretrained/clip/clip_vit_l14_336_pruned_4x.pt"]),
        ("vit_quant", 4680, ["pretrained/vit/deit_tiny_patch16_224-a1311bcf.pth",
                             "pretrained/vit/swin_tiny_patch4_window7_224.pth",
                             "pretrained/vit/deit_tiny_w3a3_qat.pth",
                             "pretrained/vit/deit_tiny_w4a4_qat.pth",
                             "pretrained/vit/swin_tiny_w3a3_qat.pth",
                             "pretrained/vit/swin_tiny_w4a4_qat.pth"]),
    ],
)  # fmt: skip
def test_paper_grids_validate_in_a_dry_run_on_fake_data(
    fake_paper_root, tmp_path, monkeypatch, capsys, name, runs, files
):
    from lib.core.utils import project_root
    from lib.study.grid import expand_grid, load_params
    from lib.study.sweep import main as sweep_main

    monkeypatch.setenv("SPARSE_VP_DATA", str(fake_paper_root))
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "outputs"))
    path = project_root() / "params" / f"{name}.yaml"
    assert f"python -m lib.sweep params/{name}.yaml --dry-run" in path.read_text()
    assert sweep_main([str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"dry run: {runs} runs valid" in out and "n-shots not checked" not in out
    assert f"warning: {len(files)} source file(s) missing" in out
    assert all(f in out for f in files)
    configs = expand_grid(load_params(path))
    assert {c.dataset for c in configs} == set(PAPER_DATASETS)
    if name == "clip":
        vp = [c for c in configs if c.method == "vp"]
        recipe = {(c.prompt, c.pad, c.optimizer, c.lr, c.schedule, c.epochs, c.batch_size)
                  for c in vp}  # fmt: skip
        assert recipe == {("additive", 30, "sgd", 40.0, "cosine_step", 10, 16)}
        assert {c.source_size for c in configs} == {336}
        assert {c.prune_sparsity for c in configs} == {0.0, 0.5, 0.75}
    else:
        quantized = {(c.arch, c.weight_bits, c.act_bits, bool(c.checkpoint))
                     for c in configs if c.network == "quantized"}  # fmt: skip
        assert {(w, a) for _, w, a, _ in quantized} == {(8, 8), (4, 4), (3, 3)}
        assert len(quantized) == 10 and {c.source_size for c in configs} == {224}
        vp = {(c.dataset, c.input_size) for c in configs if c.method == "vp"}
        assert ("cifar10", 32) in vp and ("dtd", 128) in vp
