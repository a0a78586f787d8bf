"""The findings table: verdicts follow the paired differences, in both directions."""

import itertools

import numpy as np
import pandas as pd

from lib.findings import findings


def _frame(vp_drop: float, lp_drop: float, ece_rise: float, noise: float = 0.01) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for dataset, n_shot, seed, method, state in itertools.product(
        ["a", "b"], [10, -1], [1, 2, 3], ["lp", "vp"], [0, 8]
    ):
        drop = (vp_drop if method == "vp" else lp_drop) * (2 if n_shot == 10 else 1)
        sparse = state == 8
        rows.append(
            {
                "dataset": dataset,
                "n_shot": n_shot,
                "seed": seed,
                "method": method,
                "network": "ticket" if sparse else "dense",
                "sparsity": state,
                "test_accuracy": 0.9 - sparse * drop + rng.normal(0, noise),
                "test_ece": 0.05 + sparse * ece_rise + rng.normal(0, noise),
                "test_seed_ece": 0.01 + rng.normal(0, noise),
            }
        )
    return pd.DataFrame(rows)


def test_paper_like_data_supports_the_findings():
    table = findings(_frame(vp_drop=0.2, lp_drop=0.02, ece_rise=0.1)).set_index("finding")
    verdicts = table["verdict"].to_dict()
    assert verdicts["sparsity hurts VP accuracy more than LP accuracy"] == "supported"
    assert verdicts["...and more so at the lowest n-shot than with full data"] == "supported"
    assert verdicts["sparse tickets are worse calibrated (VP, true ECE)"] == "supported"
    assert verdicts["sparse tickets are worse calibrated (VP, paper's metric)"] == "inconclusive"


def test_opposite_data_contradicts_them():
    table = findings(_frame(vp_drop=0.0, lp_drop=0.2, ece_rise=-0.04)).set_index("finding")
    assert (
        table.loc["sparsity hurts VP accuracy more than LP accuracy", "verdict"] == "contradicted"
    )
    assert (
        table.loc["sparse tickets are worse calibrated (LP, true ECE)", "verdict"] == "contradicted"
    )
    assert (table["pairs"] > 0).all()
