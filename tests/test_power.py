"""Verdicts with an equivalence margin, and variance components recovered from synthetic
hierarchical samples with known answers."""

import itertools

import numpy as np
import pandas as pd
import pytest

from lib.metrics.power import (
    expected_width,
    needed,
    sources_for_power,
    variance_components,
    verdict,
    verdict_kind,
)


@pytest.mark.parametrize(
    ("low", "high", "word"),
    [
        (0.01, 0.20, "supported"),
        # a real effect smaller than the margin is still one, and says it is negligible
        (0.005, 0.02, "supported, smaller than ±0.03"),
        (-0.20, -0.01, "contradicted"),
        (-0.02, -0.01, "contradicted, smaller than ±0.03"),
        (-0.02, 0.025, "no effect larger than ±0.03"),
        (-0.02, 0.04, "inconclusive"),  # holds 0 and reaches past the margin
        (-0.03, 0.01, "inconclusive"),  # touching the margin is not inside it
        (float("nan"), float("nan"), "no data"),
    ],
)
def test_verdict_words(low, high, word):
    assert verdict(low, high, margin=0.03) == word


def test_without_a_margin_nothing_is_equivalent():
    assert verdict(-0.001, 0.001) == "inconclusive"
    assert verdict_kind(verdict(-0.001, 0.001, 0.01)) == "equivalent"
    assert verdict_kind("supported") == "supported"
    assert verdict_kind(verdict(-0.02, -0.01, 0.03)) == "contradicted"
    assert verdict(-0.02, -0.01) == "contradicted"


def _sample(sources, seeds, source_sd, seed_sd, residual_sd, cell_effects, rng):
    cells = list(itertools.product(["a", "b"], [10, -1]))[: len(cell_effects)]
    rows = []
    for s in range(sources):
        b = rng.normal(0, source_sd)
        for t in range(seeds):
            e = rng.normal(0, seed_sd)
            for (dataset, shot), alpha in zip(cells, cell_effects, strict=True):
                y = 0.02 + alpha + b + e + rng.normal(0, residual_sd)
                rows.append((dataset, shot, t, s, y))
    frame = pd.DataFrame(rows, columns=["dataset", "n_shot", "seed", "source_seed", "y"])
    return frame.set_index(["dataset", "n_shot", "seed", "source_seed"])["y"]


def test_components_are_recovered_on_a_hierarchical_sample():
    truth = {"source": 0.05, "seed": 0.02, "residual": 0.03}
    cells = [0.04, -0.04, 0.0, 0.0]  # sd 0.033 of the cell effects
    estimates = [
        variance_components(_sample(60, 3, *truth.values(), cells, np.random.default_rng(r)))
        for r in range(5)
    ]
    for key, sd in truth.items():
        mean = np.mean([e[key] for e in estimates])
        assert mean == pytest.approx(sd, rel=0.2), (key, mean)
    assert np.mean([e["cell"] for e in estimates]) == pytest.approx(0.0327, rel=0.25)
    e = estimates[0]
    assert (e["sources"], e["seeds"], e["cells"]) == (60, 3.0, 4.0)
    shares = [e[f"share_{k}"] for k in ("source", "seed", "residual")]
    assert sum(shares) == pytest.approx(1) and shares[0] == max(shares)


def test_components_tell_a_seed_dominated_sample_from_a_source_dominated_one():
    rng = np.random.default_rng(0)
    by_seed = variance_components(_sample(30, 4, 0.0, 0.06, 0.01, [0, 0], rng))
    by_source = variance_components(_sample(30, 4, 0.06, 0.0, 0.01, [0, 0], rng))
    assert by_seed["seed"] > 3 * by_seed["source"]
    assert by_source["source"] > 3 * by_source["seed"]


def test_missing_cells_still_give_the_components():
    values = _sample(60, 2, 0.04, 0.0, 0.03, [0.05, -0.05, 0.0, 0.0], np.random.default_rng(1))
    kept = values.drop(values.index[::7])
    full, partial = variance_components(values), variance_components(kept)
    for key in ("source", "residual"):
        assert partial[key] == pytest.approx(full[key], rel=0.2)


def test_expected_width_and_needed_sources_follow_the_components():
    comps = {"source": 0.05, "seed": 0.0, "residual": 0.0, "seeds": 1.0, "cells": 4.0}
    # only the source level varies: width = 2 t(S-1) 0.05 / sqrt(S)
    from scipy.stats import t

    assert expected_width(comps, 10) == pytest.approx(2 * t.ppf(0.975, 9) * 0.05 / 10**0.5)
    s = needed(comps, 0.08)
    assert expected_width(comps, s) <= 0.08 < expected_width(comps, s - 1)
    assert needed(comps | {"source": 1.0}, 0.001, most=50) is None
    # more seeds per source shrink only the seed and residual parts
    noisy = comps | {"source": 0.0, "residual": 0.1}
    assert expected_width(noisy, 5, seeds=4) == pytest.approx(expected_width(noisy, 5) / 2)


def test_sources_for_power_give_that_power_on_simulated_studies():
    """At the count sources_for_power gives, 80% of simulated studies with the stated effect
    exclude 0 (t interval over source means), and a quarter fewer fall clearly short."""
    from scipy.stats import t

    comps = {"source": 0.064, "seed": 0.017, "residual": 0.082, "seeds": 1.0, "cells": 4.0}
    sd = expected_width(comps, 2) / (2 * t.ppf(0.975, 1)) * 2**0.5  # one source mean's sd
    count = sources_for_power(comps, 0.02)
    rng = np.random.default_rng(0)

    def power(sources: int, studies: int = 4000) -> float:
        means = rng.normal(0.02, sd, size=(studies, sources))
        half = t.ppf(0.975, sources - 1) * means.std(axis=1, ddof=1) / sources**0.5
        return float((means.mean(axis=1) - half > 0).mean())

    assert 0.77 <= power(count) <= 0.83 and power(int(count * 0.75)) < 0.72
    assert sources_for_power(comps, 0.0) is None
    assert sources_for_power(comps, 0.0001, most=50) is None


def test_a_measured_width_matches_the_bootstrap_it_predicts():
    # the findings' interval (lib.study.findings.hierarchical_mean) on a sample whose components
    # are known: its width is what expected_width says, within sampling noise

    from lib.study.findings import hierarchical_mean

    widths, predicted = [], []
    for r in range(20):
        values = _sample(8, 2, 0.03, 0.01, 0.03, [0.0, 0.0, 0.0, 0.0], np.random.default_rng(r))
        est = hierarchical_mean(values, n=1000, seed=r)
        widths.append(est["high"] - est["low"])
        predicted.append(expected_width(variance_components(values), 8))
    assert np.median(widths) == pytest.approx(np.median(predicted), rel=0.25)


def test_the_coverage_script_runs_the_findings_interval():
    """tools/coverage.py (the table of docs/power.md): on a small scenario the interval covers
    the true mean about 95% of the time, and finds a large effect."""
    import runpy

    from lib.core.utils import resolve_path

    tool = runpy.run_path(str(resolve_path("tools/coverage.py")))
    scenario = tool["Scenario"](12, 1, 4, 0.05, 0.0, 0.08, skewed=True)
    row = tool["coverage"](scenario, studies=60, resamples=300, effect=0.1)
    assert 0.85 <= row["cover_bootstrap"] <= 1 and 0.85 <= row["cover_t"] <= 1
    assert row["power"] > 0.9 and 0 < row["width_bootstrap"] < 0.2
