"""The regime checks of a source model's tickets (issue 15), stored per source seed in a ticket
release's manifest (lib.study.tickets): a converged dense source, tickets that match it
through a few states, and a random-pruning control clearly below the ticket.

    from lib.study.source_regime import regime_checks, regime_lines
    regime_checks(reports)        # one seed's reports (_report.json) -> the three checks
    regime_lines(manifest)        # a line per seed, and whether every check passed
    source_checks(manifest, seeds)  # a table of those seeds' checks (the report's)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

MIN_DENSE_ACCURACY = 0.97
MATCH_THROUGH_STATE, MATCH_TOLERANCE = 5, 0.015
RANDOM_GAP = 0.05


def regime_checks(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The three checks of the mini study's regime for one source seed, with their numbers."""
    tickets = {r["state"]: r["test_accuracy"] for r in reports if r["kind"] == "dyn4"}
    randoms = {r["state"]: r["test_accuracy"] for r in reports if r["kind"] == "random"}
    dense = tickets.get(0, float("nan"))
    worst = min(
        (tickets[k] - dense for k in tickets if 0 < k <= MATCH_THROUGH_STATE), default=float("nan")
    )
    sparsest = max(randoms, default=None)
    gap = tickets[sparsest] - randoms[sparsest] if sparsest in tickets else float("nan")
    return {
        "dense_accuracy": dense,
        "dense_ok": dense >= MIN_DENSE_ACCURACY,
        f"worst_ticket_minus_dense_through_state_{MATCH_THROUGH_STATE}": worst,
        "tickets_match_ok": worst >= -MATCH_TOLERANCE,
        "random_state": sparsest,
        "ticket_minus_random": gap,
        "random_below_ok": gap >= RANDOM_GAP,
    }


def regime_lines(manifest: dict[str, Any]) -> tuple[list[str], bool]:
    """One line per source seed of `manifest`: the mini study's regime checks on its
    tickets; and whether every check passed."""
    lines, passed = [], True
    for seed, c in sorted(manifest.get("regime_checks", {}).items()):
        worst = c[f"worst_ticket_minus_dense_through_state_{MATCH_THROUGH_STATE}"]
        ok = {k: c[k] for k in ("dense_ok", "tickets_match_ok", "random_below_ok")}
        word = {k: "ok" if v else "FAILS" for k, v in ok.items()}
        passed = passed and all(ok.values())
        lines.append(
            f"seed {seed}: dense {c['dense_accuracy']:.4f} (>= {MIN_DENSE_ACCURACY}: "
            f"{word['dense_ok']}); worst ticket - dense through state {MATCH_THROUGH_STATE} "
            f"{worst:+.4f} (>= -{MATCH_TOLERANCE}: {word['tickets_match_ok']}); ticket - "
            f"random at state {c['random_state']} {c['ticket_minus_random']:+.4f} "
            f"(>= {RANDOM_GAP}: {word['random_below_ok']})"
        )
    return lines, passed


def source_checks(manifest: dict[str, Any], seeds: Iterable[int]) -> pd.DataFrame:
    """One row per source seed in `seeds` that `manifest` checked: its dense accuracy, worst
    ticket - dense through MATCH_THROUGH_STATE, ticket - random at the random control's
    state, and whether it passes all three checks."""
    checks = manifest.get("regime_checks", {})
    rows = []
    for seed in sorted({int(s) for s in seeds}):
        c = checks.get(str(seed))
        if c is None:
            continue
        rows.append(
            {
                "source_seed": seed,
                "dense_accuracy": c["dense_accuracy"],
                f"worst_ticket_minus_dense_to_{MATCH_THROUGH_STATE}": c[
                    f"worst_ticket_minus_dense_through_state_{MATCH_THROUGH_STATE}"
                ],
                "ticket_minus_random": c["ticket_minus_random"],
                "random_state": c["random_state"],
                "passes": all(c[k] for k in ("dense_ok", "tickets_match_ok", "random_below_ok")),
            }
        )
    return pd.DataFrame(rows)
