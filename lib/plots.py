"""Seaborn figures for the transfer and report notebooks. Each takes records or the tidy
frame (lib.results.results_frame) and returns a matplotlib Figure."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from lib.config import kept_fraction
from lib.findings import CALIBRATION_METRICS, mapping_quality

sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
METHOD_NAMES = {"lp": "LP", "vp": "VP (ILM)"}


def save(fig: plt.Figure, folder: str | Path, name: str) -> list[Path]:
    """PNG (for reading) and SVG (for papers); SVG without a date, so reruns are identical."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.svg"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"Date": None})
    return paths


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the columns the figures facet on: nominal sparsity %, shots label, method label."""
    df = frame.copy()
    df["sparsity_pct"] = (100 * (1 - kept_fraction(df["sparsity"]))).round(1)
    df["shots"] = df["n_shot"].map(lambda n: "full" if n == -1 else f"{n}-shot")
    df["Method"] = df["method"].map(METHOD_NAMES).fillna(df["method"])
    order = sorted(df["n_shot"].unique(), key=lambda n: np.inf if n == -1 else n)
    df["shots"] = pd.Categorical(df["shots"], [("full" if n == -1 else f"{n}-shot") for n in order])
    return df


# ---------------------------------------------------------------- one run


def history(records: list[dict[str, Any]]) -> plt.Figure:
    """Training curves of each run: train loss, train/val accuracy, val ECE."""
    rows = [
        {**h, "run": f"{r['params']['n_shot']}-shot s{r['params']['seed']}"}
        for r in records
        for h in r["history"]
    ]
    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, col in zip(
        axes, ("train_loss", "train_accuracy", "val_accuracy", "val_ece"), strict=True
    ):
        sns.lineplot(df, x="epoch", y=col, hue="run", ax=ax, legend=ax is axes[-1])
        ax.set_title(col.replace("_", " "))
    if axes[-1].get_legend():
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    return fig


def reliability(record: dict[str, Any], ax: plt.Axes | None = None, title: str = "") -> plt.Axes:
    """Reliability diagram: accuracy per confidence bin (bars) with its 95% bootstrap band
    (black whiskers, when the record has one), mean confidence (the hatched gap's other
    end) and the share of test samples per bin (grey, bottom)."""
    ax = ax or plt.subplots(figsize=(4, 4))[1]
    bins = pd.DataFrame(record["reliability"]["raw"])
    bins = bins[bins["count"] > 0]
    width = (bins["upper"] - bins["lower"]).to_numpy()
    ax.bar(
        bins["lower"],
        bins["accuracy"],
        width=width,
        align="edge",
        color="tab:blue",
        alpha=0.7,
        edgecolor="k",
        lw=0.5,
        label="accuracy",
    )
    if "accuracy_low" in bins:
        centers = bins["lower"] + width / 2
        ax.errorbar(
            centers,
            bins["accuracy"],
            yerr=[
                bins["accuracy"] - bins["accuracy_low"],
                bins["accuracy_high"] - bins["accuracy"],
            ],
            fmt="none",
            ecolor="k",
            elinewidth=1,
            capsize=2,
            label="95% bootstrap band",
        )
    ax.bar(
        bins["lower"],
        bins["confidence"] - bins["accuracy"],
        bottom=bins["accuracy"],
        width=width,
        align="edge",
        fill=False,
        hatch="//",
        edgecolor="tab:red",
        lw=0.8,
        label="gap to confidence",
    )
    share = bins["count"] / bins["count"].sum()
    ax.bar(
        bins["lower"], 0.15 * share, width=width, align="edge", color="0.4", label="samples (share)"
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence",
        ylabel="accuracy",
        title=title or calibration_title(record["metrics"]["test"]),
    )
    ax.legend(loc="upper left", fontsize="x-small")
    return ax


def calibration_title(m: dict[str, Any]) -> str:
    """acc, ECE [95% interval], debiased and smooth ECE of one record's metrics, as present."""
    text = f"acc {m['accuracy']:.3f}  ECE {m['ece']:.3f}"
    if "ece_low" in m:
        text += f" [{m['ece_low']:.3f}, {m['ece_high']:.3f}]"
    extra = [
        f"{name} {m[key]:.3f}"
        for key, name in (("debiased_ece", "deb."), ("smooth_ece", "sm."))
        if key in m
    ]
    return text + ("\n" + "  ".join(extra) if extra else "")


def prompt_image(pattern: torch.Tensor, ax: plt.Axes | None = None, title: str = "") -> plt.Axes:
    """The learned border (sigmoid(delta) * mask), contrast-stretched to be visible."""
    ax = ax or plt.subplots(figsize=(3, 3))[1]
    img = pattern.detach().float().permute(1, 2, 0).numpy()
    if img.max() > img.min():
        img = (img - img.min()) / (img.max() - img.min())
    ax.imshow(img, interpolation="nearest")
    ax.set(title=title or "learned prompt", xticks=[], yticks=[])
    return ax


