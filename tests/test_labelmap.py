"""Label mapping: frequency counts, ILM-VP's greedy rule, strategies and their schedules."""

from __future__ import annotations

import pytest
import torch

from lib.adapt.labelmap import (
    MAPPINGS,
    LabelMapper,
    apply_mapping,
    frequency_counts,
    greedy_mapping,
)


def one_hot_logits(top: list[int], num_source: int) -> torch.Tensor:
    """Logits whose argmax is `top[i]` for sample i."""
    logits = torch.randn(len(top), num_source) * 0.1
    logits[torch.arange(len(top)), torch.tensor(top)] = 5.0
    return logits


def test_frequency_counts_tiny() -> None:
    # sample: (argmax source, target label) = (0,0) (0,0) (2,0) (2,1) (3,1); target 2 unseen
    logits = one_hot_logits([0, 0, 2, 2, 3], num_source=4)
    counts = frequency_counts(logits, torch.tensor([0, 0, 0, 1, 1]), num_target=3)
    expected = [[2, 0, 0], [0, 0, 0], [1, 1, 0], [0, 1, 0]]
    assert counts.shape == (4, 3)  # the unseen target class still has its column
    assert counts.tolist() == expected
    assert counts.sum() == 5


def test_frequency_counts_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="0..2"):
        frequency_counts(torch.randn(3, 4), torch.tensor([0, 1, 3]), num_target=3)
    with pytest.raises(ValueError, match="expected source_logits"):
        frequency_counts(torch.randn(3, 4), torch.tensor([0, 1]), num_target=3)


def test_greedy_mapping_hand_worked() -> None:
    counts = torch.tensor(
        [
            [5, 1, 0],  # s0
            [2, 4, 0],  # s1
            [6, 7, 0],  # s2
            [1, 0, 0],  # s3
        ]
    )
    # By hand: global max 7 at (s2, t1) -> t1 <- s2; drop row s2 and column t1.
    # Left: s0 [5, ., 0], s1 [2, ., 0], s3 [1, ., 0]: max 5 at (s0, t0) -> t0 <- s0.
    # Left: column t2 only, all zeros in rows s1, s3: first in row-major order is
    # (s1, t2) -> t2 <- s1. Mapping by target: [s0, s2, s1].
    # (Per-column argmax would give [s2, s2, s0]: not one-to-one.)
    assert greedy_mapping(counts).tolist() == [0, 2, 1]


def test_greedy_mapping_ties_row_major() -> None:
    # All of (s0,t0), (s0,t1), (s1,t0) tie at 3: first in row-major is (s0, t0).
    # Then only s1, s2 x t1 remain, all 0: (s1, t1).
    assert greedy_mapping(torch.tensor([[3, 3], [3, 0], [0, 0]])).tolist() == [0, 1]
    # (s0, t1) comes before (s1, t0) in row-major order.
    assert greedy_mapping(torch.tensor([[0, 2], [2, 0], [0, 0]])).tolist() == [1, 0]
    # A never-predicted target (all-zero column) gets the lowest free source.
    assert greedy_mapping(torch.tensor([[0, 0], [0, 9], [0, 0]])).tolist() == [0, 1]


def test_greedy_mapping_two_per_target() -> None:
    counts = torch.tensor(
        [
            [0, 2],  # s0
            [3, 0],  # s1
            [0, 5],  # s2
            [4, 1],  # s3
            [1, 0],  # s4
        ]
    )
    # 5 at (s2,t1): t1 = [s2] (column stays, 1 of 2). 4 at (s3,t0): t0 = [s3].
    # 3 at (s1,t0): t0 = [s3, s1], full -> drop t0. Left rows s0, s4 in t1: 2 at (s0,t1).
    # Result by target, in assignment order: [s3, s1 | s2, s0].
    mapping = greedy_mapping(counts, per_target=2)
    assert mapping.tolist() == [3, 1, 2, 0]
    assert len(set(mapping.tolist())) == 4


def test_greedy_mapping_is_a_bijection_on_random_counts() -> None:
    counts = torch.randint(0, 20, (50, 12))
    mapping = greedy_mapping(counts, per_target=3)
    assert mapping.shape == (36,) and len(set(mapping.tolist())) == 36


def test_greedy_mapping_errors() -> None:
    with pytest.raises(ValueError, match="num_source=3.*num_target=2.*per_target=2"):
        greedy_mapping(torch.zeros(3, 2), per_target=2)
    with pytest.raises(ValueError, match="per_target"):
        greedy_mapping(torch.zeros(3, 2), per_target=0)


def test_apply_mapping_shapes_and_mean() -> None:
    logits = torch.arange(12.0).view(2, 6)  # row 0: 0..5, row 1: 6..11
    out = apply_mapping(logits, torch.tensor([4, 1, 0]))
    assert out.tolist() == [[4, 1, 0], [10, 7, 6]]
    two = apply_mapping(logits, torch.tensor([5, 1, 2, 0]), per_target=2)
    assert two.shape == (2, 2)
    assert two.tolist() == [[3.0, 1.0], [9.0, 7.0]]  # means of (5,1), (2,0)
    torch.testing.assert_close(apply_mapping(logits, torch.tensor([[5, 1], [2, 0]])), two)
    with pytest.raises(ValueError, match="per_target=2"):
        apply_mapping(logits, torch.tensor([1, 2, 3]), per_target=2)


