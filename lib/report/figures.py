"""What every report figure shares: the seaborn theme, method names, saving, the tidy
frame with sparsity in percent, chance levels, lines over sparsity states, legends."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from lib.core.utils import atomic_savefig
from lib.models.states import kept_fraction
from lib.study.console import shots_label, shots_order
from lib.study.findings import METHOD_NAMES  # one name per method, in tables and figures

sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


def save(fig: plt.Figure, folder: str | Path, name: str) -> list[Path]:
    """PNG (for reading) and SVG (for papers); SVG without a date, so reruns are identical.
    Atomic, and never through a link planted at either path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.svg"]
    atomic_savefig(fig, paths[0], dpi=130, bbox_inches="tight", metadata={"Software": None})
    atomic_savefig(fig, paths[1], bbox_inches="tight", metadata={"Date": None})
    return paths


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the columns the figures facet on: nominal sparsity %, shots label, method label."""
    df = frame.copy()
    df["sparsity_pct"] = (100 * (1 - kept_fraction(df["sparsity"]))).round(1)
    df["shots"] = df["n_shot"].map(shots_label)
    df["Method"] = df["method"].map(METHOD_NAMES).fillna(df["method"])
    df["shots"] = pd.Categorical(df["shots"], [shots_label(n) for n in shots_order(df["n_shot"])])
    return df


def legend_entries(axes: Any) -> tuple[list, list[str]]:
    """Every facet's legend entries, each label once, in order of first appearance (a facet
    may lack a method or an n-shot)."""
    entries: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    return list(entries.values()), list(entries)


def states_line(ax: plt.Axes, g: pd.DataFrame, x: str, y: str, shift: float, **style: Any):
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


def mark_empty(axes: Any) -> None:
    """Panels of a facet grid with nothing to draw (e.g. VP on a dataset run with LP only)
    say so instead of showing empty axes."""
    for ax in getattr(axes, "flat", [axes]):
        if not ax.has_data():
            ax.set_axis_off()
            ax.text(
                0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes, color="0.5"
            )


def lines_vs_sparsity(
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
                states_line(
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
    fig.legend(*legend_entries(axes), loc="upper left", bbox_to_anchor=(1.0, 0.95), title=hue)
    mark_empty(axes)
    fig.tight_layout()
    return fig