def run_overview(record: dict[str, Any], pattern: torch.Tensor | None) -> plt.Figure:
    """Reliability diagram and, for VP, the learned prompt of one run."""
    fig, axes = plt.subplots(1, 2 if pattern is not None else 1, figsize=(8, 4), squeeze=False)
    reliability(record, axes[0, 0])
    if pattern is not None:
        prompt_image(pattern, axes[0, 1])
    fig.tight_layout()
    return fig


def mapping_table(record: dict[str, Any], target_classes: tuple[str, ...] | None) -> pd.DataFrame:
    """Target class -> source class(es) chosen by the label mapping."""
    m = record["mapping"]
    if not m.get("indices"):
        return pd.DataFrame()
    targets = target_classes or tuple(map(str, range(len(m["indices"]))))
    names = m.get("source_names") or [[str(s) for s in row] for row in m["indices"]]
    return pd.DataFrame({"target": targets, "source": [", ".join(n) for n in names]})


# ---------------------------------------------------------------- the study


def versus_sparsity(df: pd.DataFrame, metric: str, label: str) -> sns.FacetGrid:
    """`metric` vs sparsity per dataset (rows) and n-shot (columns), LP vs VP, sd over seeds."""
    data = tidy(df[df["network"].isin(["dense", "ticket"])])
    grid = sns.relplot(
        data,
        x="sparsity_pct",
        y=metric,
        hue="Method",
        style="Method",
        row="dataset",
        col="shots",
        kind="line",
        marker="o",
        errorbar="sd",
        height=2.6,
        aspect=1.2,
        facet_kws={"sharey": "row"},
    )
    grid.set_axis_labels("sparsity (%)", label)
    grid.set_titles("{row_name} | {col_name}")
    return grid


