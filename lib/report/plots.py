"""Seaborn figures for the transfer and report notebooks. Each takes records or the tidy
frame (lib.study.results.results_frame) and returns a matplotlib Figure."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from lib.models.states import kept_fraction
from lib.study.console import shots_label, shots_order
from lib.study.findings import CALIBRATION_METRICS, hierarchical_mean, mapping_quality

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
    df["shots"] = df["n_shot"].map(shots_label)
    df["Method"] = df["method"].map(METHOD_NAMES).fillna(df["method"])
    df["shots"] = pd.Categorical(df["shots"], [shots_label(n) for n in shots_order(df["n_shot"])])
    return df


# ---------------------------------------------------------------- one run


def _legend_entries(axes: Any) -> tuple[list, list[str]]:
    """Every facet's legend entries, each label once, in order of first appearance (a facet
    may lack a method or an n-shot)."""
    entries: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    return list(entries.values()), list(entries)


def history(records: list[dict[str, Any]]) -> plt.Figure:
    """Training curves: train loss, train/val accuracy and val ECE per epoch, one line per
    run (source model x seed), coloured by data budget. Runs are drawn, not averaged: an
    average over source models would hide the spread the study's intervals resample."""
    rows = [
        {
            **h,
            "n_shot": r["params"]["n_shot"],
            "run": (r["params"].get("source_seed", 0), r["params"]["n_shot"], r["params"]["seed"]),
        }
        for r in records
        for h in r["history"]
    ]
    df = pd.DataFrame(rows)
    df["data"] = df["n_shot"].map(shots_label)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, col in zip(
        axes, ("train_loss", "train_accuracy", "val_accuracy", "val_ece"), strict=True
    ):
        sns.lineplot(
            df,
            x="epoch",
            y=col,
            hue="data",
            hue_order=[shots_label(n) for n in shots_order(df["n_shot"])],
            units="run",
            estimator=None,  # every run its own line: no averaging, no bootstrap band
            lw=1,
            alpha=0.8,
            ax=ax,
            legend=ax is axes[-1],
        )
        ax.set_title(col.replace("_", " "))
    if axes[-1].get_legend():
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1, 1), title="data")
    fig.suptitle(f"{len(records)} runs, one line each", x=0.01, ha="left", fontsize=9)
    fig.tight_layout()
    return fig


def reliability(record: dict[str, Any], ax: plt.Axes | None = None, title: str = "") -> plt.Axes:
    """Reliability diagram: accuracy per confidence bin (bars) with its 95% bootstrap band
    (black whiskers, when the record has one), the gap to mean confidence (hatched), and the
    share of test samples per bin (grey, in a strip below the diagram). Bins with fewer
    than 5 samples appear in the strip only: their accuracy says nothing."""
    ax = ax or plt.subplots(figsize=(4, 4))[1]
    bins = pd.DataFrame(record["reliability"]["raw"])
    bins = bins[bins["count"] > 0]
    share = bins["count"] / bins["count"].sum()
    # A bin of one or two samples has an accuracy of 0 or 1 that says nothing: such bins
    # are drawn in the share strip only.
    strip_bins, bins = bins, bins[bins["count"] >= 5]
    width = (bins["upper"] - bins["lower"]).to_numpy()
    ax.bar(
        bins["lower"],
        bins["accuracy"],
        width=width,
        align="edge",
        lw=0.5,
        edgecolor="k",
        color="tab:blue",
        alpha=0.75,
        label="accuracy (bins of >= 5 samples)",
    )
    if "accuracy_low" in bins:
        centers = bins["lower"] + width / 2
        ax.errorbar(
            centers,
            bins["accuracy"],
            yerr=[
                (bins["accuracy"] - bins["accuracy_low"]).clip(lower=0),
                (bins["accuracy_high"] - bins["accuracy"]).clip(lower=0),
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
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    # The share of test samples per bin in its own strip below: visible at any scale.
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    strip = make_axes_locatable(ax).append_axes("bottom", size="24%", pad=0.08, sharex=ax)
    strip.bar(
        strip_bins["lower"],
        share,
        width=(strip_bins["upper"] - strip_bins["lower"]).to_numpy(),
        align="edge",
        color="0.35",
        lw=0,
    )
    strip.set(xlim=(0, 1), ylim=(0, 1.15 * share.max()), xlabel="confidence")
    strip.set_ylabel("samples", fontsize="x-small")
    strip.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    strip.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(2))
    strip.tick_params(labelsize="x-small")
    ax.tick_params(labelbottom=False)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        ylabel="accuracy",
        title=title or run_title(record) + "\n" + calibration_title(record["metrics"]["test"]),
    )
    ax.legend(loc="upper left", fontsize="x-small")
    return ax


