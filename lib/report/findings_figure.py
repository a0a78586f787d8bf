"""The report's findings figure: each finding's effect with its interval, colored by
verdict."""

from __future__ import annotations

from functools import partial

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.metrics.power import signed

VERDICT_COLORS = {
    "supported": "tab:green",
    "contradicted": "tab:red",
    "equivalent": "tab:blue",
    "inconclusive": "0.45",
    "no data": "0.8",
}


def findings_forest(table: pd.DataFrame) -> plt.Figure:
    """Each finding's effect (paper's direction positive) and 95% interval in units of its
    equivalence margin, so that findings on different scales (accuracy, ECE, the paper's
    metric) share one axis and the band of negligible effects is always [-1, 1] (shaded);
    beside each: the verdict, the effect and interval in the finding's own units, the width
    and the margin; colored by verdict."""
    from lib.metrics.power import verdict_kind

    table = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(13, 0.55 * len(table) + 1.4))
    ax.axvspan(-1, 1, color="tab:blue", alpha=0.12, lw=0)
    labels, colors = [], []
    for y, row in table.iterrows():
        colors.append(VERDICT_COLORS.get(verdict_kind(row["verdict"]), "k"))
        margin = row.get("margin", np.nan)
        scale = margin if np.isfinite(margin) and margin > 0 else 1.0
        if not np.isfinite(row["effect"]):
            labels.append(row["verdict"])
            continue
        low, high = (row["effect"] - row["low"]) / scale, (row["high"] - row["effect"]) / scale
        ax.errorbar(
            row["effect"] / scale, y, xerr=[[low], [high]], fmt="o", color=colors[-1], capsize=3
        )
        number = partial(signed, margin=scale)
        labels.append(
            f"{row['verdict']}\n{number(row['effect'])} [{number(row['low'])}, "
            f"{number(row['high'])}], width {row['high'] - row['low']:#.2g}, margin {margin:#.2g}"
        )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(table)), table["finding"])
    ax.set_ylim(len(table) - 0.5, -0.5)
    right = ax.twinx()  # the verdicts as right-hand tick labels: tight_layout makes room
    right.set_ylim(ax.get_ylim())
    right.set_yticks(range(len(table)), labels, fontsize="small")
    right.grid(False)
    for tick, color in zip(right.get_yticklabels(), colors, strict=True):
        tick.set_color(color)
    ax.set(xlabel="effect / equivalence margin (> 0 is the paper's direction; shaded: ±1 margin)")
    state = table["state"].dropna() if "state" in table else pd.Series(dtype=float)
    at = f", ticket state {int(state.iloc[0])} vs dense" if len(state) else ""
    ax.set_title(
        f"findings{at}: mean and 95% interval over source models and seeds", fontsize="medium"
    )
    fig.tight_layout()
    return fig
