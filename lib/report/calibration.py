"""Figures of the report's calibration sections: which ECE estimator to trust,
intervals of every run, reliability diagrams dense vs sparse, confidence analysis."""

from __future__ import annotations

import itertools
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from lib.models.states import kept_fraction
from lib.report.figures import METHOD_NAMES, legend_entries, lines_vs_sparsity, mark_empty, tidy
from lib.report.run import calibration_title, reliability
from lib.study.adjusted import adjusted_mean
from lib.study.console import shots_label
from lib.study.findings import CALIBRATION_METRICS, dense_vs_ticket


def reliability_pair(
    records: list[dict[str, Any]], dataset: str, state: int | None = None
) -> plt.Figure:
    """Reliability diagrams of dense vs the ticket at `state` (default the sparsest), LP and
    VP: one run each, full data (else the most shots), the lowest transfer seed and source
    model present in all panels; each panel's title names its run."""
    pick = [
        r
        for r in records
        if r["params"]["dataset"] == dataset and r["params"]["network"] in ("dense", "ticket")
    ]
    shots = [r["params"]["n_shot"] for r in pick]
    n_shot = -1 if -1 in shots else max(shots, default=-1)
    pick = [r for r in pick if r["params"]["n_shot"] == n_shot]
    if state is None:
        state = max((r["params"]["sparsity"] for r in pick), default=0)

    def first(method: str, sparsity: int) -> dict[str, Any] | None:
        match = [
            r
            for r in pick
            if r["params"]["method"] == method and r["params"]["sparsity"] == sparsity
        ]
        return min(
            match,
            key=lambda r: (r["params"].get("source_seed", 0), r["params"]["seed"]),
            default=None,
        )

    fig, axes = plt.subplots(2, 2, figsize=(10, 9.5))
    for i, method in enumerate(("lp", "vp")):
        for j, sparsity in enumerate((0, state)):
            record = first(method, sparsity)
            if record is None:
                axes[i, j].set_axis_off()
                continue
            m = record["metrics"]["test"]
            p = record["params"]
            reliability(
                record,
                axes[i, j],
                title=(
                    f"{METHOD_NAMES[method]}, {100 * (1 - kept_fraction(sparsity)):.0f}% sparse, "
                    f"seed {p['seed']}, source {p.get('source_seed', 0)}\n" + calibration_title(m)
                ),
            )
    fig.suptitle(
        f"{dataset}, {shots_label(n_shot)}: dense vs the state-{state} ticket (one run each)"
    )
    fig.tight_layout()
    return fig


def confidence(df: pd.DataFrame) -> plt.Figure:
    """Mean true-class probability of correct and of wrong predictions vs sparsity."""
    names = {
        "confidence_mean_true_prob_correct": "correct",
        "confidence_mean_true_prob_wrong": "wrong",
    }
    return lines_vs_sparsity(
        df,
        names,
        "predictions",
        "true-class probability",
        style="Method",
        col="dataset",
        height=3,
        aspect=1.1,
    )


def ece_estimators(df: pd.DataFrame, after_ts: bool = False) -> plt.Figure:
    """Binned, debiased, smooth (and classwise) ECE vs sparsity, side by side: does the picture
    depend on the estimator? Mean and sd over seeds and source models."""
    prefix = "test_ts_" if after_ts else "test_"
    names = {f"{prefix}{m}": n for m, n in CALIBRATION_METRICS.items() if f"{prefix}{m}" in df}
    return lines_vs_sparsity(
        df,
        names,
        "estimator",
        "calibration error" + (" after TS" if after_ts else ""),
        style="estimator",
        col="Method",
        row="dataset",
        height=2.6,
        aspect=1.3,
    )