def run_title(record: dict[str, Any]) -> str:
    """'mnist, 10-shot, seed 1, source 0, ticket 93% sparse, VP (ILM)': which run a panel shows."""
    p = record["params"]
    network = p["network"] if p["network"] != "ticket" else "ticket"
    if p.get("sparsity"):
        network += f" {100 * (1 - kept_fraction(p['sparsity'])):.0f}% sparse"
    if p["network"] == "quantized":
        network += f" W{p['weight_bits']}A{p['act_bits']}"
    source = f", source {p['source_seed']}" if "source_seed" in p else ""
    return (
        f"{p['dataset']}, {shots_label(p['n_shot'])}, seed {p['seed']}{source}, {network}, "
        f"{METHOD_NAMES.get(p['method'], p['method'])}"
    )


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
    """The learned prompt (sigmoid(delta) * mask), mean over the RGB channels, on a color
    scale with its colorbar; the image's own area (not learned) is left blank (grey)."""
    ax = ax or plt.subplots(figsize=(3.6, 3))[1]
    values = pattern.detach().float()
    learned = (values != 0).any(0).numpy()
    image = np.where(learned, values.mean(0).numpy(), np.nan)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("0.85")
    shown = ax.imshow(image, interpolation="nearest", cmap=cmap)
    bar = ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("prompt value (mean over RGB)", fontsize="small")
    ax.set(title=title or "learned prompt (grey: the target image)", xticks=[], yticks=[])
    return ax


def run_overview(record: dict[str, Any], pattern: torch.Tensor | None) -> plt.Figure:
    """Reliability diagram and, for VP, the learned prompt of one run."""
    fig, axes = plt.subplots(
        1,
        2 if pattern is not None else 1,
        figsize=(10 if pattern is not None else 5, 4.6),
        squeeze=False,
    )
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


def _states_line(ax: plt.Axes, g: pd.DataFrame, x: str, y: str, shift: float, **style: Any):
    """Mean and sd of `y` per value of `x`: markers with error bars, joined by a line only
    where the method was measured at three or more states (two points are not a curve)."""
    stats = g.groupby(x)[y].agg(["mean", "std", "count"]).reset_index().sort_values(x)
    joined = len(stats) >= 3
    return ax.errorbar(
        stats[x] + shift,
        stats["mean"],
        yerr=stats["std"].fillna(0),
        fmt="o-" if joined else "o",
        ms=5,
        capsize=3,
        lw=1.3 if joined else 0,
        elinewidth=1,
        **style,
    )


def chance_level(dataset: str) -> float | None:
    """1 / classes of the dataset (None when the registry does not know it)."""
    from lib.datasets.registry import get_spec

    try:
        return 1.0 / get_spec(dataset).num_classes
    except ValueError:
        return None


