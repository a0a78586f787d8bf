"""Seaborn figures for the transfer and report notebooks. Each takes records or the tidy
frame (lib.results.results_frame) and returns a matplotlib Figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

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
    df["sparsity_pct"] = (100 * (1 - 0.8 ** df["sparsity"])).round(1)
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
    """Reliability diagram: accuracy per confidence bin (bars), mean confidence (the hatched
    gap's other end) and the share of test samples per bin (grey, bottom)."""
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
    m = record["metrics"]["test"]
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence",
        ylabel="accuracy",
        title=title or f"acc {m['accuracy']:.3f}  ECE {m['ece']:.3f}",
    )
    ax.legend(loc="upper left", fontsize="small")
    return ax


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
                        f"{METHOD_NAMES[method]}, {100 * (1 - 0.8**state):.0f}% sparse\n"
                        f"acc {m['accuracy']:.3f}, ECE {m['ece']:.3f}"
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
        ax.set_title(f"{100 * (1 - 0.8**state):.0f}% sparse")
    fig.suptitle(f"{dataset}: ILM label mapping (count over seeds)")
    fig.tight_layout()
    return fig


def own_class(df: pd.DataFrame) -> plt.Figure:
    """Fraction of target classes mapped to the source glyph of the same name."""
    data = tidy(
        df[
            (df["method"] == "vp")
            & df["mapping_own_class_fraction"].notna()
            & df["network"].isin(["dense", "ticket"])
        ]
    )
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sns.lineplot(
        data,
        x="sparsity_pct",
        y="mapping_own_class_fraction",
        hue="dataset",
        style="shots",
        marker="o",
        errorbar="sd",
        ax=ax,
    )
    ax.set(xlabel="sparsity (%)", ylabel="classes mapped to own glyph", ylim=(-0.02, 1.02))
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1))
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
