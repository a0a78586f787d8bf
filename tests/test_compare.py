"""lib.study.compare on synthetic results: matched deltas, runs only in one study, parameters that
differ, verdicts that moved, the command line and its figure."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from lib.study import compare

pytestmark = pytest.mark.slow  # findings bootstrap twice per test


def study(shift: float = 0.0, vp_drop: float = 0.0, seed: int = 0, lr: float = 0.01):
    """Tidy results of a small study: LP and VP, dense vs ticket 8, 3 sources x 2 seeds."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset, method, state, n_shot, s, source in itertools.product(
        ["mnist", "digits"], ["lp", "vp"], [0, 8], [10, -1], [1, 2], [0, 1, 2]
    ):
        acc = 0.9 - 0.3 * (method == "vp") - vp_drop * (method == "vp") * (state > 0)
        rows.append(
            {
                "run_key": f"{dataset}-{method}-{state}-{n_shot}-s{s}-src{source}",
                "study": "x",
                "dataset": dataset,
                "method": method,
                "network": "ticket" if state else "dense",
                "sparsity": state,
                "n_shot": n_shot,
                "seed": s,
                "source_seed": source,
                "lr": lr,
                "test_accuracy": acc + shift + rng.normal(0, 0.005),
                "test_ece": 0.05 + rng.normal(0, 0.002),
                "test_seed_ece": 0.01 + rng.normal(0, 0.001),
            }
        )
    return pd.DataFrame(rows)


def test_identical_studies_say_so():
    a = study()
    result = compare.compare(a, a.copy())
    assert result["keys"] == ["run_key"]
    assert result["identical"]
    assert (result["metrics"]["changed"] == 0).all()
    assert not result["findings"]["moved"].any()


def test_deltas_runs_only_in_one_and_moved_verdicts():
    a = study(seed=0)
    b = study(seed=1, vp_drop=0.2).iloc[:-5]  # B: sparsity hurts VP; five runs missing
    b = pd.concat([b, b.iloc[[0]].assign(run_key="extra-run")])
    result = compare.compare(a, b)
    assert len(result["only_a"]) == 5 and len(result["only_b"]) == 1
    acc = result["metrics"].set_index("metric").loc["test_accuracy"]
    assert acc["runs"] == len(a) - 5 and acc["changed"] == acc["runs"]
    assert acc["mean delta"] < -0.03  # the ticket VP runs lost 0.2
    moved = result["findings"].set_index("finding")["moved"]
    assert moved["sparsity hurts VP accuracy more than LP accuracy"]
    assert not result["identical"]
    lines = "\n".join(compare.report_lines(result, "A", "B"))
    assert "5 only in A, 1 only in B" in lines and "MOVED" in lines


def test_other_study_name_matches_on_design_and_names_parameters():
    a = study()
    b = study(lr=0.03).assign(run_key=lambda d: d["run_key"] + "-other")
    result = compare.compare(a, b)
    assert "run_key" not in result["keys"] and "source_seed" in result["keys"]
    assert len(result["matched"]) == len(a)
    params = result["parameters"].set_index("parameter")
    assert params.loc["lr", "A -> B"] == [("0.01", "0.03")]


def test_command_line_prints_and_plots(tmp_path, capsys):
    for name, frame in (("one", study()), ("two", study(shift=0.01))):
        (tmp_path / name).mkdir()
        frame.to_csv(tmp_path / name / "results.csv", index=False)
    out = tmp_path / "cmp"
    assert compare.main([str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "metric deltas (B - A)" in text and "test_accuracy" in text
    assert (out / "compare.png").stat().st_size > 10_000
    deltas = pd.read_csv(out / "deltas.csv")
    assert np.allclose(deltas["delta_test_accuracy"], 0.01, atol=0.03)


def test_missing_study_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.csv"):
        compare.load_study(str(tmp_path))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--calibration-metric", "bogus"], "invalid choice: 'bogus'"),
        (["--out", "FILE"], "is a file; give a folder"),
    ],
)
def test_bad_flags_are_one_line_refusals(tmp_path, flags, message):
    import subprocess
    import sys

    (tmp_path / "FILE").write_text("x")
    flags = [str(tmp_path / f) if f == "FILE" else f for f in flags]
    command = [sys.executable, "-m", "lib.compare", "a", "b", *flags]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr, done.stderr
