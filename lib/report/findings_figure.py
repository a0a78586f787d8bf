"""The report's findings figure: each finding's effect with its interval, colored by
verdict."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

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
