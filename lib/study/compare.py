"""What differs between two studies' results: two machines, two recipes, two commits.

    python -m lib.compare mini /elsewhere/outputs/mini          # names under outputs/ or paths
    python -m lib.compare mini mini-avx2 --out outputs/compare  # figure + CSV of the deltas

A study is a name under the outputs root, a study folder, or a results.csv (without one, its
records/*.json). Runs are matched on run_key; two studies with no run key in common (another
study name or recipe changes every key's hash) are matched on the design columns (dataset,
network, sparsity, bits, method, mapping, n-shot, seed, source model) instead. Printed: runs
only in one study, the parameters that differ between matched runs, metric deltas (B - A),
the runs that moved most, and every finding whose verdict moved. Exit status 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lib.core.cli import HelpFormatter, accept_both_spellings, run_main

if TYPE_CHECKING:
    import pandas as pd

DESIGN = (
    "dataset",
    "network",
    "sparsity",
    "weight_bits",
    "act_bits",
    "method",
    "mapping",
    "n_shot",
    "seed",
    "source_seed",
)
METRICS = (
    "test_accuracy",
    "test_ece",
    "test_debiased_ece",
    "test_smooth_ece",
    "test_ts_ece",
    "test_seed_ece",
    "test_nll",
    "epochs_trained",
)
# Columns that differ between any two executions and say nothing about the recipe.
NOT_PARAMS = ("run_key", "study", "git_revision", "created")
TOLERANCE = 1e-9  # a metric "changed" beyond this (float rounding of a JSON round trip)


def load_study(where: str) -> tuple[pd.DataFrame, str]:
    """The tidy frame of a study (name, folder or results.csv) and how it was found."""
    import pandas as pd

    from lib.core import paths
    from lib.study import results

    path = Path(where)
    if path.suffix == ".csv" and path.is_file():
        return pd.read_csv(path), str(path)
    if not path.is_dir():
        try:
            path = paths.study_dir(where)
        except ValueError:
            raise FileNotFoundError(
                f"{where}: neither a study folder, a results.csv nor a study "
                "name under the outputs root"
            ) from None
    csv = path / "results.csv"
    if csv.is_file():
        return pd.read_csv(csv), str(csv)
    records = sorted((path / "records").glob("*.json"))
    if not records:
        raise FileNotFoundError(f"{where}: no results.csv and no records/*.json in {path}")
    frame = pd.DataFrame([results.flatten(results.read_record(p)) for p in records])
    return frame, f"{path / 'records'} ({len(records)} records)"


def match_keys(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """run_key when the studies share one, else the design columns both have."""
    if "run_key" in a and "run_key" in b and set(a["run_key"]) & set(b["run_key"]):
        return ["run_key"]
    return [c for c in DESIGN if c in a and c in b]


def _key_frame(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = df.copy()
    for k in keys:  # NaN never equals NaN: a missing value is its own key
        out[k] = out[k].astype(object).where(out[k].notna(), "-")
    return out.drop_duplicates(keys)


def _non_finite(values: pd.Series) -> str:
    """'' or what is not a finite number among `values`: '2 nan, 1 inf'."""
    import numpy as np

    counts = {"nan": int(values.isna().sum()), "inf": int(np.isinf(values).sum())}
    return ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)


def compare(a: pd.DataFrame, b: pd.DataFrame, calibration_metric: str = "") -> dict[str, Any]:
    """Everything that differs, as frames: matched runs with deltas, runs only in A or B,
    parameters that differ, per-metric summary, findings of both with verdicts side by side."""
    import numpy as np
    import pandas as pd

    from lib.study.findings import findings

    keys = match_keys(a, b)
    if not keys:
        raise ValueError("the two studies share neither run keys nor design columns")
    ka, kb = _key_frame(a, keys), _key_frame(b, keys)
    merged = ka.merge(kb, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    only_a = merged.loc[merged["_merge"] == "left_only", keys]
    only_b = merged.loc[merged["_merge"] == "right_only", keys]
    both = merged[merged["_merge"] == "both"].drop(columns="_merge")

    metrics = [m for m in METRICS if m in a and m in b]
    rows = []
    for m in metrics:
        # NaN and inf are counted and left out of means and deltas, never averaged away unseen
        va, vb = both[f"{m}_a"].astype(float), both[f"{m}_b"].astype(float)
        fa, fb = va.where(np.isfinite(va)), vb.where(np.isfinite(vb))
        delta = fb - fa
        both[f"delta_{m}"] = delta
        moved = (fa.isna() | fb.isna()) & (va.astype(str) != vb.astype(str))
        rows.append(
            {
                "metric": m,
                "runs": int(delta.notna().sum()),
                "changed": int((delta.abs() > TOLERANCE).sum() + moved.sum()),
                "mean A": fa.mean(),
                "mean B": fb.mean(),
                "mean delta": delta.mean(),
                "max |delta|": delta.abs().max(),
                "non-finite A": _non_finite(va),
                "non-finite B": _non_finite(vb),
            }
        )
    summary = pd.DataFrame(rows)

    params = []
    skip = set(keys) | set(NOT_PARAMS) | set(METRICS)
    for col in sorted(set(a) & set(b)):
        if col in skip or col.startswith(("test_", "val_", "confidence_", "labels_")):
            continue
        if (
            col.endswith("_s")
            or pd.api.types.is_float_dtype(a[col])
            and col
            not in (
                "lr",
                "val_fraction",
            )
        ):
            continue  # timings and measured floats are not settings
        left, right = both.get(f"{col}_a"), both.get(f"{col}_b")
        if left is None or right is None:
            continue
        differs = left.astype(str) != right.astype(str)
        if differs.any():
            pairs = sorted(
                set(zip(left[differs].astype(str), right[differs].astype(str), strict=True))
            )
            params.append({"parameter": col, "runs": int(differs.sum()), "A -> B": pairs[:5]})
    param_diffs = pd.DataFrame(params, columns=["parameter", "runs", "A -> B"])

    metric = calibration_metric or next(
        (m for m in ("debiased_ece", "ece") if f"test_{m}" in a and f"test_{m}" in b), "ece"
    )
    fa, fb = findings(a, calibration_metric=metric), findings(b, calibration_metric=metric)
    verdicts = fa.merge(fb, on=["finding", "measure"], suffixes=(" A", " B"))
    verdicts["moved"] = verdicts["verdict A"] != verdicts["verdict B"]
    verdicts["effect delta"] = verdicts["effect B"] - verdicts["effect A"]
    return {
        "keys": keys,
        "matched": both,
        "only_a": only_a,
        "only_b": only_b,
        "metrics": summary,
        "parameters": param_diffs,
        "findings": verdicts,
        "calibration_metric": metric,
        "identical": bool(
            only_a.empty
            and only_b.empty
            and param_diffs.empty
            and (summary.empty or (summary["changed"] == 0).all())
            and not verdicts["moved"].any()
        ),
        "nan": np.nan,
    }


def _interval(row: pd.Series, side: str) -> str:
    """Effect [low, high] to the digit after the finding's margin (the paper's metric: 4)."""
    from lib.metrics.power import signed

    e, lo, hi = (
        signed(row[f"{k} {side}"], row.get(f"margin {side}", 0.01))
        for k in ("effect", "low", "high")
    )
    return f"{e} [{lo}, {hi}]"


def report_lines(result: dict[str, Any], name_a: str, name_b: str, top: int = 5) -> list[str]:
    """The comparison as text, most important first."""
    import pandas as pd

    both, keys = result["matched"], result["keys"]
    lines = [
        f"A = {name_a}",
        f"B = {name_b}",
        f"matched on {', '.join(keys)}: {len(both)} runs in both, "
        f"{len(result['only_a'])} only in A, {len(result['only_b'])} only in B",
    ]
    for label, frame in (("only in A", result["only_a"]), ("only in B", result["only_b"])):
        if not frame.empty:
            shown = frame.head(top).astype(str).agg(" ".join, axis=1).tolist()
            more = f" ... and {len(frame) - top} more" if len(frame) > top else ""
            lines.append(f"  {label}: {'; '.join(shown)}{more}")
    if not result["parameters"].empty:
        lines.append("parameters that differ between matched runs:")
        for _, row in result["parameters"].iterrows():
            pairs = ", ".join(f"{x} -> {y}" for x, y in row["A -> B"])
            lines.append(f"  {row['parameter']}: {pairs} ({row['runs']} runs)")
    if not result["metrics"].empty:
        lines.append("metric deltas (B - A) over matched runs (finite values):")
        summary = result["metrics"]
        shown = summary.drop(columns=["non-finite A", "non-finite B"])
        with pd.option_context("display.width", 120, "display.max_columns", None):
            table = shown.to_string(index=False, float_format=lambda x: f"{x:.4f}")
        lines += ["  " + line for line in table.splitlines()]
        for _, row in summary.iterrows():
            if row["non-finite A"] or row["non-finite B"]:
                lines.append(
                    f"  {row['metric']}: not finite in A: {row['non-finite A'] or 'none'}; "
                    f"in B: {row['non-finite B'] or 'none'} (left out of the means and deltas)"
                )
    if "delta_test_accuracy" in both and len(both):
        moved = both.reindex(both["delta_test_accuracy"].abs().sort_values(ascending=False).index)
        moved = moved[moved["delta_test_accuracy"].abs() > TOLERANCE].head(top)
        if not moved.empty:
            lines.append(f"largest test-accuracy deltas (top {len(moved)}):")
            for _, row in moved.iterrows():
                name = " ".join(str(row[k]) for k in keys)
                lines.append(
                    f"  {name}: {row['test_accuracy_a']:.4f} -> {row['test_accuracy_b']:.4f} "
                    f"({row['delta_test_accuracy']:+.4f})"
                )
    f = result["findings"]
    moved = f[f["moved"]]
    lines.append(
        f"findings ({result['calibration_metric']} for calibration): "
        f"{len(moved)} of {len(f)} verdicts moved"
    )
    for _, row in f.iterrows():
        mark = "MOVED" if row["moved"] else "same "
        lines.append(
            f"  {mark} {row['finding']}: A {row['verdict A']} {_interval(row, 'A')}  "
            f"B {row['verdict B']} {_interval(row, 'B')}"
        )
    if result["identical"]:
        lines.append("the two studies' results are identical")
    return lines


def figure(result: dict[str, Any], name_a: str, name_b: str) -> Any:
    """B vs A per run (accuracy, ECE; identity line) and every finding's effect and interval
    in A and B side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    both, f = result["matched"], result["findings"]
    fig, axes = plt.subplots(
        1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.3]}, layout="constrained"
    )
    for ax, metric in zip(axes[:2], ("test_accuracy", "test_ece"), strict=True):
        if f"{metric}_a" in both and len(both):
            for method, g in both.groupby("method_a" if "method_a" in both else "method"):
                ax.scatter(g[f"{metric}_a"], g[f"{metric}_b"], s=14, alpha=0.7, label=method)
            values = np.concatenate([both[f"{metric}_a"], both[f"{metric}_b"]]).astype(float)
            values = values[np.isfinite(values)]
            lo, hi = (values.min(), values.max()) if len(values) else (0.0, 1.0)
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.legend(fontsize="small", title="method")
        ax.set(
            xlabel=f"A: {metric}",
            ylabel=f"B: {metric}",
            title=f"{metric}, {len(both)} matched runs",
        )
    ax = axes[2]
    y = np.arange(len(f))
    for shift, side, color in ((-0.15, "A", "tab:blue"), (0.15, "B", "tab:orange")):
        ok = f[f"effect {side}"].notna()
        ax.errorbar(
            f.loc[ok, f"effect {side}"],
            y[ok.to_numpy()] + shift,
            xerr=[
                (f[f"effect {side}"] - f[f"low {side}"])[ok],
                (f[f"high {side}"] - f[f"effect {side}"])[ok],
            ],
            fmt="o",
            capsize=3,
            color=color,
            label=side,
        )
    ax.axvline(0, color="k", lw=0.8)
    labels = [("[moved] " if m else "") + t for t, m in zip(f["finding"], f["moved"], strict=True)]
    ax.set_yticks(y, labels, fontsize="small")
    ax.invert_yaxis()
    ax.set(xlabel="effect, 95% interval (> 0: the paper's direction)", title="findings")
    ax.legend(fontsize="small")
    fig.suptitle(f"A = {name_a}   B = {name_b}", fontsize="medium")
    return fig