def versus_sparsity(df: pd.DataFrame, metric: str, label: str, chance: bool = False) -> plt.Figure:
    """`metric` vs sparsity per dataset (rows) and n-shot (columns), LP vs VP: mean and sd
    over runs (transfer seeds x source models) at each measured state; lines only through
    three or more measured states; `chance`: the dataset's chance accuracy, dotted."""
    data = tidy(df[df["network"].isin(["dense", "ticket"])])
    datasets, shots = (
        sorted(data["dataset"].unique()),
        [s for s in data["shots"].cat.categories if (data["shots"] == s).any()],
    )
    fig, axes = plt.subplots(
        len(datasets),
        len(shots),
        figsize=(3.4 * len(shots) + 1.6, 2.6 * len(datasets) + 0.6),
        squeeze=False,
        sharex=True,
        sharey="row",
    )
    methods = sorted(data["Method"].unique())
    colors = dict(zip(methods, sns.color_palette("colorblind", len(methods)), strict=True))
    for (i, dataset), (j, shot) in itertools.product(enumerate(datasets), enumerate(shots)):
        ax = axes[i, j]
        d = data[(data["dataset"] == dataset) & (data["shots"] == shot)]
        for k, method in enumerate(methods):
            g = d[d["Method"] == method]
            if not g.empty:
                _states_line(
                    ax,
                    g,
                    "sparsity_pct",
                    metric,
                    (k - 0.5) * 1.2,
                    color=colors[method],
                    label=method,
                )
        level = chance_level(dataset) if chance else None
        if level is not None:
            ax.axhline(level, color="0.4", ls=":", lw=1, label="chance")
        ax.set_title(f"{dataset}, {shot}", fontsize="medium")
        ax.set(
            xlabel="sparsity (%)" if i == len(datasets) - 1 else "", ylabel=label if j == 0 else ""
        )
    fig.legend(*_legend_entries(axes), loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.tight_layout()
    return fig


def paired_effects(df: pd.DataFrame, metric: str, label: str) -> plt.Figure:
    """The direct answer to "does sparsity hurt?": per dataset (panels) and n-shot (x), the
    paired difference sparsest ticket - dense (same dataset, n-shot, transfer seed, source
    model), LP and VP side by side, mean and 95% hierarchical-bootstrap interval
    (lib.study.findings.hierarchical_mean); the number of pairs under each point."""
    from lib.study.findings import dense_vs_ticket, ticket_states

    rows = []
    for method in ("lp", "vp"):
        if not ticket_states(df, method):
            continue
        diffs = dense_vs_ticket(df, method, metric)
        state = max(ticket_states(df, method))
        for (dataset, n_shot), values in diffs.groupby(level=["dataset", "n_shot"]):
            rows.append(
                {
                    "dataset": dataset,
                    "n_shot": n_shot,
                    "method": method,
                    "state": state,
                    **hierarchical_mean(values),
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no dense-ticket pairs in this study", ha="center", va="center")
        return fig
    datasets = sorted(table["dataset"].unique())
    shots = shots_order(table["n_shot"])
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(3.6 * len(datasets) + 1.4, 3.4), squeeze=False, sharey=True
    )
    colors = dict(zip(("lp", "vp"), sns.color_palette("colorblind", 2), strict=True))
    for ax, dataset in zip(axes[0], datasets, strict=True):
        d = table[table["dataset"] == dataset]
        for k, method in enumerate(("lp", "vp")):
            g = d[d["method"] == method]
            if g.empty:
                continue
            x = np.array([shots.index(n) for n in g["n_shot"]]) + (k - 0.5) * 0.25
            percent = 100 * (1 - kept_fraction(g["state"].iloc[0]))
            ax.errorbar(
                x,
                g["effect"],
                yerr=[g["effect"] - g["low"], g["high"] - g["effect"]],
                fmt="o",
                capsize=3,
                color=colors[method],
                label=f"{METHOD_NAMES[method]} ({percent:.0f}% sparse)",
            )
            for xi, (_, row) in zip(x, g.iterrows(), strict=True):
                ax.annotate(
                    f"n={row['pairs']}",
                    (xi, row["low"]),
                    textcoords="offset points",
                    xytext=(0, -11),
                    ha="center",
                    fontsize="x-small",
                    color="0.3",
                )
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(shots)), [shots_label(n) for n in shots])
        ax.set_xlim(-0.6, len(shots) - 0.4)
        ax.set_title(dataset, fontsize="medium")
        ax.set(xlabel="training images per class")
    axes[0, 0].set_ylabel(label)
    fig.legend(*_legend_entries(axes), loc="upper left", bbox_to_anchor=(1.0, 0.92))
    fig.tight_layout()
    return fig


