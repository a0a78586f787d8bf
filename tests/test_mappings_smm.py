"""BLM / BLM+ label mappings and SMM sample-specific prompts (issue 20)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lib.adapt.labelmap import (
    BLM_LAPLACE,
    MAPPINGS,
    LabelMapper,
    blm_joint,
    blm_matrix,
    blmpp_topk,
)
from lib.adapt.prompt import (
    PROMPTS,
    MaskGenerator,
    SampleSpecificMaskPrompt,
    build_prompt,
    smm_patch_size,
)


def permuted_source(
    num_target: int = 10, extra: int = 5, n_per_class: int = 40, flip: float = 0.3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A source whose classes are a permutation of the target's (plus `extra` distractor
    classes): target t is predicted as source perm[t], a share `flip` of the samples as a
    random other source. Returns (source logits, target labels, perm)."""
    g = torch.Generator().manual_seed(seed)
    num_source = num_target + extra
    perm = torch.randperm(num_source, generator=g)[:num_target]
    labels = torch.arange(num_target).repeat_interleave(n_per_class)
    top = perm[labels].clone()
    noisy = torch.rand(len(labels), generator=g) < flip
    top[noisy] = torch.randint(0, num_source, (int(noisy.sum()),), generator=g)
    logits = torch.randn(len(labels), num_source, generator=g)
    logits[torch.arange(len(labels)), top] += 4.0
    return logits, labels, perm


def test_names_match_the_config() -> None:
    from lib.study import config

    assert set(config.MAPPINGS) == set(MAPPINGS) and {"blm", "blmpp"} <= set(MAPPINGS)
    assert set(PROMPTS) <= set(config.PROMPTS) and "smm" in PROMPTS  # + CLIP's additive


def test_blm_matrix_follows_the_reference_formula() -> None:
    # counts[s, t]; rows: sources, columns: targets (BayesianLM get_freq_distribution)
    counts = torch.tensor([[3.0, 1.0], [0.0, 0.0], [1.0, 4.0]])
    w = blm_matrix(counts, laplace=1.0)
    # row-wise: counts / (row total + 1) = [[3/5, 1/5], [0, 0], [1/6, 4/6]]
    cond = torch.tensor([[3 / 5, 1 / 5], [0.0, 0.0], [1 / 6, 4 / 6]], dtype=torch.float64)
    torch.testing.assert_close(w, cond / cond.sum(0, keepdim=True))
    # without smoothing a source predicted once for t would get P(t | s) = 1
    assert not torch.allclose(blm_matrix(counts, 0.0), w)


@pytest.mark.parametrize("strategy", ["blm", "blmpp"])
def test_blm_columns_are_distributions(strategy: str) -> None:
    logits, labels, _ = permuted_source(num_target=6, extra=20, n_per_class=3)
    labels[labels == 5] = 4  # target 5 absent from the sample: its column must still be one
    w = blm_matrix(blm_joint(logits, labels, 6, strategy), BLM_LAPLACE)
    assert w.shape == (26, 6)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(0), torch.ones(6, dtype=torch.float64))


@pytest.mark.parametrize("strategy", ["blm", "blmpp"])
def test_blm_recovers_a_permutation(strategy: str) -> None:
    logits, labels, perm = permuted_source()
    mapper = LabelMapper(strategy, num_source=15, num_target=10)
    assert mapper.needs_update(0) and mapper.needs_update(5)  # every epoch, as ILM
    mapper.update(logits, labels)
    assert mapper.mapping.tolist() == perm.tolist()  # each target's highest-weight source
    assert mapper.weights.argmax(0).tolist() == perm.tolist()
    accuracy = (mapper(logits).argmax(1) == labels).float().mean()
    assert accuracy > 0.65  # 30% of the samples point at a random source


def test_blm_prediction_is_a_matrix_product() -> None:
    logits, labels, _ = permuted_source(num_target=4, extra=3)
    mapper = LabelMapper("blm", 7, 4)
    with pytest.raises(RuntimeError, match="not computed"):
        mapper(logits)
    mapper.update(logits, labels)
    torch.testing.assert_close(mapper(logits), logits @ mapper.weights)
    assert set(mapper.state_dict()) == {"mapping", "weights"}  # saved with the prompt


