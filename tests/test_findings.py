"""The findings table: verdicts follow hierarchical-bootstrap intervals, in both directions,
for any subset of methods, networks and datasets."""

import itertools

import numpy as np
import pandas as pd
import pytest

from lib.study.findings import (
    dense_vs_ticket,
    findings,
    hierarchical_mean,
    mapping_quality,
    metric_robustness,
    paper_metric_margin,
    paper_vp,
    robustness_statement,
    verdict,
)

VP_GAP = "sparsity hurts VP accuracy more than LP accuracy"
LOW_SHOT = "...and more so at the lowest n-shot than with full data"


def _frame(
    vp_drop: float,
    lp_drop: float,
    ece_rise: float,
    noise: float = 0.01,
    sources: int = 3,
    source_spread: float = 0.0,
) -> pd.DataFrame:
    """Runs of 2 datasets x 2 n-shots x 3 seeds x `sources` source models x LP/VP x dense and
    state 8. The ECE effect of source model s is ece_rise + source_spread * (s - mean)."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset, n_shot, seed, source, method, state in itertools.product(
        ["a", "b"], [10, -1], [1, 2, 3], range(sources), ["lp", "vp"], [0, 8]
    ):
        drop = (vp_drop if method == "vp" else lp_drop) * (2 if n_shot == 10 else 1)
        sparse = state == 8
        rise = ece_rise + source_spread * (source - (sources - 1) / 2)
        ece = 0.05 + sparse * rise + rng.normal(0, noise)
        rows.append(
            {
                "dataset": dataset,
                "n_shot": n_shot,
                "seed": seed,
                "source_seed": source,
                "method": method,
                "network": "ticket" if sparse else "dense",
                "sparsity": state,
                "test_accuracy": 0.9 - sparse * drop + rng.normal(0, noise),
                "test_ece": ece + 0.03,  # the binned ECE's upward bias
                "test_debiased_ece": ece,
                "test_smooth_ece": 0.8 * ece,
                "test_seed_ece": 0.01 + rng.normal(0, noise),
                "mapping_own_class_fraction": (
                    rng.choice([0.1, 0.2, 0.3]) if method == "vp" and dataset == "a" else None
                ),
            }
        )
    return pd.DataFrame(rows)


def _verdicts(table: pd.DataFrame) -> dict[str, str]:
    return table.set_index("finding")["verdict"].to_dict()


def test_paper_like_data_supports_the_findings():
    table = findings(_frame(vp_drop=0.2, lp_drop=0.02, ece_rise=0.1))
    verdicts = _verdicts(table)
    assert verdicts[VP_GAP] == "supported"
    assert verdicts[LOW_SHOT] == "supported"
    assert verdicts["sparse tickets are worse calibrated (VP, debiased ECE)"] == "supported"
    assert verdicts["sparse tickets are worse calibrated (VP, paper's metric)"] == "inconclusive"
    assert (table["low"] <= table["effect"]).all() and (table["effect"] <= table["high"]).all()
    row = table.set_index("finding").loc[VP_GAP]
    assert row["effect"] == pytest.approx(0.18 * 1.5, abs=0.01)  # (0.2 - 0.02) x (2 + 1) / 2
    assert row["sources"] == 3 and row["pairs"] == 2 * 2 * 3 * 3


def test_opposite_data_contradicts_them():
    table = findings(_frame(vp_drop=0.0, lp_drop=0.2, ece_rise=-0.04))
    verdicts = _verdicts(table)
    assert verdicts[VP_GAP] == "contradicted"
    assert verdicts["sparse tickets are worse calibrated (LP, debiased ECE)"] == "contradicted"
    assert (table["pairs"] > 0).all()


def test_findings_never_pool_vp_variants():
    """A study with ILM and BLM runs (params/vp_methods.yaml): the findings read ILM-VP, the
    paper's, alone; BLM runs with the opposite effect must not move them."""
    ilm = _frame(vp_drop=0.2, lp_drop=0.02, ece_rise=0.1).assign(mapping="ilm", prompt="expansive")
    blm = _frame(vp_drop=-0.3, lp_drop=0.02, ece_rise=-0.1).assign(
        mapping="blm", prompt="expansive"
    )
    both = pd.concat([ilm, blm[blm["method"] == "vp"]], ignore_index=True)
    assert len(paper_vp(both)) == len(ilm)
    assert paper_vp(ilm) is ilm  # one variant: nothing dropped
    pd.testing.assert_frame_equal(findings(both), findings(ilm))
    assert _verdicts(findings(both))[VP_GAP] == "supported"


