"""IMP sparsity states: state k of a ticket keeps kept_fraction(k) = 0.8**k of the prunable
weights, because IMP prunes PRUNE_FRACTION of the surviving weights per level (the
lottery-ticket work)."""

from __future__ import annotations

from typing import Any

PRUNE_FRACTION = 0.2


def kept_fraction(state: Any) -> Any:
    """Share of the prunable weights a ticket at IMP state k keeps (works on arrays too)."""
    return (1 - PRUNE_FRACTION) ** state
