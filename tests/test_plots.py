"""Figures that must not hide data: training curves draw every run, side-by-side panels say
where a slot has no runs."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lib.report import plots  # noqa: E402


def _record(source_seed: int, n_shot: int, seed: int) -> dict:
    history = [
        {
            "epoch": e,
            "train_loss": 1 / (e + 1 + source_seed),
            "train_accuracy": 0.5,
            "val_accuracy": 0.4 + 0.01 * e,
            "val_ece": 0.1,
        }
        for e in range(5)
    ]
    params = {"source_seed": source_seed, "n_shot": n_shot, "seed": seed}
    return {"params": params, "history": history}


def test_history_draws_one_line_per_run_not_an_average():
    records = [_record(*k) for k in itertools.product([0, 1, 2], [10, -1], [1])]
    fig = plots.history(records)
    assert len(fig.axes[0].lines) == len(records)  # 6 runs, not 2 averaged n-shot lines
    legend = [t.get_text() for t in fig.axes[3].get_legend().get_texts()]
    assert legend == ["10-shot", "full"]
    plt.close(fig)


def test_networks_figure_names_slots_without_runs():
    rows = []
    for network, method, n_shot, source in itertools.product(
        ["dense", "ticket", "random_pruned"], ["lp", "vp"], [10, -1], [0, 1]
    ):
        if network == "random_pruned" and method == "vp" and n_shot == -1:
            continue  # as the mini study: VP on the random control at 10 shots only
        rows.append(
            {
                "dataset": "mnist",
                "network": network,
                "sparsity": 0 if network == "dense" else 12,
                "method": method,
                "n_shot": n_shot,
                "seed": 1,
                "source_seed": source,
                "test_accuracy": 0.5 + 0.1 * source,
                "test_ece": 0.1,
            }
        )
    fig = plots.networks(pd.DataFrame(rows))
    said = [(ax.get_title(), [t.get_text() for t in ax.texts]) for ax in fig.axes if ax.texts]
    assert [texts for _, texts in said] == [["no matched runs"]] * 2  # VP, both metrics
    assert all(title.startswith("VP") for title, _ in said)
    plt.close(fig)


def test_findings_forest_puts_every_finding_in_units_of_its_margin():
    table = pd.DataFrame(
        [
            {
                "finding": "accuracy",
                "effect": 0.06,
                "low": 0.03,
                "high": 0.09,
                "margin": 0.03,
                "verdict": "supported",
                "state": 12,
            },
            {
                "finding": "paper metric",
                "effect": -0.0002,
                "low": -0.0004,
                "high": 0.0,
                "margin": 0.0004,
                "verdict": "no effect larger than ±0.0004",
                "state": 12,
            },
        ]
    )
    fig = plots.findings_forest(table)
    points = [bars.lines[0].get_xdata()[0] for bars in fig.axes[0].containers]
    assert points == pytest.approx([2.0, -0.5])  # effect / margin, not the raw effect
    right = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert right[0].startswith("supported\n+0.060 [+0.030, +0.090]")
    assert right[1].startswith("no effect larger than ±0.0004\n-0.00020 [-0.00040, +0.00000]")
    plt.close(fig)
