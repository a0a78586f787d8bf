"""The report's summary text: what it says about the machines and optimistic runs."""

import pandas as pd

from lib.report.summary import summary

TABLE = pd.DataFrame(
    [
        {
            "finding": "f",
            "measure": "d",
            "effect": 0.1,
            "low": 0.0,
            "high": 0.2,
            "pairs": 4,
            "verdict": "inconclusive",
        }
    ]
)


def _runs(selection: list[str], cpu: list[str | None]) -> pd.DataFrame:
    n = len(selection)
    return pd.DataFrame(
        {
            "dataset": ["mnist"] * n,
            "method": ["lp"] * n,
            "network": ["dense"] * n,
            "source_seed": [0] * n,
            "selection": selection,
            "cpu": cpu,
        }
    )


def test_summary_names_the_machines():
    text = summary(TABLE, _runs(["val"] * 3, ["Xeon", "Xeon", "EPYC"]), "ece", "s")
    assert "Ran on: Xeon (2 runs); EPYC (1 run)." in text
    assert "optimistic" not in text


def test_summary_flags_optimistic_runs():
    text = summary(TABLE, _runs(["test", "val", "test"], [None] * 3), "ece", "s")
    assert "**2 of 3 runs are optimistic**" in text
    assert "Ran on" not in text  # records from before the CPU was recorded


def test_effects_are_printed_to_the_digit_after_their_margin():
    from lib.metrics.power import signed

    assert signed(-0.0406, 0.03) == "-0.041"  # at least three decimals
    assert signed(-0.00069, 0.0018) == "-0.0007"  # not -0.001: the margin's scale
    assert signed(9.1e-05, 0.0018) == "+0.0001"  # not +9.1e-05 beside -0.0007
    assert signed(float("nan"), 0.01) == "n/a"


def test_pooled_names_the_seeds_of_each_method_where_they_differ():
    from lib.report.summary import pooled

    runs = pd.DataFrame({"method": ["lp", "lp", "vp"], "seed": [1, 2, 1], "source_seed": [0] * 3})
    assert pooled(runs) == "2 (LP) / 1 (VP) transfer seed(s) x 1 source model(s)"
    assert pooled(runs[runs["method"] == "lp"]) == "2 transfer seed(s) x 1 source model(s)"