def test_needs_update_schedules() -> None:
    epochs = range(7)
    schedule = {
        name: [LabelMapper(name, 20, 5, interval=3).needs_update(e) for e in epochs]
        for name in MAPPINGS
    }
    assert schedule["ilm"] == [True, False, False, True, False, False, True]
    assert schedule["flm"] == [True] + [False] * 6
    assert schedule["rlm"] == [False] * 7
    assert schedule["linear"] == [False] * 7
    assert [LabelMapper("ilm", 20, 5).needs_update(e) for e in epochs] == [True] * 7


def test_rlm_is_seeded_one_to_one() -> None:
    a = LabelMapper("rlm", 1000, 10, seed=3).mapping
    b = LabelMapper("rlm", 1000, 10, seed=3).mapping
    c = LabelMapper("rlm", 1000, 10, seed=4).mapping
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 10 and a.max() < 1000
    logits = torch.randn(4, 1000)
    assert torch.equal(LabelMapper("rlm", 1000, 10, seed=3)(logits), logits[:, a])


def test_ilm_update_forward_and_state_dict() -> None:
    mapper = LabelMapper("ilm", 6, 3)
    with pytest.raises(RuntimeError, match="update"):
        mapper(torch.randn(2, 6))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = one_hot_logits([4, 4, 1, 1, 5, 5], num_source=6)
    mapper.update(logits, labels)
    assert mapper.mapping.tolist() == [4, 1, 5]
    assert torch.equal(mapper(logits), logits[:, [4, 1, 5]])
    restored = LabelMapper("ilm", 6, 3)
    restored.load_state_dict(mapper.state_dict())
    assert restored.mapping.tolist() == [4, 1, 5]


def test_flm_update_with_two_sources_per_target() -> None:
    mapper = LabelMapper("flm", 8, 2, per_target=2)
    logits = one_hot_logits([0, 0, 0, 3, 6, 6, 7], num_source=8)
    mapper.update(logits, torch.tensor([1, 1, 1, 1, 0, 0, 0]))
    # t1: s0 (3) then s3 (1); t0: s6 (2) then s7 (1).
    assert mapper.mapping.tolist() == [6, 7, 0, 3]
    out = mapper(logits)
    torch.testing.assert_close(out[:, 1], (logits[:, 0] + logits[:, 3]) / 2)


def test_linear_mapper() -> None:
    mapper = LabelMapper("linear", 10, 4)
    assert mapper.mapping is None
    assert isinstance(mapper.linear, torch.nn.Linear)
    assert mapper(torch.randn(3, 10)).shape == (3, 4)
    assert sum(p.numel() for p in mapper.parameters() if p.requires_grad) == 10 * 4 + 4
    assert "mapping" not in mapper.state_dict()
    with pytest.raises(RuntimeError, match="'linear'"):
        mapper.update(torch.randn(3, 10), torch.tensor([0, 1, 2]))


def test_mapper_errors() -> None:
    with pytest.raises(ValueError, match="unknown mapping 'bayes'; choose one of: ilm, flm, rlm"):
        LabelMapper("bayes", 10, 4)
    with pytest.raises(ValueError, match="num_source=5, num_target=3, per_target=2"):
        LabelMapper("ilm", 5, 3, per_target=2)
    with pytest.raises(ValueError, match="interval=0"):
        LabelMapper("ilm", 10, 3, interval=0)
    LabelMapper("linear", 2, 3)  # a learned map needs no spare source classes


def ilm_vp_reference(counts: torch.Tensor, per_target: int) -> list[list[int]]:
    """ILM-VP's formulation: a 0/1 assignment matrix filled by flat argmax, -1 marks used."""
    dist = counts.clone().long()
    num_source, num_target = dist.shape
    chosen = torch.zeros_like(dist)
    for _ in range(per_target * num_target):
        s, t = divmod(int(dist.flatten().argmax()), num_target)
        chosen[s, t] = 1
        dist[s] = -1
        if chosen[:, t].sum() == per_target:
            dist[:, t] = -1
    return [sorted(torch.nonzero(chosen[:, t]).flatten().tolist()) for t in range(num_target)]


@pytest.mark.parametrize("per_target", [1, 2, 3])
def test_greedy_mapping_agrees_with_ilm_vp_formulation(per_target: int) -> None:
    generator = torch.Generator().manual_seed(per_target)
    for _ in range(20):
        # Small counts with many ties and all-zero columns.
        counts = torch.randint(0, 3, (15, 4), generator=generator)
        counts[:, int(torch.randint(0, 4, (1,), generator=generator))] = 0
        mapping = greedy_mapping(counts, per_target).view(4, per_target)
        ours = [sorted(row) for row in mapping.tolist()]
        assert ours == ilm_vp_reference(counts, per_target)
