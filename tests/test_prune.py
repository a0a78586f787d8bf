"""Magnitude and random pruning, and resumable IMP on a tiny synthetic problem."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from lib.models.backbone import (
    Mask,
    apply_mask,
    create_backbone,
    load_lottery_ticket,
    sparsity,
    ticket_paths,
)
from lib.models.prune import load_reports, prune, random_mask, random_prune, run_imp


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_backbone("cifar_resnet_20", num_classes=4)


def test_prune_rounds_reach_the_lottery_ticket_densities(model) -> None:
    mask = Mask.ones_like(model)
    for k in range(1, 9):
        mask = prune(model, mask, 0.2)
        assert abs(mask.sparsity - (1 - 0.8**k)) < 0.005
        apply_mask(model, mask)
        assert sparsity(model) == pytest.approx(mask.sparsity, abs=1e-6)


def test_prune_removes_the_smallest_surviving_weights() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False), torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -5.0, 0.3, 2.0], [-0.2, 0.05, 4.0, -1.0]]))
        model[1].weight.copy_(torch.tensor([[0.01, 3.0]]))
    mask = Mask.ones_like(model)
    mask["0.weight"][0, 0] = 0  # already pruned: not counted, not ranked
    new = prune(model, mask, 0.4)  # 10 surviving -> remove 4: 0.01, 0.05, -0.2, 0.3
    assert new["0.weight"].tolist() == [[0, 1, 0, 1], [0, 0, 1, 1]]
    assert new["1.weight"].tolist() == [[0, 1]]
    assert mask["0.weight"].sum() == 7  # the input mask is not modified


def test_prune_only_the_tensors_in_the_mask(model) -> None:
    mask = Mask.ones_like(model)
    del mask["fc.weight"]  # a caller spares the classifier by leaving it out
    new = prune(model, mask, 0.5)
    assert "fc.weight" not in new
    assert new.sparsity == pytest.approx(0.5, abs=1e-5)


def test_random_prune_sparsity_and_seed(model) -> None:
    mask = Mask.ones_like(model)
    a, b = random_prune(mask, 0.3, seed=1), random_prune(mask, 0.3, seed=1)
    assert a.sparsity == pytest.approx(0.3, abs=1e-5)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], random_prune(mask, 0.3, seed=2)[n]) for n in a)
    again = random_prune(a, 0.5, seed=3)
    assert all(bool((again[n] <= a[n]).all()) for n in a)  # only survivors are removed
    ticket = Mask.ones_like(model)
    for _ in range(4):
        ticket = prune(model, ticket, 0.2)
    control = random_mask(model, 4, seed=0)  # same surviving count as the state-4 ticket
    assert sum(int(m.sum()) for m in control.values()) == sum(int(m.sum()) for m in ticket.values())
    big = control["blocks.8.conv2.weight"]  # uniform: each large layer near the global rate
    assert abs(float(1 - big.mean()) - (1 - 0.8**4)) < 0.02


def test_prune_rejects_bad_fraction(model) -> None:
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\), got 1.5"):
        prune(model, Mask.ones_like(model), 1.5)


def _tiny_problem(n: int = 64) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    images = torch.rand(n, 3, 8, 8, generator=g) * 0.3
    images[:, 0] += labels.view(-1, 1, 1) * 0.3  # learnable from the red channel
    return TensorDataset(images[:48], labels[:48]), TensorDataset(images[48:], labels[48:])


def test_imp_resumes_without_retraining_finished_levels(tmp_path) -> None:
    train, test = _tiny_problem()
    kwargs = dict(epochs=1, classes=["a", "b", "c"], rewind_iter=1, batch_size=16)
    run_imp("cifar_resnet_8", train, test, tmp_path, range(3), **kwargs)  # killed after 2
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*_[012]_*")}
    assert len(stamps) == 3 * 4  # checkpoint, mask, mask sparsity json, report per level
    reports = run_imp(
        "cifar_resnet_8", train, test, tmp_path, range(5), random_states=(2,), **kwargs
    )
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*_[012]_*")} == stamps | {
        p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*_random_2_*")
    }
    tickets = [r for r in reports if r["kind"] == "dyn4"]
    assert [r["state"] for r in tickets] == [0, 1, 2, 3, 4]
    for r in tickets:
        assert abs(r["sparsity"] - (1 - 0.8 ** r["state"])) < 0.005
    control = next(r for r in reports if r["kind"] == "random")
    assert control["mask_sparsity"] == pytest.approx(tickets[2]["mask_sparsity"])
    assert json.loads((tmp_path / "classes.json").read_text()) == ["a", "b", "c"]
    assert (tmp_path / "cifar_resnet_8_rewind.pth").is_file()
    ticket = load_lottery_ticket("cifar_resnet_8", *ticket_paths(tmp_path, "cifar_resnet_8", 4))
    assert sparsity(ticket) == pytest.approx(tickets[4]["sparsity"])
    assert load_reports(tmp_path, "cifar_resnet_8") == reports
    with pytest.raises(ValueError, match="other settings.*epochs"):
        run_imp("cifar_resnet_8", train, test, tmp_path, range(5), **{**kwargs, "epochs": 2})
