"""Text of the report notebook: the summary at its top, figure captions that say what each
figure pools, over how many runs, and which error it draws, the verdict words.

    from lib.report.summary import Figures, summary
    display(Markdown(summary(table, df, chosen, "mini")))
    figures = Figures(folder); figures.show(fig, "accuracy_vs_sparsity", "what it shows")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lib.metrics.power import signed

VERDICTS = {
    "supported": "the whole 95% interval of the effect lies on the paper's side of 0",
    "contradicted": "the whole 95% interval lies on the other side of 0: the study measured "
    "the opposite of the paper's claim",
    "…, smaller than ±m": "after supported or contradicted: the interval also lies inside the "
    "equivalence margin ±m, so the effect is real but negligible",
    "no effect larger than ±m": "the interval holds 0 but lies inside the equivalence margin "
    "±m (0.03 for accuracy gaps, 0.01 for ECE differences, and 0.01 on the paper's metric's "
    "own scale: times its ratio to the binned ECE on the dense runs): any effect there is "
    "smaller than the margin",
    "inconclusive": "the interval holds 0 and reaches past the margin: this study can "
    "neither confirm the claim nor bound it; the table says how many source models 80% "
    "power at an effect the size of the margin would need",
    "no population verdict (k source models)": "fewer than 3 source models: the interval "
    "holds for those source models only (with one, it resamples its transfer seeds), so it "
    "says nothing about another IMP run of the same recipe",
    "too few to resample": "one pair: no interval at all",
    "no data": "the study lacks the paired runs the claim needs",
}


def verdict_definitions() -> str:
    """The verdict words, one bullet each (Markdown)."""
    return "\n".join(f"- **{word}**: {meaning}." for word, meaning in VERDICTS.items())


def summary(
    table: pd.DataFrame,
    df: pd.DataFrame,
    chosen: str,
    study: str,
    adjusted: pd.DataFrame | None = None,
) -> str:
    """The report's first section (Markdown): what was run, then one line per finding of the
    paper: its claim, this study's effect with its 95% interval and pairs, the verdict; with
    `adjusted` (lib.study.adjusted.adjusted_findings), each calibration finding at equal
    accuracy below."""
    sources = df["source_seed"].nunique() if "source_seed" in df else 1
    lines = [
        "## Summary",
        "",
        f"Study `{study}`: {len(df)} runs ({', '.join(sorted(df['dataset'].unique()))}; "
        f"methods {', '.join(sorted(df['method'].unique()))}; networks "
        f"{', '.join(sorted(df['network'].unique()))}; {sources} source model(s)). Every run's "
        f"numbers: [`results.csv`](results.csv) (one row per run) and `records/*.json`.",
        "",
        *_provenance_lines(df),
        "Each finding compares a lottery ticket (its state below the table) with the dense "
        "source on paired runs (same dataset, n-shot, transfer seed and source model). "
        "Effect: mean paired difference, signed so that > 0 is the paper's direction; "
        "interval: 95%, bootstrap over "
        f"source models, each with all its pairs. Calibration on `{chosen}` (chosen below).",
        "",
        "| the paper's claim | this study: effect [95% interval] | width | pairs | verdict |",
        "|---|---|---|---|---|",
    ]
    for _, row in table.iterrows():
        margin = row.get("margin", 0.01)
        effect = (
            f"{row['measure']} = {signed(row['effect'], margin)} "
            f"[{signed(row['low'], margin)}, {signed(row['high'], margin)}]"
            if pd.notna(row["effect"])
            else "—"
        )
        word = row["verdict"]
        if word == "inconclusive" and pd.notna(row.get("sources_needed")):
            word += f" (80% power at ±{margin:.2g}: ~{int(row['sources_needed'])} source models)"
        width = row["high"] - row["low"]
        width = signed(width, margin).lstrip("+") if pd.notna(width) else "—"
        pairs = f"{row['pairs']}" + (
            f" ({int(row['dropped'])} dropped: NaN or inf)" if row.get("dropped", 0) else ""
        )
        lines.append(f"| {row['finding']} | {effect} | {width} | {pairs} | **{word}** |")
    if adjusted is not None and len(adjusted):
        lines += ["", *_adjusted_lines(adjusted)]
    if "state" in table and table["state"].notna().any():
        lines += ["", f"Ticket state compared with dense: {int(table['state'].dropna().iloc[0])}."]
    lines += ["", "Verdict words:", "", verdict_definitions()]
    return "\n".join(lines)


def _adjusted_lines(adjusted: pd.DataFrame) -> list[str]:
    """The calibration findings answering "at equal accuracy" (Markdown table)."""
    lines = [
        "**At equal accuracy.** A ticket that gains accuracy under an overconfident method also "
        "lowers its ECE. Each calibration finding again, as the intercept of a line through "
        "the source models' mean paired changes (calibration on accuracy): the change a "
        "ticket with the same accuracy as dense would show. Bootstrap over source models; "
        "method and checks in docs/power.md.",
        "",
        "| calibration finding | raw effect | at equal accuracy [95% interval] | slope "
        "| sources | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for _, row in adjusted.iterrows():
        m = row["margin"]
        at = (
            f"{signed(row['effect'], m)} [{signed(row['low'], m)}, {signed(row['high'], m)}]"
            if pd.notna(row["low"])
            else "—"
        )
        slope = f"{row['slope']:+.2f}" if pd.notna(row["slope"]) else "—"
        name = row["finding"].replace("sparse tickets are worse calibrated at equal accuracy ", "")
        lines.append(
            f"| {name} | {signed(row['raw_effect'], m)} | {at} | {slope} | {row['sources']} "
            f"| **{row['verdict']}** |"
        )
    return lines


def _provenance_lines(df: pd.DataFrame) -> list[str]:
    """Where the runs ran, and which of them are optimistic (epoch chosen on the test set)."""
    lines = []
    if "cpu" in df and df["cpu"].notna().any():
        counts = df["cpu"].fillna("unknown CPU").value_counts()
        machines = "; ".join(f"{cpu} ({n} run{'s' * (n != 1)})" for cpu, n in counts.items())
        lines += [f"Ran on: {machines}.", ""]
    if "selection" in df and (df["selection"] == "test").any():
        n = int((df["selection"] == "test").sum())
        lines += [
            f"**{n} of {len(df)} runs are optimistic**: `selection: test` (the paper's "
            "protocol) picks their epoch and temperature on the test set they report.",
            "",
        ]
    return lines


def per_point(df: pd.DataFrame, keys: list[str]) -> str:
    """'n = 6 runs per point' or 'n = 2-6 runs per point' over the groups of `keys`."""
    if df.empty:
        return "no runs"
    sizes = df.groupby(keys).size()
    low, high = int(sizes.min()), int(sizes.max())
    return (
        f"n = {low} run{'s' if high > 1 else ''} per point"
        if low == high
        else (f"n = {low}-{high} runs per point")
    )


def pooled(df: pd.DataFrame) -> str:
    """What a point pools: transfer seeds (per method where they differ, e.g. "2 (LP) / 1
    (VP)") and source models, as the frame has them."""
    seeds = str(df["seed"].nunique()) if "seed" in df else "1"
    if "seed" in df and "method" in df:
        per = df.groupby("method")["seed"].nunique()
        if per.nunique() > 1:
            seeds = " / ".join(f"{n} ({m.upper()})" for m, n in per.items())
    sources = df["source_seed"].nunique() if "source_seed" in df else 1
    return f"{seeds} transfer seed(s) x {sources} source model(s)"


class Figures:
    """Save a figure (PNG + SVG under the study's figures/), show it, then its numbered
    caption below it: the caption says what is pooled, n and the error drawn."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.number = 0

    def show(self, fig: Any, name: str, caption: str) -> str:
        import matplotlib.pyplot as plt
        from IPython.display import Markdown, display

        from lib.report.figures import save

        fig = getattr(fig, "figure", fig)  # a seaborn grid or a figure
        save(fig, self.folder, name)
        self.number += 1
        text = f"**Figure {self.number}** (`figures/{name}.png`). {caption}"
        display(fig)
        plt.close(fig)
        display(Markdown(text))
        return text


def show_table(frame: pd.DataFrame, caption: str = "") -> None:
    """A table shown whole (every row, full cell text), with a caption above it."""
    from IPython.display import Markdown, display

    if caption:
        display(Markdown(caption))
    with pd.option_context(
        "display.max_rows", None, "display.max_columns", None, "display.max_colwidth", None
    ):
        display(frame)