def _matched(df: pd.DataFrame, keys: list[str], sides: dict[str, pd.Series]) -> pd.DataFrame:
    """Rows of each side that have a partner on every other side with the same `keys`."""
    frames = {name: df[mask].assign(side=name) for name, mask in sides.items()}
    common = None
    for frame in frames.values():
        index = frame.set_index(keys).index
        common = index if common is None else common.intersection(index)
    out = [f[f.set_index(keys).index.isin(common)] for f in frames.values()]
    return pd.concat(out) if out else df.iloc[:0]


def _side_by_side(data: pd.DataFrame, order: list[str], metrics: tuple, title: str) -> plt.Figure:
    """Per method (rows) and metric (columns): mean and sd per n-shot of each side."""
    methods = sorted(data["Method"].unique())
    fig, axes = plt.subplots(
        len(methods),
        len(metrics),
        figsize=(5.2 * len(metrics), 3 * len(methods) + 0.5),
        squeeze=False,
    )
    for (i, method), (j, (metric, label)) in itertools.product(
        enumerate(methods), enumerate(metrics)
    ):
        ax, rows = axes[i, j], data[data["Method"] == method]
        sns.pointplot(
            rows,
            x="shots",
            y=metric,
            hue="side",
            hue_order=order,
            errorbar="sd",
            dodge=0.3,
            linestyle="none",
            capsize=0.1,
            ax=ax,
            legend=(i == 0 and j == len(metrics) - 1),
        )
        ax.set(xlabel="training images per class", ylabel=label, title=f"{method}")
        for x, shots in enumerate(data["shots"].cat.categories):  # an empty slot says so
            if not (rows["shots"] == shots).any():
                ax.text(
                    x,
                    0.5,
                    "no matched runs",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="center",
                    color="0.45",
                    fontsize="small",
                )
    if axes[0, -1].get_legend():
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1, 1), title="")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return fig


def networks(df: pd.DataFrame) -> plt.Figure:
    """Dense vs IMP ticket vs random pruning, matched: only the (dataset, n-shot, method,
    transfer seed, source model) that have all three; mean and sd over those runs."""
    state = int(df.loc[df["network"] == "random_pruned", "sparsity"].max())
    keys = [k for k in ("dataset", "n_shot", "method", "seed", "source_seed") if k in df]
    percent = 100 * (1 - kept_fraction(state))
    data = tidy(
        _matched(
            df,
            keys,
            {
                "dense": df["network"] == "dense",
                f"ticket {percent:.0f}%": (df["network"] == "ticket") & (df["sparsity"] == state),
                f"random {percent:.0f}%": (df["network"] == "random_pruned")
                & (df["sparsity"] == state),
            },
        )
    )
    names = list(dict.fromkeys(data["side"]))
    where = ", ".join(sorted(data["dataset"].unique()))
    return _side_by_side(
        data,
        names,
        (("test_accuracy", "test accuracy"), ("test_ece", "test ECE")),
        f"IMP ticket vs random pruning at state {state}, matched runs only ({where})",
    )


