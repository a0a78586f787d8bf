"""Figures of one run, for the transfer notebook: training curves, reliability diagram,
learned prompt, the label mapping as a table."""

from __future__ import annotations

from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from lib.models.states import kept_fraction
from lib.report.figures import METHOD_NAMES
from lib.study.console import shots_label, shots_order


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
    runs = "1 run" if len(records) == 1 else f"{len(records)} runs, one line each"
    fig.suptitle(runs, x=0.01, ha="left", fontsize=9)
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
    """'mnist, 10-shot, seed 1, source 0, ticket 93% sparse, VP': which run a panel shows."""
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
