"""Schedules, early stopping and the convergence flag of the transfer loops."""

import pytest
import torch

from lib.adapt.train import CONVERGED_GAIN, Fit, _schedule, train_linear_probe


def _fit(accuracies):
    fit = Fit()
    for epoch, acc in enumerate(accuracies):
        fit.history.append({"epoch": epoch, "val_accuracy": acc})
        if acc > fit.best_val_accuracy:
            fit.best_epoch, fit.best_val_accuracy = epoch, acc
    return fit


def test_converged_reads_the_last_quarter():
    assert _fit([0.5, 0.7, 0.8, 0.8]).converged  # last quarter gained nothing
    assert not _fit([0.5, 0.7, 0.8, 0.8 + 2 * CONVERGED_GAIN]).converged
    assert _fit([0.5, 0.7, 0.8, 0.8 + CONVERGED_GAIN / 2]).converged
    # a gain inside the first three quarters does not matter
    assert _fit([0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]).converged
    assert not _fit([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]).converged


def test_should_stop_counts_epochs_without_improvement():
    fit = _fit([0.5, 0.6, 0.6, 0.6])
    assert not fit.should_stop(0)  # 0 = never
    assert fit.should_stop(2) and fit.stopped_early
    assert not fit.should_stop(3)


def test_schedules():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    cosine = _schedule(opt, 10, "cosine")
    lrs = []
    for _ in range(10):
        lrs.append(cosine.get_last_lr()[0])
        opt.step()
        cosine.step()
    assert lrs[0] == 1.0 and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    multistep = _schedule(opt, 4, "multistep")  # milestones int(2.0), int(2.88) = 2, 2
    seen = []
    for _ in range(4):
        seen.append(multistep.get_last_lr()[0])
        opt.step()
        multistep.step()
    assert seen == pytest.approx([1.0, 1.0, 0.01, 0.01])  # the collapse at small epoch counts
    with pytest.raises(ValueError, match="unknown schedule 'linear'; choose one of"):
        _schedule(opt, 4, "linear")


def test_linear_probe_stops_early_on_a_plateau():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    y = (x[:, 0] > 0).long()  # separable: val accuracy saturates within a few epochs
    train, val = (x[:150], y[:150]), (x[150:], y[150:])
    _, full = train_linear_probe(train, val, 2, epochs=60, lr=0.05, seed=0)
    _, early = train_linear_probe(train, val, 2, epochs=60, lr=0.05, seed=0, patience=3)
    assert len(full.history) == 60 and not full.stopped_early
    assert early.stopped_early and len(early.history) < 60
    assert len(early.history) - 1 - early.best_epoch == 3


def test_converged_is_unknown_without_validation():
    fit = Fit()
    stats = {"loss": 1.0, "correct": 1, "seen": 2}
    for epoch in range(4):
        fit.end_epoch(epoch, stats, 0.1, None, None, 15)
    assert fit.converged is None and not fit.should_stop(2)
