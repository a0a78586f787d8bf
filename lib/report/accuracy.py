"""Figures of the report's accuracy sections: metrics vs sparsity, paired LP/VP effects,
ticket vs random pruning, the paper's metric vs the true ECE, quantization."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib.models.states import kept_fraction
from lib.report.figures import (
    METHOD_NAMES,
    chance_level,
    legend_entries,
    lines_vs_sparsity,
    states_line,
    tidy,
)
from lib.study.console import shots_label, shots_order
from lib.study.findings import hierarchical_mean


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
                states_line(
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
    fig.legend(*legend_entries(axes), loc="upper left", bbox_to_anchor=(1.0, 0.95))
    fig.tight_layout()
    return fig


def paired_effects(
    df: pd.DataFrame, metric: str, label: str, state: int | None = None
) -> plt.Figure:
    """The direct answer to "does sparsity hurt?": per dataset (panels) and n-shot (x), the
    paired difference ticket at `state` - dense (same dataset, n-shot, transfer seed, source
    model), LP and VP side by side, mean and 95% source-model bootstrap interval
    (lib.study.findings.hierarchical_mean); the number of pairs under each point. `state`:
    default the findings' (lib.study.findings.findings_state), else each method's sparsest."""
    from lib.study.findings import dense_vs_ticket, findings_state, ticket_states

    state = findings_state(df) if state is None else state
    rows = []
    for method in ("lp", "vp"):
        states = ticket_states(df, method)
        if not states or (state is not None and state not in states):
            continue
        at = max(states) if state is None else state
        diffs = dense_vs_ticket(df, method, metric, at)
        for (dataset, n_shot), values in diffs.groupby(level=["dataset", "n_shot"]):
            rows.append(
                {
                    "dataset": dataset,
                    "n_shot": n_shot,
                    "method": method,
                    "state": at,
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
    fig.legend(*legend_entries(axes), loc="upper left", bbox_to_anchor=(1.0, 0.92))
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


def paper_metric(df: pd.DataFrame) -> plt.Figure:
    """The paper's legacy metric next to the true top-label ECE, vs sparsity."""
    names = {"test_ece": "true ECE", "test_seed_ece": "paper's metric"}
    return lines_vs_sparsity(
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