def test_blmpp_keeps_top_k_probabilities() -> None:
    assert blmpp_topk(10) == 1 and blmpp_topk(100) == 15 and blmpp_topk(3) == 1
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]] * 2)
    labels = torch.tensor([0, 0])
    counts = blm_joint(logits, labels, num_target=20, strategy="blmpp")  # K = int(0.15 * 20) = 3
    probs = logits[0].double().softmax(0)
    expected = torch.zeros(4, dtype=torch.float64)
    expected[:3] = 2 * probs[:3]  # top 3 of each sample summed; the 4th dropped
    torch.testing.assert_close(counts[:, 0], expected)
    assert (counts[:, 1:] == 0).all()


def test_blm_mapping_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="blmpp"):
        LabelMapper("blm+", 10, 5)
    from lib.study.config import ExperimentConfig

    with pytest.raises(ValueError, match="unknown mapping 'blmp'.*blm, blmpp"):
        ExperimentConfig(mapping="blmp")
    with pytest.raises(ValueError, match="unknown prompt 'sample'.*smm"):
        ExperimentConfig(prompt="sample")
    with pytest.raises(ValueError, match="learn_scale must be False"):
        ExperimentConfig(prompt="smm", learn_scale=True)


# ---------------------------------------------------------------- SMM


def test_smm_patch_is_scaled_to_the_source() -> None:
    assert smm_patch_size(224) == 8  # the paper's: 28 x 28 patches
    assert smm_patch_size(32) == 1  # the mini study's source: 32 x 32 patches
    assert smm_patch_size(384) == 16
    with pytest.raises(ValueError, match="choose one of: 1, 2, 4, 8, 16"):
        MaskGenerator(3)


