"""The paper's findings, tested on this study's records: supported, contradicted, no effect
larger than the margin, or inconclusive.

    from lib.study.findings import findings
    findings(results_frame("mini"), calibration_metric="debiased_ece")

A finding is the mean of paired differences: a ticket (findings_state) minus dense, paired on
dataset, n-shot, transfer seed and source model. Its 95% interval is a cluster bootstrap over
source models (`source_seed`; a frame without it is one source model), each with all its
pairs, widened for few sources (lib.metrics.bootstrap.expansion); transfer seeds are not
redrawn inside a source (their variance is already in the source means; docs/power.md).
Verdicts: lib.metrics.power.finding_verdict ("supported", "contradicted", "no effect larger
than ±m", "inconclusive"; none for one pair or fewer than MIN_SOURCES source models). Pairs
whose records hold NaN or inf are counted ("dropped"), never averaged away. Each finding also
carries the variance components of its pairs and the source models that 80% power at an
effect the size of the margin would need. Any subset of methods, networks and datasets
works: a finding without pairs says "no data". Calibration at equal accuracy:
lib.study.adjusted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.metrics.bootstrap import interval, resample_counts
from lib.metrics.power import (
    MARGINS,
    finding_verdict,
    sources_for_power,
    variance_components,
    verdict,
    verdict_kind,
)
from lib.study.console import shots_order

PAIR_KEYS = ["dataset", "n_shot", "seed", "source_seed"]
RESAMPLES = 4000  # cheap (one matrix product); the interval's ends are stable to ~1%
# Calibration columns a finding can use (test set, before temperature scaling).
CALIBRATION_METRICS = {
    "ece": "binned ECE",
    "debiased_ece": "debiased ECE",
    "smooth_ece": "smooth ECE",
    "classwise_ece": "classwise ECE",
}
METHOD_NAMES = {"lp": "LP", "vp": "VP"}


def with_source(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with a source_seed column: records without one come from one source model."""
    out = df.copy()
    if "source_seed" not in out:
        out["source_seed"] = 0
    out["source_seed"] = out["source_seed"].fillna(0)
    return out