def test_verdict_only_when_the_interval_excludes_zero():
    assert verdict(0.01, 0.2) == "supported"
    assert verdict(-0.2, -0.01) == "contradicted"
    assert verdict(-0.01, 0.2) == "inconclusive"
    assert verdict(float("nan"), float("nan")) == "no data"
    # no effect, only noise: a finding is decided exactly when its interval excludes 0 (how
    # often that happens by chance: the two tests on null effects below)
    table = findings(_frame(vp_drop=0.0, lp_drop=0.0, ece_rise=0.0, noise=0.02))
    for _, row in table.iterrows():
        decided = row["verdict"] in ("supported", "contradicted")
        assert decided == (not row["low"] <= 0 <= row["high"]), row.to_dict()


def test_source_models_widen_the_interval():
    # An ECE effect of +0.03 whose size differs between the 3 source models (+-0.06), seeds
    # agreeing within a source: the spread between sources enters the interval, and the
    # finding is inconclusive; with the same effect in every source it is supported.
    claim = "sparse tickets are worse calibrated (VP, debiased ECE)"
    spread = _frame(0.0, 0.0, ece_rise=0.03, noise=0.002, source_spread=0.06)
    alike = _frame(0.0, 0.0, ece_rise=0.03, noise=0.002, source_spread=0.0)
    spread, alike = (findings(f).set_index("finding").loc[claim] for f in (spread, alike))
    assert spread["verdict"] == "inconclusive" and spread["sources"] == 3
    assert alike["verdict"] == "supported"
    assert spread["effect"] == pytest.approx(alike["effect"], abs=1e-3)
    assert spread["high"] - spread["low"] > 10 * (alike["high"] - alike["low"])


def test_hierarchical_mean_covers_the_mean():
    values = _frame(0.1, 0.0, 0.05).set_index(["dataset", "n_shot", "seed", "source_seed"])
    est = hierarchical_mean(values["test_accuracy"])
    assert est["low"] < est["effect"] < est["high"]
    assert est["effect"] == pytest.approx(values["test_accuracy"].mean())
    assert est["seeds"] == 9 and est["sources"] == 3
    assert hierarchical_mean(pd.Series(dtype=float))["pairs"] == 0


@pytest.mark.parametrize(
    "subset",
    ["lp only", "vp only", "dense only", "tickets only", "one dataset", "one source"],
)
def test_any_subset_of_methods_and_networks(subset):
    frame = _frame(vp_drop=0.2, lp_drop=0.02, ece_rise=0.1)
    pick = {
        "lp only": frame["method"] == "lp",
        "vp only": frame["method"] == "vp",
        "dense only": frame["network"] == "dense",
        "tickets only": frame["network"] == "ticket",
        "one dataset": frame["dataset"] == "a",
        "one source": frame["source_seed"] == 0,
    }[subset]
    table = findings(frame[pick].reset_index(drop=True))
    verdicts = _verdicts(table)
    assert len(table) == 6
    has_pairs = subset in ("one dataset", "one source")
    assert (verdicts[VP_GAP] != "no data") == has_pairs
    for method in ("LP", "VP"):
        claim = f"sparse tickets are worse calibrated ({method}, debiased ECE)"
        expected = has_pairs or subset == f"{method.lower()} only"
        decided = "no population verdict" if subset == "one source" else "supported"
        assert verdicts[claim].startswith(decided) == expected, (subset, claim)
        assert (verdicts[claim] == "no data") == (not expected)
    robustness = metric_robustness(frame[pick])
    assert isinstance(robustness_statement(robustness), str)
    assert isinstance(mapping_quality(frame[pick]), pd.DataFrame)


def test_pairs_match_on_source_model():
    frame = _frame(0.0, 0.0, 0.0)
    diffs = dense_vs_ticket(frame, "vp", "test_accuracy")
    assert diffs.index.names == ["dataset", "n_shot", "seed", "source_seed"]
    assert len(diffs) == 2 * 2 * 3 * 3
    assert dense_vs_ticket(frame, "vp", "no_such_column").empty
    assert findings(pd.DataFrame())["verdict"].eq("no data").all()