@pytest.mark.parametrize("source,patch", [(32, 1), (32, 4), (224, 8)])
def test_smm_mask_has_the_generators_shape(source: int, patch: int) -> None:
    vp = SampleSpecificMaskPrompt(source, patch)
    x = torch.rand(2, 3, 20, 20)
    out = vp(x)
    assert out.shape == (2, 3, source, source)
    patches = vp.generator(torch.rand(2, 3, source, source))
    assert patches.shape == (2, 3, source // patch, source // patch)
    mask = vp.mask(torch.rand(2, 3, source, source))
    assert mask.shape == (2, 3, source, source)
    # patch-wise: constant over each patch x patch block
    blocks = mask.unfold(2, patch, patch).unfold(3, patch, patch)
    assert (blocks == blocks[..., :1, :1]).all()
    # delta starts at zero: the prompted image is the resized, normalized image
    plain = build_prompt("pad", source, source, pad=1)
    torch.testing.assert_close(out, plain(x))


def test_smm_masks_differ_per_sample_and_gradients_reach_the_generator() -> None:
    torch.manual_seed(0)
    vp = SampleSpecificMaskPrompt(32)
    x = torch.rand(4, 3, 28, 28)
    masks = vp.mask(vp.normalize(torch.nn.functional.interpolate(x, size=32)))
    assert not torch.allclose(masks[0], masks[1])  # sample-specific
    optimizer = torch.optim.Adam(vp.parameters(), lr=0.01)
    for step in range(2):  # at delta = 0 the mask gets no gradient (as in the reference)
        optimizer.zero_grad()
        vp(x).square().mean().backward()
        grads = [p.grad for p in vp.generator.parameters()]
        if step == 1:
            assert all(g is not None for g in grads)
            assert sum(g.abs().sum() for g in grads) > 0
            assert vp.delta.grad.abs().sum() > 0
        optimizer.step()


def test_build_prompt_names() -> None:
    assert isinstance(build_prompt("smm", 32, 24), SampleSpecificMaskPrompt)
    with pytest.raises(ValueError, match="unknown prompt 'smn'; choose one of: expansive"):
        build_prompt("smn", 32, 24)


def test_smm_loads_at_source_size_and_keeps_old_run_keys() -> None:
    from lib.study.config import ExperimentConfig

    smm = ExperimentConfig(dataset="mnist", prompt="smm", arch="cifar_resnet_20_8")
    assert smm.input_size == 32  # resized to the source, not padded
    assert "-vp-ilm-smm-" in smm.run_key
    expansive = ExperimentConfig(dataset="mnist", arch="cifar_resnet_20_8")
    assert "-smm-" not in expansive.run_key and expansive.input_size < 32


def test_cli_passes_mapping_and_prompt() -> None:
    from lib.study.seed_cli import config_from_args, parser

    args = parser().parse_args(["--network", "dense", "--mapping", "blmpp", "--prompt", "smm"])
    cfg = config_from_args(args)
    assert (cfg.mapping, cfg.prompt) == ("blmpp", "smm")


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize(
    "mapping,prompt", [("blm", "expansive"), ("blmpp", "expansive"), ("ilm", "smm")]
)
def test_tiny_vp_run_with_each_new_option(outputs, tickets, mapping: str, prompt: str) -> None:
    from lib.study.config import ExperimentConfig
    from lib.study.experiment import run_experiments

    cfg = ExperimentConfig(
        study="t",
        dataset="digits",
        pretrained_dir=str(tickets),
        epochs=2,
        n_shot=10,
        max_val=100,
        method="vp",
        mapping=mapping,
        prompt=prompt,
    )
    (record,) = run_experiments([cfg])
    assert record["params"]["mapping"] == mapping and record["params"]["prompt"] == prompt
    assert len(record["history"]) == 2
    assert 0 <= record["metrics"]["test"]["accuracy"] <= 1
    info = record["mapping"]
    assert len(info["indices"]) == 10 and info["changes"]
    if mapping in ("blm", "blmpp"):
        weights = torch.tensor(info["weights"])
        assert weights.shape == (45, 10)
        torch.testing.assert_close(weights.sum(0), torch.ones(10), atol=1e-3, rtol=0)
        assert info["hyperparameters"]["laplace"] == 1.0
        if mapping == "blmpp":
            assert info["hyperparameters"]["topk"] == 1
    else:
        assert info["prompt_hyperparameters"]["patch_size"] == 1


# ---------------------------------------------------------------- the report's analysis


def _slice_frame(gaps: dict[tuple[str, str], float], sources: int = 3) -> pd.DataFrame:
    """VP records of the slice: dense accuracy 0.7 + source noise, ticket = dense - gap."""

    rows = []
    for (mapping, prompt), gap in gaps.items():
        for source in range(sources):
            for shot in (10, -1):
                dense = 0.7 + 0.02 * source + (0.1 if shot == -1 else 0.0)
                for network, sparsity, acc in (("dense", 0, dense), ("ticket", 12, dense - gap)):
                    rows.append(
                        dict(
                            dataset="mnist", method="vp", network=network, sparsity=sparsity,
                            mapping=mapping, prompt=prompt, n_shot=shot, seed=1,
                            source_seed=source, test_accuracy=acc + 0.001 * source**2,
                            converged=True,
                        )
                    )  # fmt: skip
    return pd.DataFrame(rows)


def test_vp_methods_gap_measures_the_gap_closed() -> None:
    from lib.study.findings import has_vp_method_runs, vp_methods_gap

    gaps = {("ilm", "expansive"): 0.10, ("blm", "expansive"): 0.0, ("ilm", "smm"): 0.20}
    gaps[("blmpp", "expansive")] = 0.10
    df = _slice_frame(gaps)
    df.loc[(df["mapping"] == "blmpp") & (df["source_seed"] == 1), "test_accuracy"] += 0.05
    assert has_vp_method_runs(df) and not has_vp_method_runs(
        df[df["mapping"] == "ilm"].drop(columns="prompt")
    )
    table = vp_methods_gap(df, n=500).set_index(["variant", "n_shot"])
    assert len(table) == 8 and set(table["sparsity"]) == {12}
    torch.testing.assert_close(float(table.loc[("ILM, expansive", 10), "gap"]), 0.10)
    blm = table.loc[("BLM, expansive", -1)]
    torch.testing.assert_close(float(blm["closed"]), 0.10)
    assert (
        blm["verdict"] == "closes the gap"
        and blm["closed_low"] - 1e-9 <= 0.10 <= blm["closed_high"] + 1e-9
    )
    assert table.loc[("ILM, SMM", 10), "verdict"] == "widens the gap"
    assert table.loc[("BLM+, expansive", 10), "verdict"] == "inconclusive"
    assert table["converged_share"].eq(1.0).all()
    one = vp_methods_gap(_slice_frame(gaps, sources=1), n=200)
    assert set(one["verdict"].dropna()) == {"too few pairs"}
