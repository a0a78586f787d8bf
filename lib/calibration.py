"""Calibration metrics (top-label ECE/MCE/ACE), temperature scaling and the paper's legacy ECE.

ECE and MCE come from netcal, always fed the top-label confidence and a 0/1 correctness
vector. netcal switches to binary mode whenever the labels hold <= 2 distinct values (a
few-shot or per-class slice): with more than 2 probability columns it raises, with exactly 2
it measures p(class 1) instead of the top label. (confidence, correctness) in binary mode is
by definition the top-label quantity, so it is right for any number of classes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = Any  # torch.Tensor | np.ndarray | nested lists


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
    logits: ArrayLike, labels: ArrayLike, n_bins: int = 15, batch_size: int = 128
) -> dict[str, float]:
    """accuracy, nll, ece, mce, ace (on softmax(logits)) and the legacy seed_ece (raw logits)."""
    z, y = _check(logits, labels, "logits")
    z_t, y_t = torch.from_numpy(z), torch.from_numpy(y)
    probs = torch.softmax(z_t, dim=1).numpy()
    return {
        "accuracy": float((z.argmax(axis=1) == y).mean()),
        "nll": float(F.cross_entropy(z_t, y_t)),
        "ece": ece(probs, y, n_bins),
        "mce": mce(probs, y, n_bins),
        "ace": ace(probs, y, n_bins),
        "seed_ece": seed_ece(z, y, batch_size=batch_size, n_bins=n_bins),
    }


def reliability_data(probs: ArrayLike, labels: ArrayLike, n_bins: int = 15) -> dict[str, list]:
    """Per equal-width bin: bin, lower, upper, confidence, accuracy (NaN when empty), count.

    Bins match ece(): [lower, upper) with the last bin closed, so
    ece == sum(count / N * |accuracy - confidence|) over non-empty bins.
    """
    conf, correct = _top_label(probs, labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    return {
        "bin": list(range(n_bins)),
        "lower": edges[:-1].tolist(),
        "upper": edges[1:].tolist(),
        "confidence": confidence.tolist(),
        "accuracy": accuracy.tolist(),
        "count": count.tolist(),
    }


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