def reliability_pair(records: list[dict[str, Any]], dataset: str) -> plt.Figure:
    """Reliability diagrams of dense vs the sparsest ticket, LP and VP: one run each, full
    data (else the most shots), the lowest transfer seed and source model present in all
    panels; each panel's title names its run."""
    pick = [
        r
        for r in records
        if r["params"]["dataset"] == dataset and r["params"]["network"] in ("dense", "ticket")
    ]
    shots = [r["params"]["n_shot"] for r in pick]
    n_shot = -1 if -1 in shots else max(shots, default=-1)
    pick = [r for r in pick if r["params"]["n_shot"] == n_shot]
    sparsest = max((r["params"]["sparsity"] for r in pick), default=0)

    def first(method: str, state: int) -> dict[str, Any] | None:
        match = [
            r for r in pick if r["params"]["method"] == method and r["params"]["sparsity"] == state
        ]
        return min(
            match,
            key=lambda r: (r["params"].get("source_seed", 0), r["params"]["seed"]),
            default=None,
        )

    fig, axes = plt.subplots(2, 2, figsize=(10, 9.5))
    for i, method in enumerate(("lp", "vp")):
        for j, state in enumerate((0, sparsest)):
            record = first(method, state)
            if record is None:
                axes[i, j].set_axis_off()
                continue
            m = record["metrics"]["test"]
            p = record["params"]
            reliability(
                record,
                axes[i, j],
                title=(
                    f"{METHOD_NAMES[method]}, {100 * (1 - kept_fraction(state)):.0f}% sparse, "
                    f"seed {p['seed']}, source {p.get('source_seed', 0)}\n" + calibration_title(m)
                ),
            )
    fig.suptitle(f"{dataset}, {shots_label(n_shot)}: dense vs sparsest ticket (one run each)")
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
    hierarchical-bootstrap interval (lib.study.findings.mapping_quality; n-shots pooled)."""
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
            fmt="o-" if len(group) >= 3 else "o",  # a line only through 3+ states
            capsize=3,
            label=dataset,
        )
    top = float(table["high"].max()) if not table.empty else 1.0
    ax.set(
        xlabel="sparsity (%)",
        ylabel="share of classes mapped\nto their own glyph",
        ylim=(-0.01, min(1.02, max(0.1, 1.25 * top))),
    )
    ax.set_title(
        "ILM mapping quality: digits mapped to their own glyph\n"
        "(mean, 95% interval over source models and seeds; n-shots pooled)",
        fontsize="medium",
    )
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


def _mark_empty(axes: Any) -> None:
    """Panels of a facet grid with nothing to draw (e.g. VP on a dataset run with LP only)
    say so instead of showing empty axes."""
    for ax in getattr(axes, "flat", [axes]):
        if not ax.has_data():
            ax.set_axis_off()
            ax.text(
                0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes, color="0.5"
            )


def _lines_vs_sparsity(
    df: pd.DataFrame,
    columns: dict[str, str],
    hue: str,
    ylabel: str,
    style: str | None = None,
    col: str = "dataset",
    row: str | None = None,
    height: float = 2.6,
    aspect: float = 1.3,
) -> plt.Figure:
    """One series per column of `columns` (renamed by it, told apart by color) vs sparsity,
    dense and tickets; facets `row` x `col` titled "row, col" above each panel; mean and sd
    over runs at each measured state, lines only through three or more states."""
    del style  # one color per series (a marker style per series added nothing readable)
    data = tidy(df[df["network"].isin(["dense", "ticket"])])
    rows = sorted(data[row].unique()) if row else [None]
    cols = sorted(data[col].unique())
    fig, axes = plt.subplots(
        len(rows),
        len(cols),
        figsize=(height * aspect * len(cols) + 1.8, height * len(rows) + 0.4),
        squeeze=False,
        sharex=True,
        sharey="row",
    )
    names = list(columns.values())
    colors = dict(zip(names, sns.color_palette("colorblind", len(names)), strict=True))
    for (i, r), (j, c) in itertools.product(enumerate(rows), enumerate(cols)):
        ax = axes[i, j]
        d = data[(data[col] == c) & ((data[row] == r) if row else True)]
        for k, (column, name) in enumerate(columns.items()):
            if column in d and d[column].notna().any():
                _states_line(
                    ax,
                    d,
                    "sparsity_pct",
                    column,
                    (k - len(columns) / 2) * 0.8,
                    color=colors[name],
                    label=name,
                )
        ax.set_title(f"{r}, {c}" if row else f"{c}", fontsize="medium")
        ax.set(xlabel="sparsity (%)" if i == len(rows) - 1 else "", ylabel=ylabel if j == 0 else "")
    fig.legend(*_legend_entries(axes), loc="upper left", bbox_to_anchor=(1.0, 0.95), title=hue)
    _mark_empty(axes)
    fig.tight_layout()
    return fig


def quantization(df: pd.DataFrame) -> plt.Figure:
    """Quantized vs full-precision source, matched: each quantized run next to the FP32 run
    of the same dataset, n-shot, method, sparsity, transfer seed and source model (only
    those pairs); mean and sd over them per n-shot, the dense and the sparse base apart."""
    q = df[df["network"] == "quantized"]
    keys = [
        k for k in ("dataset", "n_shot", "method", "sparsity", "seed", "source_seed") if k in df
    ]
    fp32 = df[df["network"].isin(["dense", "ticket"])]
    pairs = q.merge(fp32[keys].drop_duplicates(), on=keys)
    base = fp32.merge(q[keys].drop_duplicates(), on=keys)
    bits = sorted(set(zip(pairs["weight_bits"], pairs["act_bits"], strict=True)))
    label = {b: f"W{b[0]}A{b[1]}" for b in bits}
    pairs = pairs.assign(
        side=[label[b] for b in zip(pairs["weight_bits"], pairs["act_bits"], strict=True)]
    )
    data = tidy(pd.concat([base.assign(side="FP32"), pairs]))
    data["Method"] = data["Method"] + ", " + data["sparsity_pct"].map(lambda v: f"{v:.0f}% sparse")
    where = ", ".join(sorted(data["dataset"].unique()))
    return _side_by_side(
        data,
        ["FP32", *label.values()],
        (("test_accuracy", "test accuracy"), ("test_ece", "test ECE")),
        f"quantized vs full-precision source, matched runs only ({where})",
    )


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
    handles, labels = _legend_entries(axes)
    if labels:
        order = sorted(range(len(labels)), key=lambda k: shots.index(labels[k]))
        fig.legend(
            [handles[k] for k in order],
            [labels[k] for k in order],
            loc="upper left",
            bbox_to_anchor=(1, 0.98),
            title="n-shot",
        )
    _mark_empty(axes)
    fig.suptitle(f"test {metric} with 95% bootstrap intervals (one bar per run: seed/source)")
    fig.tight_layout()
    return fig


VERDICT_COLORS = {
    "supported": "tab:green",
    "contradicted": "tab:red",
    "equivalent": "tab:blue",
    "inconclusive": "0.45",
    "no data": "0.8",
}


def findings_forest(table: pd.DataFrame) -> plt.Figure:
    """Each finding's effect (paper's direction positive) with its 95% interval over its
    equivalence band (±margin, shaded), the verdict word and the interval's width beside it;
    colored by verdict."""
    from lib.metrics.power import verdict_kind

    table = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(table) + 1.3))
    for y, row in table.iterrows():
        color = VERDICT_COLORS.get(verdict_kind(row["verdict"]), "k")
        margin = row.get("margin", np.nan)
        if np.isfinite(margin):
            ax.fill_betweenx(
                [y - 0.38, y + 0.38], -margin, margin, color="tab:blue", alpha=0.12, lw=0
            )
        if np.isfinite(row["effect"]):
            ax.errorbar(
                row["effect"],
                y,
                xerr=[[row["effect"] - row["low"]], [row["high"] - row["effect"]]],
                fmt="o",
                color=color,
                capsize=3,
            )
        width = row["high"] - row["low"]
        label = row["verdict"] + (f"  (width {width:.3f})" if np.isfinite(width) else "")
        ax.annotate(
            label,
            (1.01, y),
            xycoords=("axes fraction", "data"),
            va="center",
            color=color,
            fontsize="small",
        )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(table)), table["finding"])
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.set(xlabel="effect (paired difference; > 0 is the paper's direction)")
    state = table["state"].dropna() if "state" in table else pd.Series(dtype=float)
    at = f", ticket state {int(state.iloc[0])} vs dense" if len(state) else ""
    ax.set_title(
        f"findings{at}: mean and 95% interval over source models and seeds; "
        "shaded: the equivalence margin",
        fontsize="medium",
    )
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


def vp_methods_gap(table: pd.DataFrame) -> plt.Figure:
    """Issue 20: per VP variant and n-shot, the sparsity gap (dense - sparsest ticket test
    accuracy) with its 95% interval (left) and the gap closed vs ILM expansive (right)."""
    from lib.study.findings import VP_VARIANTS

    order = [v for v in VP_VARIANTS.values() if v in set(table["variant"])]
    shots = shots_order(table["n_shot"])
    colors = dict(zip(shots, sns.color_palette("colorblind", len(shots)), strict=False))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(order) + 2), sharey=True)
    for ax, (col, title) in zip(
        axes,
        (
            ("gap", "sparsity gap: dense - ticket accuracy"),
            ("closed", "gap closed vs ILM, expansive"),
        ),
        strict=True,
    ):
        for k, shot in enumerate(shots):
            part = table[table["n_shot"] == shot].set_index("variant")
            for y, variant in enumerate(order):
                if (
                    variant not in part.index
                    or col not in part
                    or not np.isfinite(part.loc[variant, col])
                ):
                    continue
                r = part.loc[variant]
                ax.errorbar(
                    r[col],
                    y + 0.15 * (k - (len(shots) - 1) / 2),
                    xerr=[[r[col] - r[f"{col}_low"]], [r[f"{col}_high"] - r[col]]],
                    fmt="o",
                    color=colors[shot],
                    capsize=3,
                    label=("full" if shot == -1 else f"{shot}-shot")
                    if y == 0 or col == "closed"
                    else None,
                )
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(title, fontsize="medium")
        ax.set(xlabel="accuracy points (fraction)")
    axes[0].set_yticks(range(len(order)), order)
    axes[0].invert_yaxis()
    handles, labels = axes[1].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes[1].legend(unique.values(), unique.keys(), title="n-shot", fontsize="small")
    fig.suptitle("does a better label mapping or prompt close the gap sparsity opens? (95% CI)")
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
    """Training loss and accuracy per epoch of every IMP level (lib.models.prune.history_frame)."""
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
    """Test accuracy of the tickets and the random controls over sparsity
    (lib.models.prune.imp_table), the dense model's as a dotted line."""
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


