"""The one resampling helper: ordinary and hierarchical bootstrap counts, and intervals."""

import numpy as np
import pytest

from lib.metrics.bootstrap import expansion, interval, resample_counts


def test_ordinary_bootstrap_counts() -> None:
    counts = resample_counts(50, 4000, seed=3)
    assert counts.shape == (4000, 50) and (counts.sum(axis=1) == 50).all()
    assert (counts == resample_counts(50, 4000, seed=3)).all()
    assert (counts != resample_counts(50, 4000, seed=4)).any()
    # each row's count is binomial(50, 1/50): mean 1, variance 49/50
    assert counts.mean() == pytest.approx(1.0, abs=0.01)
    assert counts.var() == pytest.approx(49 / 50, rel=0.05)
    with pytest.raises(ValueError, match="resamples"):
        resample_counts(5, 0)


def _frame(sources: int, seeds: int, rows_per_seed: int) -> tuple[np.ndarray, ...]:
    source = np.repeat(np.arange(sources), seeds * rows_per_seed)
    seed = np.tile(np.repeat(np.arange(seeds), rows_per_seed), sources)
    return source, seed


def test_hierarchical_counts_take_units_whole() -> None:
    source, seed = _frame(sources=3, seeds=4, rows_per_seed=2)
    counts = resample_counts([source, seed], 500, seed=0)
    assert (counts.sum(axis=1) == len(source)).all()  # equal-sized units: same total
    units = source * 10 + seed
    for u in np.unique(units):  # rows of one (source, seed) unit are drawn together
        block = counts[:, units == u]
        assert (block == block[:, :1]).all()
    per_source = np.stack([counts[:, source == s].sum(axis=1) for s in range(3)], axis=1)
    assert (per_source % 2 == 0).all()  # whole seeds of 2 rows
    # a source drawn m times draws 4 m of its seeds: the number of copies is visible
    assert (per_source == 0).any() and (per_source > 8).any()


def test_one_source_model_resamples_seeds_only() -> None:
    # a missing source_seed column is one source: it is always drawn, its seeds resampled
    source, seed = _frame(sources=1, seeds=5, rows_per_seed=3)
    counts = resample_counts([source, seed], 300, seed=1)
    flat = resample_counts([seed], 300, seed=1)
    assert (counts == flat).all()


def test_hierarchical_spread_includes_the_source_noise() -> None:
    # 8 sources with strong source effects, 5 seeds each with small noise. The spread of the
    # mean comes from the sources: the hierarchical bootstrap sees it; resampling the 40 rows
    # as independent sees sqrt(8 / 40) of it.
    rng = np.random.default_rng(0)
    sources, seeds = 8, 5
    source, seed = _frame(sources, seeds, rows_per_seed=1)
    effect = rng.normal(0, 1.0, sources)
    values = effect[source] + rng.normal(0, 0.05, len(source))
    source_means = np.array([values[source == s].mean() for s in range(sources)])
    # the bootstrap's target: sd of the mean of 8 source means, with the bootstrap's (S-1)/S
    expected = source_means.std(ddof=0) / np.sqrt(sources)

    def spread(counts: np.ndarray) -> float:
        return float((counts @ values / counts.sum(axis=1)).std())

    assert spread(resample_counts([source, seed], 4000, seed=2)) == pytest.approx(expected, rel=0.1)
    assert spread(resample_counts(len(values), 4000, seed=2)) < 0.6 * expected


def test_unequal_units() -> None:
    source = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    seed = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    counts = resample_counts([source, seed], 2000, seed=5)
    # source 0 has 3 seeds of 2 rows, source 1 has 2 seeds of 1 row: per drawn copy
    # 6 rows from source 0, 2 from source 1
    zero, one = counts[:, source == 0].sum(axis=1), counts[:, source == 1].sum(axis=1)
    assert set(np.unique(zero)) <= {0, 6, 12} and set(np.unique(one)) <= {0, 2, 4}
    assert ((zero / 6 + one / 2) == 2).all()  # two sources drawn in every resample
    with pytest.raises(ValueError, match="equal length"):
        resample_counts([source, seed[:-1]], 10)


def test_intervals() -> None:
    reps = np.arange(1001) / 1000.0  # quantiles 0.025 and 0.975 are exact
    assert interval(0.5, reps) == pytest.approx((0.025, 0.975))
    assert interval(0.6, reps, method="basic") == pytest.approx((1.2 - 0.975, 1.2 - 0.025))
    assert interval(0.5, np.append(reps, np.nan), level=0.5) == pytest.approx((0.25, 0.75))
    assert np.isnan(interval(0.5, np.full(3, np.nan))).all()
    with pytest.raises(ValueError, match="percentile, basic"):
        interval(0.5, reps, method="bca")


def test_expansion_for_few_units() -> None:
    assert expansion(3) == pytest.approx(np.sqrt(1.5) * 4.3027 / 1.95996, rel=1e-4)
    assert expansion(1) == 1.0 and 1.0 < expansion(1000) < 1.002
    assert expansion(2) > expansion(3) > expansion(10) > 1
    reps = np.array([0.0, 1.0, 2.0] * 100)
    low, high = interval(1.0, reps, units=3)
    assert (low, high) == pytest.approx((1 - expansion(3), 1 + expansion(3)))
