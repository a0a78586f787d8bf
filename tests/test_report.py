"""The report notebook on synthetic records: the whole study and any subset of methods and
networks (LP only, VP only, one network, one dataset), executed in-process cell by cell."""

from __future__ import annotations

import itertools
import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib.core.utils import atomic_write_json, project_root  # noqa: E402
from lib.datasets.registry import GLYPH_CLASSES  # noqa: E402
from lib.metrics.calibration import calibration_metrics, confidence_analysis, reliability_data  # noqa: E402
from lib.study import results  # noqa: E402
from lib.study.findings import CALIBRATION_METRICS  # noqa: E402

pytestmark = pytest.mark.slow
TEST_SIZE = 200
RESAMPLES = 100


def synthetic_record(study: str, rng: np.random.Generator, **params) -> dict:
    """One run's record with real metric code on synthetic logits: VP less accurate and more
    overconfident than LP, both worse at the sparse state."""
    vp, sparse = params["method"] == "vp", params["sparsity"] > 0
    accuracy = 0.9 - 0.4 * vp - (0.05 + 0.15 * vp) * sparse + rng.normal(0, 0.02)
    labels = rng.integers(0, 10, TEST_SIZE)
    right = rng.random(TEST_SIZE) < accuracy
    predicted = np.where(right, labels, (labels + rng.integers(1, 10, TEST_SIZE)) % 10)
    logits = rng.normal(0, 1, (TEST_SIZE, 10))
    logits[np.arange(TEST_SIZE), predicted] += 3 + 2 * vp * sparse
    logits, targets = torch.from_numpy(logits), torch.from_numpy(labels)
    probs = logits.softmax(1)
    own = rng.choice([0.0, 0.1, 0.2, 0.3]) if vp else None
    mapping = {"indices": [[int(s)] for s in rng.permutation(45)[:10]]} if vp else {"indices": None}
    if vp:
        mapping["source_names"] = [[GLYPH_CLASSES[s] for s in row] for row in mapping["indices"]]
    key = "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    return {
        "run_key": key,
        "study": study,
        "params": {"weight_bits": None, "act_bits": None, **params},
        "metrics": {
            "test": calibration_metrics(logits, targets, bootstrap=RESAMPLES),
            "test_ts": calibration_metrics(logits / 1.5, targets, bootstrap=RESAMPLES),
            "val": calibration_metrics(logits[:50], targets[:50]),
            "temperature": 1.5,
            "confidence": confidence_analysis(probs, targets),
            "best_epoch": 1,
            "mapping_own_class_fraction": own,
        },
        "reliability": {
            "raw": reliability_data(probs, targets, bootstrap=RESAMPLES),
            "ts": reliability_data((logits / 1.5).softmax(1), targets, bootstrap=RESAMPLES),
        },
        "mapping": mapping,
        "history": [],
        "sizes": {"train": 100, "val": 50, "test": TEST_SIZE},
    }


@pytest.fixture(scope="module")
def all_records() -> list[dict]:
    rng = np.random.default_rng(0)
    records = []
    for dataset, method, state, n_shot, seed, source in itertools.product(
        ["mnist", "digits"], ["lp", "vp"], [0, 8], [10, -1], [1], [0, 1, 2]
    ):
        network = "ticket" if state else "dense"
        records.append(
            synthetic_record(
                "full",
                rng,
                dataset=dataset,
                method=method,
                network=network,
                sparsity=state,
                n_shot=n_shot,
                seed=seed,
                source_seed=source,
            )
        )
    return records


def write_study(study: str, records: list[dict]) -> None:
    folder = results.study_dir(study) / "records"
    shutil.rmtree(folder, ignore_errors=True)
    for record in records:
        atomic_write_json(folder / f"{record['run_key']}.json", {**record, "study": study})


def run_report(study: str) -> dict:
    """Every code cell of notebooks/report.ipynb, in one namespace, with `study` injected."""
    nb = nbformat.read(project_root() / "notebooks" / "report.ipynb", as_version=4)
    namespace: dict = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if "parameters" in cell.metadata.get("tags", []):
            namespace["study"] = study
            continue
        exec(compile(cell.source, f"report cell {cell.get('id')}", "exec"), namespace)
        plt.close("all")
    return namespace


SUBSETS = {  # (lib.study.findings' own tests cover more subsets, without the figures)
    "lp_only": lambda p: p["method"] == "lp",
    "vp_only": lambda p: p["method"] == "vp",
    "dense_only": lambda p: p["network"] == "dense",
}


def test_report_on_the_whole_study(outputs, all_records):
    from lib.metrics.power import verdict_kind

    write_study("full", all_records)
    ns = run_report("full")
    table = ns["table"].set_index("finding")
    assert ns["chosen"] in ("ece", "debiased_ece", "smooth_ece")
    kinds = table["verdict"].map(verdict_kind)
    assert kinds.isin(["supported", "contradicted", "equivalent", "inconclusive"]).all()
    assert (table["sources"] == 3).all()
    assert (table["low"] <= table["effect"]).all() and (table["effect"] <= table["high"]).all()
    assert table.loc["sparsity hurts VP accuracy more than LP accuracy", "effect"] > 0
    calibration = f"sparse tickets are worse calibrated (VP, {CALIBRATION_METRICS[ns['chosen']]})"
    assert table.loc[calibration, "verdict"] == "supported"  # ECE +0.4: VP overconfident
    assert "verdict" in ns["robustness"] and not ns["quality"].empty
    figures = {p.stem for p in (results.study_dir("full") / "figures").glob("*.png")}
    for name in (
        "accuracy_vs_sparsity",
        "estimator_bias",
        "ece_vs_sparsity",
        "ece_intervals",
        "ece_estimators",
        "reliability_mnist",
        "mapping_own_class",
        "findings",
    ):
        assert name in figures, name


@pytest.mark.parametrize("subset", SUBSETS)
def test_report_on_any_subset(outputs, all_records, subset):
    pick = [r for r in all_records if SUBSETS[subset](r["params"])]
    write_study(subset, pick)
    ns = run_report(subset)
    verdicts = ns["table"].set_index("finding")["verdict"]
    gap = verdicts["sparsity hurts VP accuracy more than LP accuracy"]
    assert gap == "no data"
    if subset == "lp_only":
        assert verdicts.filter(like="(VP,").eq("no data").all()
        assert not verdicts.filter(like="(LP,").eq("no data").any()
    if subset == "vp_only":
        assert verdicts.filter(like="(LP,").eq("no data").all()
        assert not verdicts.filter(like="(VP,").eq("no data").any()
    if subset == "dense_only":
        assert verdicts.eq("no data").all()
    assert (results.study_dir(subset) / "figures" / "findings.png").is_file()