def drop_by_state(table: pd.DataFrame, sparsity: dict[int, float] | None = None) -> plt.Figure:
    """Issue 27: per dataset, the transfer accuracy drop (dense - ticket) at each IMP state,
    one line per method and n-shot with 95% intervals, and the source task's own drop
    (dashed, black) from the manifest: where the source accuracy falls, what transfer does."""
    datasets = sorted(table["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        d = table[table["dataset"] == name]
        for (method, shot), g in d.groupby(["method", "n_shot"]):
            g = g.sort_values("state")
            label = f"{method}, {'full' if shot == -1 else f'{shot}-shot'}"
            ax.errorbar(
                g["state"],
                g["effect"],
                yerr=[g["effect"] - g["low"], g["high"] - g["effect"]],
                marker="o" if method == "LP" else "s",
                capsize=2,
                label=label,
                ls="-" if method == "LP" else "--",
            )
        if "source_drop" in d and d["source_drop"].notna().any():
            s = d.drop_duplicates("state").sort_values("state")
            ax.plot(s["state"], s["source_drop"], "k:", marker="x", label="source task")
        ax.axhline(0, color="0.5", lw=0.8)
        states = sorted(d["state"].unique())
        ax.set_xticks(
            states,
            [
                f"{k}\n{100 * sparsity[k]:.0f}%" if sparsity and k in sparsity else str(k)
                for k in states
            ],
        )
        ax.set(xlabel="IMP state (sparsity)", ylabel="accuracy drop (dense - ticket)", title=name)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize="small")
    fig.suptitle("accuracy lost to sparsity, on the source task and after transfer")
    fig.tight_layout()
    return fig