def ece_intervals(df: pd.DataFrame, metric: str = "ece") -> plt.Figure:
    """Test ECE of every run with its 95% bootstrap interval (test-set noise alone) vs
    sparsity: rows datasets, columns methods, colors n-shots, runs (seeds, source models)
    side by side."""
    low, high = f"test_{metric}_low", f"test_{metric}_high"
    data = tidy(df[df["network"].isin(["dense", "ticket"])])
    if data.empty or low not in data:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no ECE intervals in these records", ha="center", va="center")
        return fig
    datasets, methods = sorted(data["dataset"].unique()), sorted(data["Method"].unique())
    fig, axes = plt.subplots(
        len(datasets),
        len(methods),
        figsize=(5.5 * len(methods), 2.8 * len(datasets)),
        squeeze=False,
        sharey="row",
    )
    shots = list(data["shots"].cat.categories)
    colors = dict(zip(shots, sns.color_palette("colorblind", len(shots)), strict=True))
    source = data["source_seed"] if "source_seed" in data else 0
    data = data.assign(
        run=data["seed"].astype(str) + "/" + pd.Series(source, index=data.index).astype(str)
    )
    for (i, dataset), (j, method) in itertools.product(enumerate(datasets), enumerate(methods)):
        ax = axes[i, j]
        d = data[(data["dataset"] == dataset) & (data["Method"] == method)]
        states = sorted(d["sparsity_pct"].unique())
        groups = list(itertools.product(shots, sorted(d["run"].unique())))
        step = 0.8 / max(len(groups), 1)
        for k, (shot, run) in enumerate(groups):
            g = d[(d["shots"] == shot) & (d["run"] == run)].sort_values("sparsity_pct")
            if g.empty:
                continue
            x = np.array([states.index(v) for v in g["sparsity_pct"]]) - 0.4 + (k + 0.5) * step
            # Percentile intervals, drawn as lines: binned ECE is biased upward, so its
            # bootstrap distribution can lie wholly above the estimate (no error bar can).
            ax.vlines(x, g[low], g[high], color=colors[shot], lw=0.8)
            ax.plot(
                x,
                g[f"test_{metric}"],
                "o",
                ms=3,
                color=colors[shot],
                label=shot if run == groups[0][1] else None,
            )
        ax.set_xticks(range(len(states)), [f"{v:.0f}" for v in states])
        ax.set(title=f"{dataset} | {method}", xlabel="sparsity (%)", ylabel=f"test {metric}")
    handles, labels = legend_entries(axes)
    if labels:
        order = sorted(range(len(labels)), key=lambda k: shots.index(labels[k]))
        fig.legend(
            [handles[k] for k in order],
            [labels[k] for k in order],
            loc="upper left",
            bbox_to_anchor=(1, 0.98),
            title="n-shot",
        )
    mark_empty(axes)
    fig.suptitle(f"test {metric} with 95% bootstrap intervals (one bar per run: seed/source)")
    fig.tight_layout()
    return fig


def bias_of_estimators(rows: list[dict[str, Any]]) -> plt.Figure:
    """Bias (mean estimate - true ECE) of each ECE estimator on known calibration curves at
    the study's test size (lib.metrics.calibration.estimator_bias)."""
    data = pd.DataFrame(rows)
    data["estimator"] = data["metric"].map(CALIBRATION_METRICS).fillna(data["metric"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    sns.barplot(data, x="curve", y="bias", hue="estimator", ax=ax)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="synthetic calibration curve", ylabel="mean estimate - true ECE")
    ax.set_title(f"bias of the ECE estimators at {int(data['n'].iloc[0])} test samples")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig


def equal_accuracy(df: pd.DataFrame, metric: str, state: int, method: str = "vp") -> plt.Figure:
    """Per source model: the mean paired change in `metric` (ticket at `state` - dense)
    against the mean paired change in accuracy, with the least-squares line whose intercept is
    the calibration change at equal accuracy (lib.study.adjusted)."""
    pairs = pd.concat(
        {
            "acc": dense_vs_ticket(df, method, "test_accuracy", state),
            "cal": dense_vs_ticket(df, method, f"test_{metric}", state),
        },
        axis=1,
    ).dropna()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    name = CALIBRATION_METRICS.get(metric, metric)
    if pairs.empty:
        mark_empty(ax)
        return fig
    by_source = pairs.groupby(level="source_seed").mean()
    sns.scatterplot(data=by_source, x="acc", y="cal", ax=ax, s=40, color="C1")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(0, color="0.6", lw=0.8)
    if len(by_source) >= 3 and by_source["acc"].std() > 0:
        est = adjusted_mean(pairs["cal"], pairs["acc"])
        slope, intercept = est["slope"], est["effect"]
        xs = np.linspace(min(0.0, by_source["acc"].min()), by_source["acc"].max(), 50)
        label = (
            f"at equal accuracy: {intercept:+.3f} [{est['low']:+.3f}, {est['high']:+.3f}]"
            f"\nslope {slope:+.2f}"
        )
        ax.plot(xs, intercept + slope * xs, color="C0", lw=1.5, label=label)
        below, above = intercept - est["low"], est["high"] - intercept
        ax.errorbar([0], [intercept], yerr=[[below], [above]], fmt="o", color="C0", capsize=3)
        ax.legend(loc="best", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set(
        xlabel=f"accuracy change, ticket {state} - dense",
        ylabel=f"{name} change, ticket - dense",
        title=f"{METHOD_NAMES.get(method, method)}: one point per source model ({len(by_source)})",
    )
    fig.tight_layout()
    return fig
