"""Calibration metrics (top-label ECE/MCE/ACE, debiased, smooth and classwise ECE, Brier, NLL),
bootstrap intervals, temperature scaling and the paper's legacy ECE.

ECE and MCE come from netcal, always fed the top-label confidence and a 0/1 correctness
vector. netcal switches to binary mode whenever the labels hold <= 2 distinct values (a
few-shot or per-class slice): with more than 2 probability columns it raises, with exactly 2
it measures p(class 1) instead of the top label. (confidence, correctness) in binary mode is
by definition the top-label quantity, so it is right for any number of classes.

At the test sizes of few-shot and mini studies (1,000 or fewer) a binned ECE is biased upwards
by about sqrt(bins / N) and spreads by a few points: debiased_ece (Kumar et al. 2019, through
uncertainty-calibration's estimator) and smooth_ece (Blasiok & Nakkiran 2023, relplot) are the
less biased alternatives, and bootstrap_interval gives any of them a 95% interval.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import erf

from lib.metrics.bootstrap import interval, resample_counts

ArrayLike = Any  # torch.Tensor | np.ndarray | nested lists
# Resamples behind a record's intervals: ~0.1 s per metric set at 1,000 test samples.
RECORD_RESAMPLES = 1000


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check(probs: ArrayLike, labels: ArrayLike, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 [N, C] scores and int64 [N] labels."""
    p = _numpy(probs).astype(np.float64)
    y = _numpy(labels)
    if p.ndim != 2 or y.ndim != 1 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise ValueError(
            f"expected {kind} [N, C] and labels [N] with N > 0; got {p.shape} and {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must be in 0..{p.shape[1] - 1}; got {y.min()}..{y.max()}")
    if not np.isfinite(p).all():
        raise ValueError(f"{kind} contain NaN or inf")
    return p, y.astype(np.int64)


