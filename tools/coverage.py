"""Coverage of the findings' 95% interval on synthetic studies whose answer is known.

    .venv/bin/python tools/coverage.py                 # the table of docs/power.md (~1 min)
    .venv/bin/python tools/coverage.py --studies 200   # quicker, coarser

Each study draws paired differences y[s, t, c] = mu + b[s] + e[s, t] + r[s, t, c] for S
source models, T transfer seeds each and C cells (dataset x n-shot), with b the source
effect (normal, or a skewed lognormal shifted to mean 0: a few source models with a large
effect, as VP's calibration change looks here), e the seed effect and r the residual. The
interval is the study's own (lib.study.findings.hierarchical_mean: a cluster bootstrap
over source models, widened for few of them); beside it the exact t interval over the
source means. A row prints the share of intervals that hold the true mean mu = 0 (0.95 is
right; the binomial error at 1,000 studies is about ±0.007), the mean width, and the power:
the share of studies with a true effect of --effect (default 0.021, the effect
docs/preregistration.md registers 80% power at) whose interval lies above 0.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import t

from lib.study.findings import hierarchical_mean


@dataclass(frozen=True)
class Scenario:
    sources: int
    seeds: int
    cells: int
    sd_source: float
    sd_seed: float
    sd_residual: float
    skewed: bool = False  # source effects lognormal (sigma 1), shifted to mean 0

    def __str__(self) -> str:
        shape = "lognormal" if self.skewed else "normal"
        return (
            f"{self.sources} x {self.seeds} x {self.cells}; sd {self.sd_source} ({shape}), "
            f"{self.sd_seed}, {self.sd_residual}"
        )


SCENARIOS = [
    Scenario(3, 3, 4, 0.0, 0.0, 0.03),
    Scenario(6, 3, 4, 0.0, 0.0, 0.03),
    Scenario(3, 3, 4, 0.02, 0.0, 0.03),
    Scenario(12, 1, 4, 0.05, 0.0, 0.08),
    # the deep tier's VP debiased ECE components: at its 18 sources, and the confirmatory design
    Scenario(18, 1, 4, 0.064, 0.017, 0.082),
    Scenario(18, 1, 4, 0.064, 0.017, 0.082, skewed=True),
    Scenario(96, 3, 2, 0.064, 0.017, 0.082),
    Scenario(96, 3, 2, 0.064, 0.017, 0.082, skewed=True),
    Scenario(6, 1, 2, 0.064, 0.017, 0.082, skewed=True),
]


def source_effects(rng: np.random.Generator, scenario: Scenario) -> np.ndarray:
    if not scenario.skewed:
        return rng.normal(0, scenario.sd_source, scenario.sources)
    sigma = 1.0  # lognormal(0, 1): mean e^0.5, sd sqrt((e - 1) e)
    raw = rng.lognormal(0, sigma, scenario.sources)
    mean, sd = np.exp(sigma**2 / 2), np.sqrt((np.exp(sigma**2) - 1) * np.exp(sigma**2))
    return (raw - mean) / sd * scenario.sd_source


def study(rng: np.random.Generator, scenario: Scenario, mu: float = 0.0) -> pd.Series:
    s, k, c = scenario.sources, scenario.seeds, scenario.cells
    index = pd.MultiIndex.from_product(
        [range(c), range(1, k + 1), range(s)], names=["cell", "seed", "source_seed"]
    )
    source = index.get_level_values("source_seed").to_numpy()
    seed = index.get_level_values("seed").to_numpy() - 1
    values = (
        mu
        + source_effects(rng, scenario)[source]
        + rng.normal(0, scenario.sd_seed, s * k)[source * k + seed]
        + rng.normal(0, scenario.sd_residual, len(index))
    )
    return pd.Series(values, index=index)


def coverage(scenario: Scenario, studies: int, resamples: int, effect: float) -> dict[str, float]:
    hits = {"bootstrap": 0, "t": 0}
    widths = {"bootstrap": 0.0, "t": 0.0}
    found = 0
    for r in range(studies):
        shifted = study(np.random.default_rng(r), scenario, mu=effect)
        found += hierarchical_mean(shifted, n=resamples, seed=r)["low"] > 0
        values = study(np.random.default_rng(r), scenario)
        est = hierarchical_mean(values, n=resamples, seed=r)
        hits["bootstrap"] += est["low"] <= 0 <= est["high"]
        widths["bootstrap"] += est["high"] - est["low"]
        means = values.groupby(level="source_seed").mean()
        half = t.ppf(0.975, len(means) - 1) * means.std(ddof=1) / np.sqrt(len(means))
        hits["t"] += abs(means.mean()) <= half
        widths["t"] += 2 * half
    return {
        "power": found / studies,
        **{f"cover_{k}": v / studies for k, v in hits.items()},
        **{f"width_{k}": v / studies for k, v in widths.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/coverage.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=1000, help="per scenario (default 1000)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap draws (1000)")
    parser.add_argument("--effect", type=float, default=0.021, help="true effect of the power")
    args = parser.parse_args(argv)
    print(
        "| sources x seeds x cells; sd source, seed, residual | coverage: bootstrap | t | "
        f"width: bootstrap / t | power at {args.effect:+g} |"
    )
    print("|---|---|---|---|---|")
    for scenario in SCENARIOS:
        row = coverage(scenario, args.studies, args.resamples, args.effect)
        print(
            f"| {scenario} | {row['cover_bootstrap']:.3f} | {row['cover_t']:.3f} | "
            f"{row['width_bootstrap']:.3f} / {row['width_t']:.3f} | {row['power']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
