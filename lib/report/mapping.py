"""Figures of the report's label-mapping sections: mapping heatmaps, the share mapped to
its own glyph, and whether better mappings or prompts close the gap."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib.models.states import kept_fraction
from lib.study.console import shots_order
from lib.study.findings import mapping_quality


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
    source-model bootstrap interval (lib.study.findings.mapping_quality; n-shots pooled)."""
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