def networks(df: pd.DataFrame) -> plt.Figure:
    """Dense vs IMP ticket vs random pruning at the same sparsity (all n-shots pooled)."""
    states = sorted(df.loc[df["network"] == "random_pruned", "sparsity"].unique())
    data = tidy(
        df[
            df["network"].isin(["dense", "ticket", "random_pruned"])
            & (df["sparsity"].isin([0, *states]))
        ]
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, (metric, label) in zip(
        axes, (("test_accuracy", "test accuracy"), ("test_ece", "test ECE")), strict=True
    ):
        sns.barplot(data, x="sparsity_pct", y=metric, hue="network", ax=ax, errorbar="sd")
        ax.set(xlabel="sparsity (%)", ylabel=label)
    fig.suptitle("IMP ticket vs random pruning (mean ± sd over datasets, methods, seeds)")
    fig.tight_layout()
    return fig


def reliability_pair(records: list[dict[str, Any]], dataset: str) -> plt.Figure:
    """Reliability diagrams of dense vs the sparsest ticket, LP and VP, full data, seed 1."""
    pick = [
        r
        for r in records
        if r["params"]["dataset"] == dataset
        and r["params"]["network"] in ("dense", "ticket")
        and r["params"]["n_shot"] == -1
    ]
    sparsest = max((r["params"]["sparsity"] for r in pick), default=0)
    fig, axes = plt.subplots(2, 2, figsize=(8, 8))
    for i, method in enumerate(("lp", "vp")):
        for j, state in enumerate((0, sparsest)):
            match = sorted(
                (
                    r
                    for r in pick
                    if r["params"]["method"] == method and r["params"]["sparsity"] == state
                ),
                key=lambda r: r["params"]["seed"],
            )
            if match:
                m = match[0]["metrics"]["test"]
                reliability(
                    match[0],
                    axes[i, j],
                    title=(
                        f"{METHOD_NAMES[method]}, {100 * (1 - kept_fraction(state)):.0f}% sparse\n"
                        + calibration_title(m)
                    ),
                )
            else:
                axes[i, j].set_axis_off()
    fig.suptitle(f"{dataset}: dense vs sparsest ticket")
    fig.tight_layout()
    return fig


def mapping_heatmaps(
    records: list[dict[str, Any]], dataset: str, target_classes: tuple[str, ...] | None
) -> plt.Figure:
    """How often (over seeds) each target class maps to each source class: dense vs sparsest."""
    pick = [
        r
        for r in records
        if r["params"]["dataset"] == dataset
        and r["params"]["method"] == "vp"
        and r["params"]["network"] in ("dense", "ticket")
        and r["params"]["n_shot"] == -1
        and r["mapping"].get("indices")
    ]
    sparsest = max((r["params"]["sparsity"] for r in pick), default=0)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, state in zip(axes, (0, sparsest), strict=True):
        rows = [
            (t, name)
            for r in pick
            if r["params"]["sparsity"] == state
            for t, names in enumerate(r["mapping"].get("source_names", r["mapping"]["indices"]))
            for name in names
        ]
        if not rows:
            ax.set_axis_off()
            continue
        counts = pd.crosstab(
            pd.Series([t for t, _ in rows], name="target"),
            pd.Series([str(n) for _, n in rows], name="source"),
        )
        if target_classes:
            counts.index = [target_classes[t] for t in counts.index]
        sns.heatmap(counts, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax)
        ax.set_title(f"{100 * (1 - kept_fraction(state)):.0f}% sparse")
    fig.suptitle(f"{dataset}: ILM label mapping (count over seeds)")
    fig.tight_layout()
    return fig


def own_class(df: pd.DataFrame) -> plt.Figure:
    """Fraction of target classes mapped to the source glyph of the same name, with its 95%
    hierarchical-bootstrap interval (lib.findings.mapping_quality; n-shots pooled)."""
    table = mapping_quality(df)
    table = table[table["network"].isin(["dense", "ticket"])] if not table.empty else table
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (dataset, group) in enumerate(table.groupby("dataset")):
        group = group.sort_values("sparsity")
        x = 100 * (1 - kept_fraction(group["sparsity"])) + 0.6 * i  # datasets side by side
        ax.errorbar(
            x,
            group["effect"],
            yerr=[group["effect"] - group["low"], group["high"] - group["effect"]],
            marker="o",
            capsize=3,
            label=dataset,
        )
    ax.set(xlabel="sparsity (%)", ylabel="classes mapped to own glyph", ylim=(-0.02, 1.02))
    ax.set_title("ILM mapping quality (mean, 95% interval over source models and seeds)")
    if ax.has_data():
        ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    return fig


def confidence(df: pd.DataFrame) -> plt.Figure:
    """Mean true-class probability of correct and of wrong predictions vs sparsity."""
    names = {
        "confidence_mean_true_prob_correct": "correct",
        "confidence_mean_true_prob_wrong": "wrong",
    }
    return _lines_vs_sparsity(
        df,
        names,
        "predictions",
        "true-class probability",
        style="Method",
        col="dataset",
        height=3,
        aspect=1.1,
    )


def paper_metric(df: pd.DataFrame) -> plt.Figure:
    """The paper's legacy metric next to the true top-label ECE, vs sparsity."""
    names = {"test_ece": "true ECE", "test_seed_ece": "paper's metric"}
    return _lines_vs_sparsity(
        df,
        names,
        "metric",
        "calibration error",
        style="metric",
        col="Method",
        row="dataset",
        height=2.6,
        aspect=1.3,
    )


def _lines_vs_sparsity(
    df: pd.DataFrame, columns: dict[str, str], hue: str, ylabel: str, **relplot: Any
) -> plt.Figure:
    """One line per column of `columns` (renamed by it, told apart by `hue`) vs sparsity,
    dense and tickets, mean and sd over seeds."""
    data = tidy(df[df["network"].isin(["dense", "ticket"])])
    long = data.melt(
        id_vars=["sparsity_pct", "Method", "dataset"],
        value_vars=list(columns),
        var_name=hue,
        value_name=ylabel,
    )
    long[hue] = long[hue].map(columns)
    grid = sns.relplot(
        long,
        x="sparsity_pct",
        y=ylabel,
        hue=hue,
        kind="line",
        marker="o",
        errorbar="sd",
        **relplot,
    )
    grid.set_axis_labels("sparsity (%)", ylabel)
    return grid.figure


def quantization(df: pd.DataFrame) -> plt.Figure:
    """Accuracy and ECE vs bits, for the quantized dense model and ticket (32 = FP32)."""
    q = df[
        (df["network"] == "quantized")
        | (
            (df["network"].isin(["dense", "ticket"]))
            & df["sparsity"].isin(df.loc[df["network"] == "quantized", "sparsity"].unique())
            & df["dataset"].isin(df.loc[df["network"] == "quantized", "dataset"].unique())
        )
    ]
    data = tidy(q)
    data["bits"] = data["weight_bits"].astype(str).where(data["network"] == "quantized", "32")
    data["base"] = data["sparsity_pct"].map(lambda s: f"{s:.0f}% sparse")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, (metric, label) in zip(
        axes, (("test_accuracy", "test accuracy"), ("test_ece", "test ECE")), strict=True
    ):
        sns.pointplot(
            data,
            x="bits",
            y=metric,
            hue="base",
            errorbar="sd",
            ax=ax,
            order=sorted(data["bits"].unique(), key=int),
            dodge=0.2 if data["base"].nunique() > 1 else False,
        )
        ax.set(xlabel="bits (weights = activations)", ylabel=label)
    fig.suptitle("quantization: accuracy and ECE vs bits")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- calibration you can trust


def ece_estimators(df: pd.DataFrame, after_ts: bool = False) -> plt.Figure:
    """Binned, debiased, smooth (and classwise) ECE vs sparsity, side by side: does the picture
    depend on the estimator? Mean and sd over seeds and source models."""
    prefix = "test_ts_" if after_ts else "test_"
    names = {f"{prefix}{m}": n for m, n in CALIBRATION_METRICS.items() if f"{prefix}{m}" in df}
    return _lines_vs_sparsity(
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
            ax.errorbar(
                x,
                g[f"test_{metric}"],
                yerr=[g[f"test_{metric}"] - g[low], g[high] - g[f"test_{metric}"]],
                fmt="o",
                ms=3,
                capsize=1.5,
                lw=0.8,
                color=colors[shot],
                label=shot if run == groups[0][1] else None,
            )
        ax.set_xticks(range(len(states)), [f"{v:.0f}" for v in states])
        ax.set(title=f"{dataset} | {method}", xlabel="sparsity (%)", ylabel=f"test {metric}")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1, 0.98), title="n-shot")
    fig.suptitle(f"test {metric} with 95% bootstrap intervals (one bar per run: seed/source)")
    fig.tight_layout()
    return fig