def test_metric_robustness_says_when_the_verdict_changes():
    frame = _frame(0.0, 0.0, ece_rise=0.1)
    same = metric_robustness(frame)
    assert same["verdicts agree"].all()
    assert "CHANGES" not in robustness_statement(same)
    assert set(same["metric"]) == {"binned ECE", "debiased ECE", "smooth ECE"}
    # the binned ECE alone moves with sparsity (say, through its bias at a smaller test set)
    frame.loc[frame["network"] == "ticket", "test_ece"] += 0.2
    frame.loc[frame["network"] == "ticket", "test_debiased_ece"] -= 0.1
    frame.loc[frame["network"] == "ticket", "test_smooth_ece"] -= 0.08
    changed = metric_robustness(frame)
    assert not changed["verdicts agree"].all()
    assert "CHANGES" in robustness_statement(changed)
    by_metric = changed[changed["method"] == "VP"].set_index("metric")["verdict"]
    assert by_metric["binned ECE"] == "supported"
    assert by_metric["debiased ECE"] not in ("supported", "contradicted")


def test_mapping_quality_has_intervals():
    table = mapping_quality(_frame(0.1, 0.0, 0.0))
    assert set(table["dataset"]) == {"a"} and set(table["sparsity"]) == {0, 8}
    assert (table["low"] <= table["effect"]).all() and (table["effect"] <= table["high"]).all()
    assert (table["low"] >= 0).all() and (table["high"] <= 1).all()
    assert (abs(table["effect"] - 0.2) < 0.05).all()
    assert (table["high"] > table["low"]).all()
    assert mapping_quality(_frame(0.1, 0.0, 0.0).drop(columns="mapping_own_class_fraction")).empty


def test_null_effects_are_rarely_called_with_three_sources():
    # 200 studies with no effect but a real spread between 3 source models: the plain
    # hierarchical percentile interval excludes 0 far more often than 5%; the expanded one
    # (what findings use) does not.
    from lib.metrics.bootstrap import interval, resample_counts

    index = pd.MultiIndex.from_product(
        [["a", "b"], [10, -1], [1, 2, 3], [0, 1, 2]],
        names=["dataset", "n_shot", "seed", "source_seed"],
    )
    source = index.get_level_values("source_seed").to_numpy()
    plain = expanded = 0
    for r in range(200):
        rng = np.random.default_rng(r)
        values = rng.normal(0, 0.028, len(index)) + rng.normal(0, 0.02, 3)[source]
        est = hierarchical_mean(pd.Series(values, index=index), n=1000, seed=r)
        expanded += verdict(est["low"], est["high"]) != "inconclusive"
        counts = resample_counts([source], 1000, seed=r)
        low, high = interval(values.mean(), counts @ values / counts.sum(axis=1))
        plain += verdict(low, high) != "inconclusive"
    assert plain / 200 > 0.12
    assert expanded / 200 <= 0.08


def test_transfer_seeds_are_not_counted_twice():
    # 300 studies with no effect, 6 source models x 3 transfer seeds x 4 cells, the variance
    # in the seeds and cells (as for LP's calibration here): the findings' interval covers 0
    # about 95% of the time. Resampling the seeds again inside each drawn source (the
    # two-stage bootstrap) counts their variance twice: ~99%, and wider intervals.
    from lib.metrics.bootstrap import interval, resample_counts

    index = pd.MultiIndex.from_product(
        [["a", "b"], [10, -1], [1, 2, 3], range(6)],
        names=["dataset", "n_shot", "seed", "source_seed"],
    )
    source = index.get_level_values("source_seed").to_numpy()
    seed = index.get_level_values("seed").to_numpy()
    covered = twice = 0
    width = {"findings": 0.0, "two-stage": 0.0}
    for r in range(300):
        rng = np.random.default_rng(r)
        values = rng.normal(0, 0.05, 18)[source * 3 + seed - 1] + rng.normal(0, 0.05, len(index))
        est = hierarchical_mean(pd.Series(values, index=index), n=1000, seed=r)
        covered += est["low"] <= 0 <= est["high"]
        counts = resample_counts([source, seed], 1000, seed=r)
        low, high = interval(values.mean(), counts @ values / counts.sum(axis=1), units=6)
        twice += low <= 0 <= high
        width["findings"] += est["high"] - est["low"]
        width["two-stage"] += high - low
    assert 0.91 <= covered / 300 <= 0.98
    assert twice / 300 > 0.98 and width["two-stage"] > 1.2 * width["findings"]


