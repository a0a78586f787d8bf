"""What a finding's interval can decide, where its width comes from, and what would narrow it.

    from lib.metrics.power import verdict, variance_components, needed
    verdict(-0.01, 0.02, margin=0.03)            # 'no effect larger than ±0.03'
    parts = variance_components(diffs)            # index: dataset, n_shot, seed, source_seed
    needed(parts, width=0.08)                     # source models for a 95% interval 0.08 wide
    sources_for_power(parts, effect=0.01)         # ... for 80% power at an effect of 0.01

Verdicts: "supported" / "contradicted" when the whole 95% interval lies on the paper's side
of 0 / on the other (", smaller than ±m" added when it also lies inside ±m: a real effect,
but a negligible one); "no effect larger than ±m" when it holds 0 but lies inside ±m (the
equivalence margin: an effect that small is below what the paper reports and below what
the study's design can resolve, see MARGINS); "inconclusive" otherwise.

Variance components of paired differences y (one per dataset x n-shot cell, transfer seed
and source model), by the method of moments of the additive model

    y[s, t, c] = mu + alpha[c] + b[s] + e[s, t] + r[s, t, c]

with cells c (dataset x n-shot) as fixed effects, source models b ~ (0, source^2), transfer
seeds within them e ~ (0, seed^2) and the residual r ~ (0, residual^2) (a cell's noise in
one run, including how the effect differs between cells within one run). The cell spread is
the standard deviation of the alpha: how much the pooled effect hides differences between
datasets and n-shots. The mean over S sources, T seeds each and C cells then has variance
source^2/S + seed^2/(S T) + residual^2/(S T C): its shares say where the width comes from.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Equivalence margins: issue 27's defaults, not tuned on any result. They sit at the
# resolution of one run: a 1,000-image test set (the mini study's) measures an accuracy of
# 80% to +-1.3 points (one binomial standard error; a paired difference of two runs to
# +-1.8), and a debiased ECE to about +-0.01 (lib.metrics.calibration's per-run bootstrap), so an
# effect inside +-m is one a single comparison could not see.
MARGINS = {"accuracy": 0.03, "ece": 0.01}
POWER = 0.8  # "source models needed": for 80% power at an effect the size of the margin
CELL_KEYS = ["dataset", "n_shot"]


def verdict(low: float, high: float, margin: float | None = None) -> str:
    """From a 95% interval of an effect whose paper direction is positive (see module)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no data"
    inside = margin is not None and -margin < low and high < margin
    if low > 0 or high < 0:  # a real effect; one inside the margin says so too
        word = "supported" if low > 0 else "contradicted"
        return f"{word}, smaller than ±{margin:.2g}" if inside else word
    return f"no effect larger than ±{margin:.2g}" if inside else "inconclusive"


MIN_SOURCES = 3  # fewer source models: an interval for those sources only, no population verdict


def finding_verdict(est: dict[str, float], margin: float) -> str:
    """verdict() of an estimate (lib.study.findings.hierarchical_mean), or why there is none: one
    resampled unit gives no interval, and fewer than MIN_SOURCES source models describe those
    source models only (their interval resamples their transfer seeds), not the population."""
    if est["pairs"] and est["sources"] <= 1 and est["seeds"] <= 1:
        return f"too few to resample ({est['pairs']} pair{'s' * (est['pairs'] != 1)})"
    if 0 < est["sources"] < MIN_SOURCES:
        k = est["sources"]
        them = "it" if k == 1 else "them"
        return f"no population verdict ({k} source model{'s' * (k != 1)}: for {them} only)"
    return verdict(est["low"], est["high"], margin)


def signed(x: float, margin: float = 0.01) -> str:
    """A signed effect to the digit after its margin's last (at least 3 decimals), so that an
    effect, its interval and its margin read alike: +0.012 (margin 0.01), -0.0007 (0.0018)."""
    if not np.isfinite(x):
        return "n/a"
    scale = margin if np.isfinite(margin) and margin > 0 else 0.01
    return f"{x:+.{max(3, 1 - math.floor(math.log10(scale)))}f}"


def verdict_kind(word: str) -> str:
    """'supported', 'contradicted', 'equivalent', 'inconclusive' or 'no data' of a verdict
    word (the equivalence verdict and a decided effect inside the margin carry the margin)."""
    if word.startswith("no effect larger than"):
        return "equivalent"
    return word.split(",")[0]


def _index(values: pd.Series, key: str, default) -> np.ndarray:
    names = values.index.names
    return values.index.get_level_values(key).to_numpy() if key in names else default