VERDICT_COLORS = {
    "supported": "tab:green",
    "contradicted": "tab:red",
    "inconclusive": "0.45",
    "no data": "0.8",
}


def findings_forest(table: pd.DataFrame) -> plt.Figure:
    """Each finding's effect (paper's direction positive) with its 95% interval, colored by
    verdict: supported / contradicted only when the interval excludes 0."""
    table = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(table) + 1.2))
    for y, row in table.iterrows():
        color = VERDICT_COLORS.get(row["verdict"], "k")
        if np.isfinite(row["effect"]):
            ax.errorbar(
                row["effect"],
                y,
                xerr=[[row["effect"] - row["low"]], [row["high"] - row["effect"]]],
                fmt="o",
                color=color,
                capsize=3,
            )
        ax.annotate(
            row["verdict"],
            (1.01, y),
            xycoords=("axes fraction", "data"),
            va="center",
            color=color,
            fontsize="small",
        )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(table)), table["finding"])
    ax.invert_yaxis()
    ax.set(xlabel="effect (paired difference; > 0 is the paper's direction)")
    ax.set_title("findings: mean and 95% interval over source models and seeds", fontsize="medium")
    fig.tight_layout()
    return fig


def bias_of_estimators(rows: list[dict[str, Any]]) -> plt.Figure:
    """Bias (mean estimate - true ECE) of each ECE estimator on known calibration curves at
    the study's test size (lib.calibration.estimator_bias)."""
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


# ---------------------------------------------------------------- the pretrain notebook


def source_samples(dataset: Any, classes: list[str], count: int = 16) -> plt.Figure:
    """`count` training images of the source corpus, evenly spaced, titled by class."""
    fig, axes = plt.subplots(2, count // 2, figsize=(12, 3.4))
    step = max(1, len(dataset) // count)
    for ax, i in zip(axes.flat, range(0, len(dataset), step), strict=False):
        image, label = dataset[i]
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(classes[label])
        ax.axis("off")
    return fig


def source_training_curves(curves: pd.DataFrame) -> plt.Figure:
    """Training loss and accuracy per epoch of every IMP level (lib.prune.history_frame)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, column in zip(axes, ("loss", "accuracy"), strict=True):
        sns.lineplot(
            curves,
            x="epoch",
            y=column,
            hue="level",
            style="kind",
            marker="o",
            ax=ax,
            legend=ax is axes[-1],
        )
    sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1, 1), ncol=2)
    fig.tight_layout()
    return fig


def source_accuracy_vs_sparsity(table: pd.DataFrame, title: str) -> plt.Figure:
    """Test accuracy of the tickets and the random controls over sparsity (lib.prune.imp_table),
    the dense model's as a dotted line."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    sns.lineplot(
        table,
        x="sparsity %",
        y="test accuracy %",
        hue="kind",
        style="kind",
        markers=True,
        dashes=False,
        ax=ax,
    )
    dense = table.query("kind == 'ticket' and state == 0")["test accuracy %"].item()
    ax.axhline(dense, color="gray", lw=0.8, ls=":", label="dense")
    ax.set_title(title)
    ax.legend()
    return fig
