"""The paper's findings, tested on this study's records: supported, contradicted or not.

A finding compares paired runs (same dataset, n-shot and seed): dense vs the sparsest
ticket. It is "supported" when the mean paired difference is more than two standard
errors in the paper's direction, "contradicted" when it is that far the other way, and
"inconclusive" otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ["dataset", "n_shot", "seed"]


def _verdict(diffs: pd.Series) -> tuple[str, float, float]:
    diffs = diffs.dropna()
    if len(diffs) < 2:
        return "no data", float("nan"), float("nan")
    mean, se = diffs.mean(), diffs.std(ddof=1) / np.sqrt(len(diffs))
    if mean > 2 * se:
        return "supported", mean, se
    if mean < -2 * se:
        return "contradicted", mean, se
    return "inconclusive", mean, se


def _dense_vs_sparsest(df: pd.DataFrame, method: str, metric: str) -> pd.Series:
    """Per (dataset, n-shot, seed): metric of the sparsest ticket minus that of dense."""
    d = df[(df["method"] == method) & df["network"].isin(["dense", "ticket"])]
    if d.empty:
        return pd.Series(dtype=float)
    dense = d[d["sparsity"] == 0].set_index(KEYS)[metric]
    sparse = d[d["sparsity"] == d["sparsity"].max()].set_index(KEYS)[metric]
    return (sparse - dense).dropna()


def findings(df: pd.DataFrame) -> pd.DataFrame:
    """One row per finding: the claim, the measured effect (mean ± se) and the verdict."""
    rows = []

    def add(claim: str, diffs: pd.Series, unit: str) -> None:
        verdict, mean, se = _verdict(diffs)
        rows.append(
            {
                "finding": claim,
                "effect": f"{mean:+.3f} ± {se:.3f} {unit}",
                "pairs": len(diffs.dropna()),
                "verdict": verdict,
            }
        )

    drop_lp = -_dense_vs_sparsest(df, "lp", "test_accuracy")
    drop_vp = -_dense_vs_sparsest(df, "vp", "test_accuracy")
    add(
        "sparsity hurts VP accuracy more than LP accuracy",
        (drop_vp - drop_lp),
        "(VP drop - LP drop)",
    )
    gap = (drop_vp - drop_lp).dropna()
    if not gap.empty:
        shots = gap.index.get_level_values("n_shot")
        few = gap[shots == min(s for s in shots if s != -1)] if (shots != -1).any() else gap[:0]
        full = gap[shots == -1]
        low_vs_full = few.reset_index(["n_shot"], drop=True) - full.reset_index(
            ["n_shot"], drop=True
        )
        add(
            "...and more so at the lowest n-shot than with full data",
            low_vs_full.dropna(),
            "(gap at fewest shots - gap at full)",
        )
    for method, name in (("lp", "LP"), ("vp", "VP")):
        add(
            f"sparse tickets are worse calibrated ({name}, true ECE)",
            _dense_vs_sparsest(df, method, "test_ece"),
            "ECE",
        )
        add(
            f"sparse tickets are worse calibrated ({name}, paper's metric)",
            _dense_vs_sparsest(df, method, "test_seed_ece"),
            "paper's metric",
        )
    return pd.DataFrame(rows)