def paper_vp(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with the paper's VP only (ILM mapping, expansive prompt) when its VP runs
    hold several variants (params/vp_methods.yaml): the findings never average ILM with BLM
    or SMM runs (lib.study.findings.vp_methods_gap compares them). Unchanged otherwise."""
    if not {"method", "mapping", "prompt"} <= set(df):
        return df
    vp = df["method"] == "vp"
    if len(df.loc[vp, ["mapping", "prompt"]].drop_duplicates()) <= 1:
        return df
    mapping, prompt = next(iter(VP_VARIANTS))
    return df[~vp | ((df["mapping"] == mapping) & (df["prompt"] == prompt))]


def hierarchical_mean(
    values: pd.Series, n: int = RESAMPLES, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean of `values` (index levels include source_seed and seed) with its 95% cluster
    bootstrap interval: the source models resampled, each with all its pairs (one source
    model: its transfer seeds), widened for few of them (see module)."""
    values = values.dropna()
    if values.empty:
        nan = float("nan")
        return {"effect": nan, "low": nan, "high": nan, "pairs": 0, "sources": 0, "seeds": 0}
    index = values.index.to_frame(index=False)
    source = index["source_seed"] if "source_seed" in index else np.zeros(len(values))
    seed_key = index["seed"] if "seed" in index else np.arange(len(values))
    x = values.to_numpy(dtype=np.float64)
    sources = int(pd.Series(np.asarray(source)).nunique())
    seeds = int(pd.Series(list(zip(source, seed_key, strict=True))).nunique())
    outer = np.asarray(source) if sources > 1 else np.asarray(seed_key)
    counts = resample_counts([outer], n, seed)
    # few resampled units (3 source models, or 3 seeds of one): widen to a calibrated level
    units = sources if sources > 1 else seeds
    if units < 2:  # one unit: nothing to resample, no interval (not a zero-width one)
        low = high = float("nan")
    else:
        low, high = interval(x.mean(), counts @ x / counts.sum(axis=1), level, units=units)
    return {
        "effect": float(x.mean()),
        "low": low,
        "high": high,
        "pairs": len(x),
        "sources": sources,
        "seeds": seeds,
    }


def ticket_states(df: pd.DataFrame, method: str) -> set[int]:
    """Sparsity states > 0 with ticket runs of this method."""
    if df.empty or not {"method", "network", "sparsity"} <= set(df):
        return set()
    d = df[(df["method"] == method) & (df["network"] == "ticket")]
    return set(d["sparsity"].astype(int)) - {0}


def findings_state(df: pd.DataFrame) -> int | None:
    """The ticket state the findings compare with dense: of the states with both LP and VP
    ticket runs, the one with the most VP runs (ties: the sparsest). A study that runs VP
    at its main state on every target and a few VP runs at sparser states (the source
    accuracy curve) compares at the main state, not at the sparsest with a handful of pairs."""
    common = ticket_states(df, "lp") & ticket_states(df, "vp")
    if not common:
        return None
    vp = df[(df["method"] == "vp") & (df["network"] == "ticket")]
    runs = vp["sparsity"].astype(int).value_counts()
    return max(common, key=lambda k: (runs.get(k, 0), k))


def dense_vs_ticket(df: pd.DataFrame, method: str, metric: str, state: int | None = None):
    """Per (dataset, n-shot, seed, source): metric of the ticket at `state` (default the
    sparsest of this method) minus that of dense. Empty when either side is missing."""
    df = with_source(df)
    states = ticket_states(df, method)
    if metric not in df or not states:  # indexed like a pair's effects: VP - LP aligns
        return no_pairs()
    state = max(states) if state is None else state
    d = df[df["method"] == method]
    dense = d[(d["network"] == "dense") | ((d["network"] == "ticket") & (d["sparsity"] == 0))]
    sparse = d[(d["network"] == "ticket") & (d["sparsity"] == state)]
    dense = dense.groupby(PAIR_KEYS)[metric].agg(_strict_mean)
    sparse = sparse.groupby(PAIR_KEYS)[metric].agg(_strict_mean)
    both = sparse.index.intersection(dense.index)
    diffs = (sparse - dense).loc[both]
    finite = np.isfinite(diffs.to_numpy(dtype=np.float64))
    out = diffs[finite]
    out.attrs["dropped"] = int((~finite).sum())  # pairs whose records hold NaN or inf
    return out


def no_pairs() -> pd.Series:  # no pairs, indexed like pairs
    return pd.Series(dtype=float, index=pd.MultiIndex.from_tuples([], names=PAIR_KEYS))


def _strict_mean(values: pd.Series) -> float:
    # A NaN or inf among a pair's records makes the pair non-finite (counted, not averaged away).
    return float(np.mean(values.to_numpy(dtype=np.float64)))


def findings(
    df: pd.DataFrame,
    calibration_metric: str = "debiased_ece",
    n: int = RESAMPLES,
    state: int | None = None,
) -> pd.DataFrame:
    """One row per finding: claim, measure, the ticket state compared with dense (default
    findings_state), effect (mean paired difference, paper's direction positive), its 95%
    source-model bootstrap interval and width, pairs, source models, the equivalence margin
    and the verdict (lib.metrics.power.verdict), the variance components of the paired differences
    (sd_source / sd_seed / sd_residual / sd_cell and the shares of the mean's variance,
    lib.metrics.power.variance_components) and the source models for 80% power at the margin.
    VP is the paper's variant where a study has several (paper_vp)."""
    df = with_source(paper_vp(df))
    rows = []

    def add(
        claim: str, diffs: pd.Series, measure: str, kind: str, margin: float | None = None
    ) -> None:
        est = hierarchical_mean(diffs, n)
        margin = MARGINS[kind] if margin is None else margin
        parts = variance_components(diffs)
        dropped = int(diffs.attrs.get("dropped", 0))
        rows.append(
            {
                "finding": claim,
                "measure": measure,
                "state": state,
                **est,
                "width": est["high"] - est["low"],
                "margin": margin,
                "verdict": finding_verdict(est, margin),
                "dropped": dropped,
                **{f"sd_{k}": parts[k] for k in ("source", "seed", "residual", "cell")},
                **{f"share_{k}": parts.get(f"share_{k}") for k in ("source", "seed", "residual")},
                "sources_needed": sources_needed(margin, parts),
            }
        )

    state = findings_state(df) if state is None else state
    if state is None:
        gap = pd.Series(dtype=float)
    else:
        drop_lp = -dense_vs_ticket(df, "lp", "test_accuracy", state)
        drop_vp = -dense_vs_ticket(df, "vp", "test_accuracy", state)
        gap = (drop_vp - drop_lp).dropna()
        gap.attrs["dropped"] = sum(int(d.attrs.get("dropped", 0)) for d in (drop_lp, drop_vp))
    add("sparsity hurts VP accuracy more than LP accuracy", gap, "VP drop - LP drop", "accuracy")
    add(
        "...and more so at the lowest n-shot than with full data",
        _fewest_minus_full(gap),
        "gap at fewest shots - gap at full",
        "accuracy",
    )
    name = CALIBRATION_METRICS.get(calibration_metric, calibration_metric)
    for method in ("lp", "vp"):
        add(
            f"sparse tickets are worse calibrated ({METHOD_NAMES[method]}, {name})",
            dense_vs_ticket(df, method, f"test_{calibration_metric}", state),
            f"{name}: ticket - dense",
            "ece",
        )
        add(
            f"sparse tickets are worse calibrated ({METHOD_NAMES[method]}, paper's metric)",
            dense_vs_ticket(df, method, "test_seed_ece", state),
            "paper's metric: ticket - dense",
            "ece",
            paper_metric_margin(df, method),
        )
    return pd.DataFrame(rows)


def paper_metric_margin(df: pd.DataFrame, method: str) -> float:
    """The ECE margin (MARGINS["ece"]) on the paper's metric's own scale: times the ratio of
    the paper's metric to the binned ECE over this method's dense runs. The paper's metric is
    a raw-logit ECE summed per test batch and divided by the test size, several times smaller
    than an ECE (lib.metrics.calibration.seed_ece; 4-6x in the mini study), so a margin of 0.01
    on it would call almost any difference negligible. The ratio is read from dense runs
    only, never from the differences the verdict is about."""
    d = df[(df["method"] == method) & (df["network"] == "dense")] if "network" in df else df
    columns = {"test_seed_ece", "test_ece"}
    if d.empty or not columns <= set(d) or not d["test_ece"].mean() > 0:
        return MARGINS["ece"]
    return float(MARGINS["ece"] * d["test_seed_ece"].mean() / d["test_ece"].mean())


def sources_needed(margin: float, components: dict[str, float]) -> int | None:
    """Source models (at the measured transfer seeds each) for 80% power to find an effect as
    large as the margin (the smallest the study counts), by the power model of
    lib.metrics.power.sources_for_power; fixed by the margin, never by the effect measured.
    None when not even 1,000 would do or nothing was measured."""
    return sources_for_power(components, margin)


def findings_by_dataset(
    df: pd.DataFrame, calibration_metric: str = "debiased_ece", n: int = RESAMPLES
) -> pd.DataFrame:
    """findings() on each dataset alone (column `dataset`), at the pooled findings' state:
    where pooling MNIST with Fashion-MNIST hides effects of opposite sign, these differ."""
    df = with_source(paper_vp(df))
    state = findings_state(df)
    tables = [
        findings(d, calibration_metric, n, state=state).assign(dataset=name)
        for name, d in df.groupby("dataset")
    ]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _fewest_minus_full(gap: pd.Series) -> pd.Series:
    """Per (dataset, seed, source): the VP-LP gap at the fewest shots minus that at full data."""
    if gap.empty:
        return gap
    shots = gap.index.get_level_values("n_shot")
    if not (shots != -1).any() or not (shots == -1).any():
        return pd.Series(dtype=float)
    few = gap[shots == min(s for s in shots if s != -1)].droplevel("n_shot")
    full = gap[shots == -1].droplevel("n_shot")
    return (few - full).dropna()


def metric_robustness(df: pd.DataFrame, n: int = RESAMPLES) -> pd.DataFrame:
    """The calibration findings (at findings_state) under every calibration metric the frame
    has: one row per (method, metric) with effect, interval and verdict, and whether the
    verdicts agree."""
    df = with_source(df)
    state = findings_state(df)
    rows = []
    for method in ("lp", "vp"):
        for metric, name in CALIBRATION_METRICS.items():
            for ts, column in (("before", f"test_{metric}"), ("after", f"test_ts_{metric}")):
                if column not in df:
                    continue
                est = hierarchical_mean(dense_vs_ticket(df, method, column, state), n)
                rows.append(
                    {
                        "method": METHOD_NAMES[method],
                        "temperature scaling": ts,
                        "metric": name,
                        **est,
                        "verdict": verdict(est["low"], est["high"], MARGINS["ece"]),
                    }
                )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    keys = ["method", "temperature scaling"]
    table["verdicts agree"] = table.groupby(keys)["verdict"].transform(
        lambda v: v[v != "no data"].nunique() <= 1
    )
    return table


def robustness_statement(table: pd.DataFrame) -> str:
    """One sentence per method and temperature-scaling state: does the verdict depend on the
    calibration metric?"""
    if table.empty:
        return "No calibration findings: the study has no dense-ticket pairs."
    lines = []
    for (method, ts), group in table.groupby(["method", "temperature scaling"], sort=False):
        group = group[group["verdict"] != "no data"]
        if group.empty:
            continue
        parts = ", ".join(
            f"{m}: {v}" for m, v in zip(group["metric"], group["verdict"], strict=True)
        )
        same = group["verdict"].nunique() == 1
        lines.append(
            f"{method}, {ts} temperature scaling: the verdict "
            f"{'does not change' if same else 'CHANGES'} with the metric ({parts})."
        )
    return "\n".join(lines) or "No calibration findings: the study has no dense-ticket pairs."


def mapping_quality(df: pd.DataFrame, n: int = RESAMPLES) -> pd.DataFrame:
    """Fraction of target classes ILM maps to the source class of the same name (e.g. MNIST
    digit 7 to glyph "7"), per dataset, network and sparsity, all n-shots pooled, with its
    95% cluster-bootstrap interval over source models (hierarchical_mean)."""
    column = "mapping_own_class_fraction"
    if column not in df:
        return pd.DataFrame()
    d = with_source(df)
    d = d[(d["method"] == "vp") & d[column].notna()]
    rows = []
    for (dataset, network, state), group in d.groupby(["dataset", "network", "sparsity"]):
        values = group.set_index(PAIR_KEYS)[column]
        est = hierarchical_mean(values, n)
        est["low"], est["high"] = max(est["low"], 0.0), min(est["high"], 1.0)  # a fraction
        rows.append(
            {"dataset": dataset, "network": network, "sparsity": state, **est, "runs": len(group)}
        )
    return pd.DataFrame(rows).drop(columns=["pairs"], errors="ignore")


def regime(df: pd.DataFrame) -> pd.DataFrame:
    """Whether the study sits in the paper's regime (issue 15): source models, VP runs that
    converged, and VP/LP test accuracy on MNIST at full data from the dense source."""
    df = with_source(df)
    rows = [("independent source models", df["source_seed"].nunique(), ">= 3")]
    vp = df[df["method"] == "vp"]
    if "converged" in df and len(vp):
        done = vp["converged"].dropna().astype(bool)
        rows.append(("VP runs converged (share)", done.mean(), ">= 0.9"))
    full = df[(df["dataset"] == "mnist") & (df["network"] == "dense") & (df["n_shot"] == -1)]
    accuracy = full.groupby("method")["test_accuracy"].mean()
    if {"lp", "vp"} <= set(accuracy.index):
        rows.append(
            ("VP / LP test accuracy, MNIST, dense, full", accuracy.vp / accuracy.lp, ">= 0.6")
        )
    return pd.DataFrame(rows, columns=["check", "value", "wanted"])


# The slice params/vp_methods.yaml: (mapping, prompt) -> label. The first is the baseline
# every other variant is compared with (ILM-VP as the paper ran it).
VP_VARIANTS: dict[tuple[str, str], str] = {
    ("ilm", "expansive"): "ILM, expansive",
    ("blm", "expansive"): "BLM, expansive",
    ("blmpp", "expansive"): "BLM+, expansive",
    ("ilm", "smm"): "ILM, SMM",
}


def has_vp_method_runs(df: pd.DataFrame) -> bool:
    """Whether the frame holds VP runs with a BLM/BLM+ mapping or an SMM prompt."""
    if df.empty or not {"method", "mapping", "prompt"} <= set(df):
        return False
    vp = df[df["method"] == "vp"]
    return bool((vp["mapping"].isin(["blm", "blmpp"]) | (vp["prompt"] == "smm")).any())


def _variant_accuracy(df: pd.DataFrame, mapping: str, prompt: str, dense: bool, state: int):
    d = df[(df["mapping"] == mapping) & (df["prompt"] == prompt)]
    if dense:
        d = d[d["network"] == "dense"]
    else:
        d = d[(d["network"] == "ticket") & (d["sparsity"] == state)]
    return d.groupby(PAIR_KEYS)["test_accuracy"].mean()


def vp_methods_gap(df: pd.DataFrame, n: int = RESAMPLES) -> pd.DataFrame:
    """Does a better label mapping or prompt close the gap that sparsity opens?

    Per n-shot and VP variant (VP_VARIANTS): dense and ticket test accuracy, the sparsity gap
    (dense - sparsest ticket, paired on dataset, n-shot, seed and source model) with its
    source-model bootstrap 95% interval, and for the non-baseline variants the gap closed
    (ILM-expansive gap - the variant's gap, paired; > 0: the variant shrinks the gap) with
    its interval and a verdict: "closes the gap" / "widens the gap" when the interval
    excludes 0, else "inconclusive" ("too few pairs" with a single pair). Also the accuracy
    gained on the ticket over ILM expansive, and the share of the variant's runs flagged converged.
    """
    df = with_source(df)
    if df.empty or not {"mapping", "prompt"} <= set(df):
        return pd.DataFrame()
    vp = df[df["method"] == "vp"]
    states = ticket_states(vp, "vp")
    if vp.empty or not states:
        return pd.DataFrame()
    state = max(states)
    base_key = next(iter(VP_VARIANTS))
    rows = []
    shots = shots_order(vp["n_shot"])
    for shot in shots:
        d = vp[vp["n_shot"] == shot]
        base_dense = _variant_accuracy(d, *base_key, True, state)
        base_sparse = _variant_accuracy(d, *base_key, False, state)
        base_gap = (base_dense - base_sparse).dropna()
        for (mapping, prompt), label in VP_VARIANTS.items():
            dense = _variant_accuracy(d, mapping, prompt, True, state)
            sparse = _variant_accuracy(d, mapping, prompt, False, state)
            if dense.empty and sparse.empty:
                continue
            gap = hierarchical_mean((dense - sparse).dropna(), n)
            row = {
                "variant": label,
                "n_shot": int(shot),
                "sparsity": state,
                "dense_accuracy": dense.mean(),
                "ticket_accuracy": sparse.mean(),
                "gap": gap["effect"],
                "gap_low": gap["low"],
                "gap_high": gap["high"],
                "pairs": gap["pairs"],
                "sources": gap["sources"],
            }
            if (mapping, prompt) != base_key:
                closed = hierarchical_mean((base_gap - (dense - sparse)).dropna(), n)
                gain = hierarchical_mean((sparse - base_sparse).dropna(), n)
                row.update(
                    closed=closed["effect"],
                    closed_low=closed["low"],
                    closed_high=closed["high"],
                    ticket_gain=gain["effect"],
                    ticket_gain_low=gain["low"],
                    ticket_gain_high=gain["high"],
                )
                # one pair has no spread: its "interval" is a point, not evidence
                v = (
                    verdict(closed["low"], closed["high"])
                    if closed["pairs"] > 1
                    else "too few pairs"
                )
                row["verdict"] = {
                    "supported": "closes the gap",
                    "contradicted": "widens the gap",
                }.get(verdict_kind(v), v)
            runs = d[(d["mapping"] == mapping) & (d["prompt"] == prompt)]
            if "converged" in runs and runs["converged"].notna().any():
                row["converged_share"] = runs["converged"].dropna().astype(bool).mean()
            rows.append(row)
    return pd.DataFrame(rows)


def drop_by_state(df: pd.DataFrame, curve: list[dict] | None = None) -> pd.DataFrame:
    """Accuracy drop (dense - ticket at each state, paired as the findings) per dataset,
    method and n-shot, with its source-model bootstrap 95% interval; with the manifest's
    `source_curve`, the source task's own drop per state (mean over the study's source
    models) in the column `source_drop`: where the source accuracy starts to fall, and
    what transfer does there."""
    df = with_source(paper_vp(df))
    rows = []
    for (dataset, method, shot), d in df.groupby(["dataset", "method", "n_shot"]):
        for state in sorted(ticket_states(d, method)):
            est = hierarchical_mean(-dense_vs_ticket(d, method, "test_accuracy", state))
            if est["pairs"]:
                rows.append(
                    {
                        "dataset": dataset,
                        "method": METHOD_NAMES[method],
                        "n_shot": int(shot),
                        "state": state,
                        **est,
                    }
                )
    table = pd.DataFrame(rows)
    if curve and not table.empty:
        points = pd.DataFrame(curve)
        points = points[(points["kind"] == "dyn4") & points["source_seed"].isin(df["source_seed"])]
        dense = points[points["state"] == 0].set_index("source_seed")["test_accuracy"]
        points = points.assign(
            drop=dense.loc[points["source_seed"]].to_numpy() - points["test_accuracy"].to_numpy()
        )
        source = points.groupby("state")["drop"].mean()
        table["source_drop"] = table["state"].map(source)
    return table
