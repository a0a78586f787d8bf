"""Calibration changes at equal accuracy: does a ticket calibrate worse than dense once its
change in accuracy is accounted for?

    from lib.study.adjusted import adjusted_findings
    adjusted_findings(results_frame("mini"))   # one row per method and calibration measure

A raw paired ECE change mixes two things: a ticket that gains accuracy under an overconfident
method (VP) also lowers its ECE. Per source model, the mean paired calibration change is
regressed on the mean paired accuracy change; the intercept is the calibration change of a
ticket that neither gains nor loses accuracy. Its interval is a bootstrap over source models
(the line refitted on each resample). The method and its checks: docs/power.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.metrics.bootstrap import interval, resample_counts
from lib.metrics.power import MARGINS
from lib.study.findings import (
    CALIBRATION_METRICS,
    METHOD_NAMES,
    RESAMPLES,
    dense_vs_ticket,
    finding_verdict,
    findings_state,
    no_pairs,
    paper_metric_margin,
    paper_vp,
    with_source,
)


def adjusted_mean(
    calibration: pd.Series,
    accuracy: pd.Series,
    n: int = RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """The paired calibration change at equal accuracy: the intercept of a least-squares line
    through the source models' mean paired changes (calibration on accuracy), with a 95%
    bootstrap interval over source models (the line refitted on each resample, widened for
    few sources as hierarchical_mean). Both series are indexed like dense_vs_ticket's pairs;
    pairs missing either change are left out. Needs >= 3 source models with some spread in
    their accuracy change, else NaN (one source model's seeds cannot tell a calibration effect
    from an accuracy one)."""
    pairs = pd.concat({"cal": calibration, "acc": accuracy}, axis=1).dropna()
    if pairs.empty:
        pairs = pd.DataFrame(columns=["cal", "acc"], index=no_pairs().index, dtype=float)
    by_source = pairs.groupby(level="source_seed").mean()
    keys = pairs.index.to_frame(index=False)
    nan = float("nan")
    out = {
        "effect": nan,
        "low": nan,
        "high": nan,
        "slope": nan,
        "pairs": len(pairs),
        "sources": len(by_source),
        "seeds": len(keys[["source_seed", "seed"]].drop_duplicates()) if len(pairs) else 0,
    }
    if len(by_source) < 3 or not by_source["acc"].std() > 0:
        return out
    x, y = by_source["acc"].to_numpy(np.float64), by_source["cal"].to_numpy(np.float64)
    counts = resample_counts(len(x), n, seed).astype(np.float64)  # [n, sources]
    w = counts.sum(axis=1)
    mx, my = counts @ x / w, counts @ y / w
    sxx = counts @ (x * x) / w - mx * mx
    sxy = counts @ (x * y) / w - mx * my
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = np.where(sxx > 0, sxy / sxx, np.nan)
    slope = float(np.polyfit(x, y, 1)[0])
    effect = float(y.mean() - slope * x.mean())
    low, high = interval(effect, my - slopes * mx, level, units=len(x))
    return {**out, "effect": effect, "low": low, "high": high, "slope": slope}


def adjusted_findings(
    df: pd.DataFrame,
    calibration_metric: str = "debiased_ece",
    n: int = RESAMPLES,
    state: int | None = None,
) -> pd.DataFrame:
    """Each calibration finding of findings() at equal accuracy (adjusted_mean): one row per
    method and calibration measure, beside the raw effect, the slope of the calibration
    change on the accuracy change, and its verdict (same margins and rules as findings())."""
    df = with_source(paper_vp(df))
    state = findings_state(df) if state is None else state
    name = CALIBRATION_METRICS.get(calibration_metric, calibration_metric)
    rows = []
    for method in ("lp", "vp"):
        accuracy = dense_vs_ticket(df, method, "test_accuracy", state) if state else no_pairs()
        for column, measure, margin in (
            (f"test_{calibration_metric}", name, MARGINS["ece"]),
            ("test_seed_ece", "paper's metric", paper_metric_margin(df, method)),
        ):
            raw = dense_vs_ticket(df, method, column, state) if state else no_pairs()
            est = adjusted_mean(raw, accuracy, n)
            rows.append(
                {
                    "finding": f"sparse tickets are worse calibrated at equal accuracy "
                    f"({METHOD_NAMES[method]}, {measure})",
                    "measure": f"{measure}: ticket - dense, at equal accuracy",
                    "state": state,
                    "raw_effect": float(raw.mean()) if len(raw) else float("nan"),
                    **est,
                    "width": est["high"] - est["low"],
                    "margin": margin,
                    "verdict": finding_verdict(est, margin),
                }
            )
    return pd.DataFrame(rows)