def main(argv: list[str] | None = None) -> int:
    from lib.study.findings import CALIBRATION_METRICS

    parser = argparse.ArgumentParser(
        prog="python -m lib.compare", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("study_a", help="study name under the outputs root, folder or results.csv")
    parser.add_argument("study_b", help="the other study, the same ways")
    parser.add_argument(
        "--out",
        default="",
        help="folder of compare.png and deltas.csv (default: outputs/compare/<A>-vs-<B>)",
    )
    parser.add_argument(
        "--calibration-metric",
        default="",
        choices=["", *CALIBRATION_METRICS],
        help="calibration metric of the findings (default: debiased_ece when both have it)",
    )
    parser.add_argument("--top", type=int, default=5, help="runs listed per category")
    accept_both_spellings(parser)
    args = parser.parse_args(argv)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out!r} is a file; give a folder (it receives compare.png)")
    a, name_a = load_study(args.study_a)
    b, name_b = load_study(args.study_b)
    result = compare(a, b, args.calibration_metric)
    print("\n".join(report_lines(result, name_a, name_b, args.top)))

    from lib.core.utils import atomic_savefig, atomic_write_text, outputs_dir, resolve_path

    label = "-vs-".join(
        Path(s).stem if s.endswith(".csv") else Path(s).name for s in (args.study_a, args.study_b)
    )
    out = resolve_path(args.out) if args.out else outputs_dir() / "compare" / label
    out.mkdir(parents=True, exist_ok=True)
    fig = figure(result, name_a, name_b)
    atomic_savefig(fig, out / "compare.png", dpi=120, bbox_inches="tight")  # never via a link
    atomic_write_text(out / "deltas.csv", result["matched"].to_csv(index=False))
    atomic_write_text(out / "findings.csv", result["findings"].to_csv(index=False))
    print(f"figure {out / 'compare.png'}; per-run deltas {out / 'deltas.csv'}")
    return 0


def cli() -> NoReturn:
    """`python -m lib.compare`: main() as a command."""
    run_main(main, "python -m lib.compare", (FileNotFoundError, ValueError))


if __name__ == "__main__":
    cli()
