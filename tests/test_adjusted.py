"""Calibration at equal accuracy, on synthetic studies whose answer is known, and the
findings' small-sample rules (one pair, one or two source models, non-finite records)."""

import itertools

import numpy as np
import pandas as pd
import pytest

from lib.study.adjusted import adjusted_findings, adjusted_mean
from lib.study.findings import findings

VP_RAW = "sparse tickets are worse calibrated (VP, debiased ECE)"
VP_ADJUSTED = "sparse tickets are worse calibrated at equal accuracy (VP, debiased ECE)"


def _study(calibration: float, slope: float, sources: int = 16, seed: int = 0) -> pd.DataFrame:
    """Dense and state-12 runs of LP and VP, 2 transfer seeds per source model. A source's
    ticket changes accuracy by a source-level amount (mean +0.05) and its debiased ECE by
    `calibration` + `slope` * that accuracy change (+ noise)."""
    rng = np.random.default_rng(seed)
    gain = rng.normal(0.05, 0.05, sources)
    rows = []
    for source, run_seed, method, state in itertools.product(
        range(sources), [1, 2], ["lp", "vp"], [0, 12]
    ):
        sparse = state == 12
        d_acc = sparse * (gain[source] + rng.normal(0, 0.005))
        d_ece = sparse * (calibration + slope * d_acc + rng.normal(0, 0.005))
        rows.append(
            {
                "dataset": "a",
                "n_shot": 10,
                "seed": run_seed,
                "source_seed": source,
                "method": method,
                "network": "ticket" if sparse else "dense",
                "sparsity": state,
                "test_accuracy": 0.5 + d_acc,
                "test_debiased_ece": 0.3 + d_ece,
                "test_ece": 0.32 + d_ece,
                "test_seed_ece": 0.05 + d_ece / 5,
            }
        )
    return pd.DataFrame(rows)


def _row(table: pd.DataFrame, finding: str) -> pd.Series:
    return table.set_index("finding").loc[finding]


def test_a_pure_accuracy_effect_is_no_calibration_effect_at_equal_accuracy():
    # VP overconfident: ECE falls as accuracy rises. The ticket gains accuracy, so its raw ECE
    # change is negative (a "contradicted" hidden cost) although calibration at equal
    # accuracy does not change at all.
    df = _study(calibration=0.0, slope=-0.8)
    raw = _row(findings(df, n=1000), VP_RAW)
    adjusted = _row(adjusted_findings(df, n=1000), VP_ADJUSTED)
    assert raw["verdict"] == "contradicted"
    assert adjusted["low"] < 0 < adjusted["high"]
    assert adjusted["effect"] == pytest.approx(0.0, abs=0.005)
    assert adjusted["slope"] == pytest.approx(-0.8, abs=0.1)
    assert adjusted["raw_effect"] == pytest.approx(raw["effect"])


def test_a_calibration_effect_is_found_at_equal_accuracy():
    df = _study(calibration=0.04, slope=-0.8)
    adjusted = _row(adjusted_findings(df, n=1000), VP_ADJUSTED)
    assert adjusted["verdict"] == "supported"
    assert adjusted["effect"] == pytest.approx(0.04, abs=0.01)


def test_the_adjusted_interval_covers_the_truth():
    # 100 null studies of 8 source models: the 95% interval should hold 0 about 95 times.
    covered = 0
    for seed in range(100):
        df = _study(calibration=0.0, slope=-0.8, sources=8, seed=seed)
        pairs = {
            k: df[df.method == "vp"].pivot_table(
                index=["dataset", "n_shot", "seed", "source_seed"], columns="sparsity", values=k
            )
            for k in ("test_accuracy", "test_debiased_ece")
        }
        diff = {k: v[12] - v[0] for k, v in pairs.items()}
        est = adjusted_mean(diff["test_debiased_ece"], diff["test_accuracy"], n=400, seed=seed)
        covered += est["low"] < 0 < est["high"]
    assert 88 <= covered <= 100


def test_adjusted_needs_three_source_models():
    table = adjusted_findings(_study(0.04, -0.8, sources=2), n=200)
    assert table["low"].isna().all()
    assert table["verdict"].str.startswith("no population verdict").all()


def test_few_source_models_give_no_population_verdict():
    for sources in (1, 2):
        table = findings(_study(0.04, -0.8, sources=sources), n=200)
        table = table[table["verdict"] != "no data"]  # one n-shot: no low-shot finding
        assert len(table) == 5
        assert (
            table["verdict"].str.startswith(f"no population verdict ({sources} source model").all()
        ), table["verdict"].tolist()


def test_one_pair_gives_no_interval():
    df = _study(0.04, -0.8, sources=1)
    table = findings(df[df.seed == 1], n=200)
    row = _row(table, VP_RAW)
    assert np.isnan(row["low"]) and np.isnan(row["high"])
    assert row["verdict"] == "too few to resample (1 pair)"


def test_a_non_finite_record_is_counted_not_averaged_away():
    df = _study(0.0, -0.8, sources=4)
    clean = _row(findings(df, n=200), VP_RAW)
    bad = df.copy()
    hit = (bad.method == "vp") & (bad.sparsity == 12) & (bad.source_seed == 0) & (bad.seed == 1)
    bad.loc[hit, "test_debiased_ece"] = np.nan
    row = _row(findings(bad, n=200), VP_RAW)
    assert row["dropped"] == 1 and clean["dropped"] == 0
    assert row["pairs"] == clean["pairs"] - 1