def variance_components(values: pd.Series, iterations: int = 50) -> dict[str, float]:
    """Method-of-moments variance components of paired differences (see module) indexed by
    dataset, n_shot, seed and source_seed (missing levels: one cell / seed / source). Keys:
    source, seed, residual, cell (standard deviations), sources, seeds (per source, mean),
    cells (per run, mean), and the shares of the mean's variance from each random level."""
    values = values.dropna()
    n = len(values)
    nan = float("nan")
    if n < 2:
        return dict.fromkeys(("source", "seed", "residual", "cell"), nan) | {
            "sources": int(n > 0),
            "seeds": float(n > 0),
            "cells": float(n > 0),
        }
    one = np.zeros(n, dtype=int)
    cells = [tuple(c) for c in zip(*(_index(values, k, one) for k in CELL_KEYS), strict=True)]
    source = _index(values, "source_seed", one)
    seed = _index(values, "seed", np.arange(n))
    unit = pd.factorize(pd.Series(list(zip(source, seed, strict=True))))[0]
    cell = pd.factorize(pd.Series(cells))[0]
    y = values.to_numpy(dtype=np.float64)
    U, C = unit.max() + 1, cell.max() + 1

    # Additive fit y ~ mu + alpha[cell] + a[unit] by alternating means (exact when balanced,
    # least squares with missing cells).
    mu, alpha, a = y.mean(), np.zeros(C), np.zeros(U)
    for _ in range(iterations):
        alpha = np.bincount(cell, y - mu - a[unit], C) / np.bincount(cell, minlength=C)
        alpha -= alpha.mean()
        a = np.bincount(unit, y - mu - alpha[cell], U) / np.bincount(unit, minlength=U)
        mu += a.mean()
        a -= a.mean()
    resid = y - mu - alpha[cell] - a[unit]
    df_resid = n - U - C + 1
    residual2 = float(resid @ resid / df_resid) if df_resid > 0 else nan
    per_unit = np.bincount(unit, minlength=U)
    c_mean = float(per_unit.mean())
    if C > 1 and np.isfinite(residual2):
        cell_n = np.bincount(cell, minlength=C)
        cell2 = max(0.0, float(alpha.var(ddof=1) - residual2 * np.mean(1 / cell_n)))
    else:
        cell2 = nan

    # One-way nested ANOVA of the unit effects a[u] (+ their noise residual2 / C_u) on sources.
    unit_source = pd.factorize(pd.Series(source).groupby(unit).first().sort_index().to_numpy())[0]
    S = unit_source.max() + 1
    t_per = np.bincount(unit_source, minlength=S)
    noise = np.nanmean(residual2 / per_unit) if np.isfinite(residual2) else 0.0
    src_mean = np.bincount(unit_source, a, S) / t_per
    within_df = U - S
    ms_within = (
        float(((a - src_mean[unit_source]) ** 2).sum() / within_df) if within_df > 0 else nan
    )
    seed2 = max(0.0, ms_within - noise) if np.isfinite(ms_within) else nan
    if S > 1:
        ms_between = float((t_per * (src_mean - a.mean()) ** 2).sum() / (S - 1))
        t0 = (U - (t_per**2).sum() / U) / (S - 1)  # effective seeds per source (unbalanced)
        base = ms_within if np.isfinite(ms_within) else noise
        source2 = max(0.0, (ms_between - base) / t0)
        if not np.isfinite(ms_within):  # one seed per source: seed and source are confounded
            source2 = max(0.0, float(src_mean.var(ddof=1)) - noise)
    else:
        source2 = nan
    out = {
        "source": math.sqrt(source2) if np.isfinite(source2) else nan,
        "seed": math.sqrt(seed2) if np.isfinite(seed2) else nan,
        "residual": math.sqrt(residual2) if np.isfinite(residual2) else nan,
        "cell": math.sqrt(cell2) if np.isfinite(cell2) else nan,
        "sources": int(S),
        "seeds": float(U / S),
        "cells": c_mean,
    }
    parts = _parts(out, S, U / S, c_mean)
    total = sum(parts.values())
    for key, part in parts.items():
        out[f"share_{key}"] = part / total if total > 0 else nan
    return out


def _parts(c: dict[str, float], sources: float, seeds: float, cells: float) -> dict[str, float]:
    """Each random level's contribution to the variance of the grand mean."""
    sq = {k: (c[k] ** 2 if np.isfinite(c[k]) else 0.0) for k in ("source", "seed", "residual")}
    return {
        "source": sq["source"] / sources,
        "seed": sq["seed"] / (sources * seeds),
        "residual": sq["residual"] / (sources * seeds * cells),
    }


def expected_width(
    components: dict[str, float], sources: int, seeds: float | None = None, level: float = 0.95
) -> float:
    """Expected width of the findings' interval with `sources` source models and `seeds`
    transfer seeds each (default: as measured), the measured cells per run: twice a
    t(sources - 1) quantile of the mean's standard error, as lib.metrics.bootstrap.expansion widens
    the source-model bootstrap to."""
    from scipy.stats import t

    if sources < 2:
        return float("inf")
    seeds = components["seeds"] if seeds is None else seeds
    variance = sum(_parts(components, sources, seeds, components["cells"]).values())
    return float(2 * t.ppf((1 + level) / 2, sources - 1) * math.sqrt(variance))


def sources_for_power(
    components: dict[str, float],
    effect: float,
    power: float = POWER,
    seeds: float | None = None,
    level: float = 0.95,
    most: int = 1000,
) -> int | None:
    """Fewest source models (at `seeds` transfer seeds each, default as measured) whose 95%
    interval excludes 0 with probability `power` when the true effect is `effect`: the mean's
    standard error times (t quantile of the level + t quantile of the power), t with
    sources - 1 degrees of freedom, at most |effect|. None when not even `most` would do."""
    from scipy.stats import t

    if not (np.isfinite(components.get("residual", float("nan"))) and effect):
        return None
    seeds = components["seeds"] if seeds is None else seeds
    for sources in range(2, most + 1):
        se = math.sqrt(sum(_parts(components, sources, seeds, components["cells"]).values()))
        if se * (t.ppf((1 + level) / 2, sources - 1) + t.ppf(power, sources - 1)) <= abs(effect):
            return sources
    return None


def needed(
    components: dict[str, float], width: float, seeds: float | None = None, most: int = 1000
) -> int | None:
    """Fewest source models (at `seeds` transfer seeds each) whose expected interval is at
    most `width` wide; None when not even `most` would do (or nothing was measured)."""
    if not np.isfinite(components.get("residual", float("nan"))):
        return None
    for sources in range(2, most + 1):
        if expected_width(components, sources, seeds) <= width:
            return sources
    return None