def _check_probs(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, y = _check(probs, labels, "probs")
    # Loose enough for float16/bfloat16 softmax, tight enough to catch logits.
    sums = p.sum(axis=1)
    if p.min() < -1e-6 or p.max() > 1 + 1e-2 or np.abs(sums - 1).max() > 1e-2:
        raise ValueError(
            f"probs must be softmax probabilities (values in [0, 1], rows summing to 1); got "
            f"values in [{p.min():.3g}, {p.max():.3g}], row sums in [{sums.min():.4g}, "
            f"{sums.max():.4g}]. Softmax logits first, or use calibration_metrics(logits, ...)"
        )
    return p, y


def _top_label(probs: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence (float64) and correctness (0/1 int64)."""
    p, y = _check_probs(probs, labels)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.int64)


def ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Top-label ECE: equal-width bins on max prob, sum of |acc - conf| * bin fraction."""
    from netcal.metrics import ECE

    conf, correct = _top_label(probs, labels)
    return float(ECE(bins=n_bins).measure(conf, correct))


def _bin_index(conf: np.ndarray, n_bins: int, closed: str = "left") -> np.ndarray:
    """Equal-width bin of each confidence. closed="left": [k/n, (k+1)/n), last bin closed, as
    netcal (ece, reliability_data); "right": (k/n, (k+1)/n], 0 in the first bin, as
    uncertainty-calibration's get_equal_prob_bins (debiased_ece, classwise_ece)."""
    if closed == "left":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        return np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    upper = np.array([i * 1.0 / n_bins for i in range(1, n_bins + 1)])  # its exact edges
    return np.minimum(np.searchsorted(upper, conf), n_bins - 1)


def _bin_sums(
    index: np.ndarray, conf: np.ndarray, correct: np.ndarray, n_bins: int, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per resample (rows of `counts`, how often each sample is drawn) and bin: number of
    samples, sum of confidences, number correct; each [resamples, n_bins]."""
    resamples = counts.shape[0]
    key = (np.arange(resamples)[:, None] * n_bins + index[None, :]).ravel()
    weights = counts.ravel().astype(np.float64)

    def total(values: np.ndarray) -> np.ndarray:
        flat = weights * np.broadcast_to(values, counts.shape).ravel()
        return np.bincount(key, flat, resamples * n_bins).reshape(resamples, n_bins)

    return total(np.ones_like(conf)), total(conf), total(correct)


def _binned_ece(
    conf: np.ndarray, correct: np.ndarray, n_bins: int, counts: np.ndarray
) -> np.ndarray:
    size, conf_sum, correct_sum = _bin_sums(_bin_index(conf, n_bins), conf, correct, n_bins, counts)
    return np.abs(correct_sum - conf_sum).sum(axis=1) / size.sum(axis=1)


def _debiased(conf: np.ndarray, correct: np.ndarray, n_bins: int, counts: np.ndarray) -> np.ndarray:
    """Kumar et al.'s normal-resampling debiasing, in closed form: per bin, 2 |acc - conf|
    minus E|A - conf| for A ~ N(acc, acc (1 - acc) / n), weighted by the bin's share."""
    index = _bin_index(conf, n_bins, closed="right")
    size, conf_sum, correct_sum = _bin_sums(index, conf, correct, n_bins, counts)
    filled = size > 0
    n = np.where(filled, size, 1.0)
    acc, mean_conf = correct_sum / n, conf_sum / n
    gap = np.abs(acc - mean_conf)
    sd = np.sqrt(np.clip(acc * (1 - acc), 0, None) / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        folded = sd * np.sqrt(2 / np.pi) * np.exp(-(gap**2) / (2 * sd**2)) + gap * erf(
            gap / (sd * np.sqrt(2))
        )
    expected = np.where(sd > 0, folded, gap)  # a bin of 1, or all right/wrong: no noise
    per_bin = np.where(filled, 2 * gap - expected, 0.0)
    return (per_bin * size).sum(axis=1) / size.sum(axis=1)


def debiased_ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Debiased top-label ECE (Kumar et al. 2019): uncertainty-calibration's
    get_ece(probs, labels, debias=True, num_bins=n_bins) without its Monte Carlo noise.

    That estimator draws 1,000 normal resamples of each bin's accuracy from the global numpy
    RNG and raises unless every one of the n_bins bins holds two samples (never true with
    fewer than n_bins classes: no top-label confidence is below 1 / classes). Here the mean of
    those resamples is computed exactly, empty bins weigh nothing (as in the plug-in ECE)
    and a one-sample bin keeps its plug-in error (its normal has zero width). Where the
    library is defined, both agree up to its Monte Carlo error (tests/test_calibration.py).
    """
    conf, correct = _top_label(probs, labels)
    return float(_debiased(conf, correct.astype(np.float64), n_bins, np.ones((1, len(conf))))[0])


def smooth_ece(probs: ArrayLike, labels: ArrayLike) -> float:
    """Smooth ECE of the top label (Blasiok & Nakkiran 2023): relplot.smECE(confidence,
    correct), a kernel-smoothed calibration error with a bandwidth chosen from the data."""
    import relplot

    conf, correct = _top_label(probs, labels)
    return float(relplot.smECE(conf, correct.astype(np.float64)))


def classwise_ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Classwise ECE (Kull et al. 2019): mean over classes k of the binned ECE of p_k against
    1[label = k], equal-width bins; = uncertainty-calibration's
    get_ece(probs, labels, num_bins=n_bins, mode="marginal")."""
    p, y = _check_probs(probs, labels)
    n, classes = p.shape
    index = _bin_index(p, n_bins, closed="right") + n_bins * np.arange(classes)
    size = np.bincount(index.ravel(), minlength=classes * n_bins)
    conf_sum = np.bincount(index.ravel(), weights=p.ravel(), minlength=classes * n_bins)
    hit_sum = np.bincount(index[np.arange(n), y], minlength=classes * n_bins)
    return float(np.abs(hit_sum - conf_sum).sum() / (n * classes)) if size.sum() else math.nan


def brier(probs: ArrayLike, labels: ArrayLike) -> float:
    """Multiclass Brier score: mean over samples of sum_k (p_k - 1[label = k])^2, in [0, 2]."""
    p, y = _check_probs(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


# Metrics with an exact vectorized form over resamples (conf, correct, n_bins, counts).
_VECTORIZED = {ece: _binned_ece, debiased_ece: _debiased}


def _vectorized(metric: Callable) -> Callable | None:
    """(replicates function, n_bins) when the metric, or a partial of it setting only n_bins,
    has a vectorized form; else None."""
    if metric in _VECTORIZED:
        return functools.partial(_VECTORIZED[metric], n_bins=15)
    if (
        isinstance(metric, functools.partial)
        and metric.func in _VECTORIZED
        and not metric.args
        and set(metric.keywords) <= {"n_bins"}
    ):
        return functools.partial(_VECTORIZED[metric.func], n_bins=metric.keywords.get("n_bins", 15))
    return None


def bootstrap_replicates(
    metric: Callable, probs: ArrayLike, labels: ArrayLike, counts: np.ndarray
) -> np.ndarray:
    """metric on each resample of the test set; counts [resamples, N] says how often each
    sample is drawn (lib.metrics.bootstrap.resample_counts). ece and debiased_ece (and partials of
    them setting n_bins) are computed for all resamples at once, any other metric in a loop."""
    p, y = _check_probs(probs, labels)
    fast = _vectorized(metric)
    if fast is not None:
        conf, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
        return fast(conf, correct, counts=counts)
    rows = np.arange(len(y))
    return np.array([metric(p[np.repeat(rows, c)], y[np.repeat(rows, c)]) for c in counts])


def bootstrap_interval(
    metric: Callable,
    probs: ArrayLike,
    labels: ArrayLike,
    n: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float]:
    """(low, high): the `level` bootstrap interval of metric(probs, labels) over `n`
    resamples of the test samples (lib.metrics.bootstrap), deterministic for a seed.

    Percentile by default: on a known calibration curve it covers the true ECE about as
    often as it claims while the miscalibration is well above the noise floor
    (tests/test_calibration.py). Close to calibrated, at sqrt(bins / N) or below, the
    binned ECE's upward bias dominates and its interval misses the truth; there
    debiased_ece's interval is the one to read ("basic", reflected around the estimate,
    trades coverage in the first regime for some in the second).
    """
    p, y = _check_probs(probs, labels)
    estimate = metric(p, y)
    # resamples in chunks of about 4M counts: bounded memory at paper-scale test sets
    chunk = max(1, min(n, 4_000_000 // len(y)))
    parts = [
        bootstrap_replicates(
            metric, p, y, resample_counts(len(y), min(chunk, n - start), seed=[seed, start])
        )
        for start in range(0, n, chunk)
    ]
    return interval(estimate, np.concatenate(parts), level, method)


# Calibration curves for estimator_bias: P(right | confidence c) = c - gap c (1 - c), c ~ U(0.2, 1):
# calibrated, mildly and strongly overconfident (true ECE = gap * 0.1867).
BIAS_CURVES = {"calibrated": 0.0, "mildly overconfident": 0.3, "overconfident": 1.0}


def synthetic_curve(
    n: int, gap: float, rng: np.random.Generator, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray, float]:
    """probs [n, num_classes], labels and the true ECE of the curve above: top-label
    confidence c ~ U(0.2, 1) on a random class, right with probability c - gap c (1 - c)."""
    conf = rng.uniform(0.2, 1.0, n)
    pred = rng.integers(0, num_classes, n)
    right = rng.random(n) < conf - gap * conf * (1 - conf)
    probs = np.repeat(((1 - conf) / (num_classes - 1))[:, None], num_classes, axis=1)
    probs[np.arange(n), pred] = conf
    labels = np.where(right, pred, (pred + 1) % num_classes)
    true_ece = gap * (0.6 - (1 - 0.2**3) / (3 * 0.8))  # E[gap c (1 - c)]
    return probs, labels, true_ece


def estimator_bias(n: int, repetitions: int = 40, seed: int = 0) -> list[dict[str, Any]]:
    """Mean estimate minus true ECE of ece, debiased_ece and smooth_ece on test sets of `n`
    drawn from each of BIAS_CURVES: which estimator to trust at this sample size."""
    metrics = {"ece": ece, "debiased_ece": debiased_ece, "smooth_ece": smooth_ece}
    rows = []
    for curve, gap in BIAS_CURVES.items():
        values: dict[str, list[float]] = {name: [] for name in metrics}
        for r in range(repetitions):
            probs, labels, true_ece = synthetic_curve(n, gap, np.random.default_rng([seed, r]))
            for name, metric in metrics.items():
                values[name].append(metric(probs, labels))
        for name, v in values.items():
            rows.append(
                {
                    "metric": name,
                    "curve": curve,
                    "n": n,
                    "true_ece": true_ece,
                    "mean": float(np.mean(v)),
                    "bias": float(np.mean(v) - true_ece),
                    "sd": float(np.std(v)),
                }
            )
    return rows


def least_biased_metric(bias: list[dict[str, Any]], among: list[str] | None = None) -> str:
    """The estimator (of estimator_bias's rows, optionally only those `among`) with the
    smallest worst-case |bias| over the curves."""
    worst: dict[str, float] = {}
    for row in bias:
        if among is None or row["metric"] in among:
            worst[row["metric"]] = max(worst.get(row["metric"], 0.0), abs(row["bias"]))
    if not worst:
        raise ValueError(
            f"no estimator among {among}; estimator_bias has {sorted({r['metric'] for r in bias})}"
        )
    return min(worst, key=worst.get)


def mce(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Top-label MCE: the largest |acc - conf| over non-empty equal-width bins."""
    from netcal.metrics import MCE

    conf, correct = _top_label(probs, labels)
    return float(MCE(bins=n_bins).measure(conf, correct))


def ace(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> float:
    """Adaptive calibration error: mean |acc - conf| over non-empty equal-mass bins (top label).

    This is netcal's ACE formula (bins weighted equally) on equal-mass bins, i.e.
    `netcal.metrics.ACE(bins, equal_intervals=False)`; that netcal path cuts bins at
    quantiles and raises "smallest edge difference is numerically 0" when confidences tie
    (saturated or few-shot outputs), so the bins are cut here by rank instead: sorted
    confidences split into n_bins groups of equal size (+-1). Without ties and with N
    divisible by n_bins both give the same value.
    """
    conf, correct = _top_label(probs, labels)
    order = np.argsort(conf, kind="stable")
    groups = [g for g in np.array_split(order, min(n_bins, len(order))) if len(g)]
    gaps = [abs(correct[g].mean() - conf[g].mean()) for g in groups]
    return float(np.mean(gaps))


def seed_ece(
    logits: ArrayLike, labels: ArrayLike, batch_size: int = 128, n_bins: int = 15
) -> float:
    """The paper's legacy "ECE", reproduced only for comparison; do not use it as ECE.

    The paper's code (landskape-ai/ILM-VP, experiments/cnn/look_at_calibration.py) runs
    `calibration_error += cal.get_ece(fx.cpu().numpy(), y.cpu().numpy())` per test batch
    (unshuffled loader, batch 128) on the RAW label-mapped logits `fx`, then logs
    `calibration_error / total_num`. uncertainty-calibration's get_ece (v0.1.4) is top-label,
    num_bins=15, equal-WIDTH bins (get_equal_prob_bins; DESIGN.md's "equal-mass" is get_ece_em),
    and never checks its input is a probability: the max LOGIT is the "confidence", values
    above 1 fall in the last bin and negatives in the first. So the result is roughly
    mean over batches of |max logit - accuracy| divided by the batch size, and depends on the
    test order. Measured example (tests/test_calibration.py): 1,280 samples, 10 classes, every
    softmax confidence 0.9, accuracy 950/1280: true top-label ECE 0.1578, seed_ece 0.0285.
    """
    import calibration as uncertainty_calibration

    z = _numpy(logits).astype(np.float32)  # float32 like the network outputs the paper used
    y = _numpy(labels).astype(np.int64)
    if z.ndim != 2 or y.shape != z.shape[:1] or len(y) == 0:
        raise ValueError(f"expected logits [N, C] and labels [N]; got {z.shape} and {y.shape}")
    total = 0.0
    for start in range(0, len(y), batch_size):
        batch = slice(start, start + batch_size)
        total += uncertainty_calibration.get_ece(z[batch], y[batch], num_bins=n_bins)
    return float(total / len(y))


def fit_temperature(logits: ArrayLike, labels: ArrayLike) -> float:
    """Temperature T minimizing the NLL of softmax(logits / T), fitted on validation logits.

    Done here rather than with netcal's TemperatureScaling, whose 'mle' path has an open
    report of returning its input unchanged. LBFGS over log T keeps T positive.
    """
    z, y = _check(logits, labels, "logits")
    z_t, y_t = torch.from_numpy(z), torch.from_numpy(y)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z_t / log_t.exp(), y_t)
        loss.backward()
        return loss

    opt.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        raise RuntimeError(f"temperature scaling diverged (T={temperature})")
    return temperature


def calibration_metrics(
    logits: ArrayLike,
    labels: ArrayLike,
    n_bins: int = 15,
    batch_size: int = 128,
    bootstrap: int = 0,
) -> dict[str, float]:
    """accuracy, nll, brier, ece, mce, ace, debiased_ece, smooth_ece, classwise_ece (on
    softmax(logits)) and the legacy seed_ece (raw logits); with `bootstrap` resamples also
    ece_low and ece_high, the 95% bootstrap interval of ece (seed 0: records reproduce)."""
    z, y = _check(logits, labels, "logits")
    z_t, y_t = torch.from_numpy(z), torch.from_numpy(y)
    probs = torch.softmax(z_t, dim=1).numpy()
    metrics = {
        "accuracy": float((z.argmax(axis=1) == y).mean()),
        "nll": float(F.cross_entropy(z_t, y_t)),
        "brier": brier(probs, y),
        "ece": ece(probs, y, n_bins),
        "mce": mce(probs, y, n_bins),
        "ace": ace(probs, y, n_bins),
        "debiased_ece": debiased_ece(probs, y, n_bins),
        "smooth_ece": smooth_ece(probs, y),
        "classwise_ece": classwise_ece(probs, y, n_bins),
        "seed_ece": seed_ece(z, y, batch_size=batch_size, n_bins=n_bins),
    }
    if bootstrap:
        low, high = bootstrap_interval(functools.partial(ece, n_bins=n_bins), probs, y, bootstrap)
        metrics.update(ece_low=low, ece_high=high)
    return metrics


def reliability_data(
    probs: ArrayLike,
    labels: ArrayLike,
    n_bins: int = 15,
    bootstrap: int = RECORD_RESAMPLES,
    seed: int = 0,
) -> dict[str, list]:
    """Per equal-width bin: bin, lower, upper, confidence, accuracy (NaN when empty), count,
    and accuracy_low / accuracy_high, the 95% percentile band of the bin's accuracy over
    `bootstrap` resamples of the test set (NaN when the bin is empty; none when 0).

    Bins match ece(): [lower, upper) with the last bin closed, so
    ece == sum(count / N * |accuracy - confidence|) over non-empty bins.
    """
    conf, correct = _top_label(probs, labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = _bin_index(conf, n_bins)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    data = {
        "bin": list(range(n_bins)),
        "lower": edges[:-1].tolist(),
        "upper": edges[1:].tolist(),
        "confidence": confidence.tolist(),
        "accuracy": accuracy.tolist(),
        "count": count.tolist(),
    }
    if bootstrap:
        counts = resample_counts(len(conf), bootstrap, seed)
        size, _, hits = _bin_sums(index, conf, correct.astype(np.float64), n_bins, counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            resampled = np.where(size > 0, hits / size, np.nan)
        bands = [interval(a, resampled[:, b]) for b, a in enumerate(accuracy)]
        data["accuracy_low"] = [low for low, _ in bands]
        data["accuracy_high"] = [high for _, high in bands]
    return data


def confidence_analysis(probs: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """mean_conf, mean true-class prob on correct / wrong samples (NaN if none), kl_to_uniform.

    kl_to_uniform is the mean of KL(p || uniform) = log C - H(p). (The paper's script logged
    F.kl_div(log p, uniform), i.e. KL(uniform || p) / C; not reproduced.)
    """
    p, y = _check_probs(probs, labels)
    true_prob = p[np.arange(len(y)), y]
    correct = p.argmax(axis=1) == y
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1)
    return {
        "mean_conf": float(p.max(axis=1).mean()),
        "mean_true_prob_correct": float(true_prob[correct].mean()) if correct.any() else math.nan,
        "mean_true_prob_wrong": float(true_prob[~correct].mean()) if (~correct).any() else math.nan,
        "kl_to_uniform": float((plogp + math.log(p.shape[1])).mean()),
    }