def test_regime_reads_sources_convergence_and_the_vp_lp_ratio():
    import pandas as pd

    from lib.study.findings import regime

    rows = []
    for source in (0, 1, 2):
        for method, acc, conv in (("lp", 0.9, True), ("vp", 0.6, source != 2)):
            rows.append(
                dict(
                    dataset="mnist",
                    network="dense",
                    n_shot=-1,
                    method=method,
                    seed=1,
                    source_seed=source,
                    test_accuracy=acc,
                    converged=conv,
                )
            )
    table = regime(pd.DataFrame(rows)).set_index("check")["value"]
    assert table["independent source models"] == 3
    assert table["VP runs converged (share)"] == pytest.approx(2 / 3)
    assert table["VP / LP test accuracy, MNIST, dense, full"] == pytest.approx(0.6 / 0.9)
    lp_only = regime(pd.DataFrame(rows).query("method == 'lp'").drop(columns="source_seed"))
    assert list(lp_only["check"]) == ["independent source models"]
    assert lp_only["value"].item() == 1


def test_findings_compare_at_the_state_with_the_most_vp_runs():
    from lib.study.findings import findings_state

    df = _frame(0.1, 0.0, 0.0)
    extra = df[(df["network"] == "ticket") & (df["dataset"] == "a") & (df["seed"] == 1)]
    extra = extra[extra["n_shot"] == 10].assign(sparsity=16)  # a few runs at a sparser state
    both = pd.concat([df, extra], ignore_index=True)
    assert findings_state(both) == 8
    assert (findings(both, n=200)["state"] == 8).all()
    assert findings(both, n=200, state=16)["pairs"].iloc[0] == len(extra) // 2


def test_per_dataset_findings_show_what_pooling_hides():
    from lib.study.findings import findings_by_dataset

    a = _frame(0.1, 0.0, 0.0)
    b = _frame(-0.1, 0.0, 0.0).assign(dataset="c")
    pooled = findings(pd.concat([a[a.dataset == "a"], b[b.dataset == "c"]]), n=500)
    split = findings_by_dataset(pd.concat([a[a.dataset == "a"], b[b.dataset == "c"]]), n=500)
    gap = split[split["finding"] == VP_GAP].set_index("dataset")
    assert gap.loc["a", "verdict"] == "supported" and gap.loc["c", "verdict"] == "contradicted"
    assert abs(pooled.set_index("finding").loc[VP_GAP, "effect"]) < 0.02
    # the pooled finding's variance components see the two datasets as different cells
    assert pooled.set_index("finding").loc[VP_GAP, "sd_cell"] > 0.1


def test_drop_by_state_pairs_each_state_with_dense_and_reads_the_source_curve():
    from lib.study.findings import drop_by_state

    df = _frame(0.1, 0.02, 0.0)
    curve = [
        {"source_seed": s, "kind": "dyn4", "state": k, "test_accuracy": acc}
        for s in range(3)
        for k, acc in ((0, 0.98), (8, 0.90))
    ]
    table = drop_by_state(df, curve)
    vp = table[(table["method"] == "VP") & (table["n_shot"] == -1) & (table["dataset"] == "a")]
    assert vp["state"].tolist() == [8] and vp["effect"].iloc[0] == pytest.approx(0.1, abs=0.02)
    assert table["source_drop"].iloc[0] == pytest.approx(0.08)


def test_the_paper_metric_is_judged_on_its_own_scale():
    """The ECE margin converted by the ratio of the paper's metric to the ECE on dense runs:
    0.01 would be twice the whole dense value here. The tickets never set it."""
    df = _frame(0.0, 0.0, 0.0, noise=0.0005)
    df.loc[df["network"] == "dense", "test_ece"] = 0.1
    df.loc[df["network"] == "dense", "test_seed_ece"] = 0.005  # the dense ratio: 1/20
    assert paper_metric_margin(df, "lp") == pytest.approx(0.01 / 20)
    df.loc[df["network"] == "ticket", "test_ece"] = 5.0
    assert paper_metric_margin(df, "lp") == pytest.approx(0.01 / 20)
    table = findings(df).set_index("finding")
    row = table.loc["sparse tickets are worse calibrated (LP, paper's metric)"]
    assert row["margin"] == pytest.approx(0.0005)
