"""What a sweep says on the terminal: one line per finished notebook, an ETA from measured
rates, progress of pretraining per IMP level, and a final line.

    from lib.study.console import Estimate, notebook_line
    eta = Estimate(executions, workers=2)          # prior cost model; measured rates replace it
    eta.finished(execution, seconds)               # after each notebook
    print(notebook_line(execution, outcome, eta))  # "[  3/57] mnist-dense-vp (6 runs) ..."

Nothing here imports torch: the sweep's argument errors and --help answer within a second.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lib.study.config import ExperimentConfig
    from lib.study.executions import Execution, Outcome

# Prior cost model (seconds on one core of a 2-core AVX-512 CPU, fitted to the mini study's
# cold run on an AMD EPYC VM, 2026-12-02: 16 notebooks in 7 min 38 s with two workers; a
# 2-core AVX2 CPU takes ~2.4x longer); measured rates replace it as notebooks finish.
NOTEBOOK_S = 8.0  # kernel start, imports, data and source model
VP_S_PER_IMAGE_EPOCH = 0.0017  # prompt forward + backward, ILM pass, validation
LP_S_PER_RUN = 0.4  # head on cached features, evaluation, record
LP_S_PER_FEATURE_IMAGE = 0.0008  # the frozen backbone once over pool and test
SOURCE_S_PER_IMAGE_EPOCH = 0.0015  # pretraining: forward + backward of the source model


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def _train_images(cfg: ExperimentConfig) -> int:
    """Training images of one run, roughly (n-shot x classes, capped as the config says)."""
    from lib.datasets.registry import get_spec

    try:
        classes = get_spec(cfg.dataset).num_classes
    except ValueError:
        classes = 10
    pool = cfg.train_pool if cfg.train_pool > 0 else 50_000
    images = pool if cfg.n_shot == -1 else classes * cfg.n_shot
    return min(images, cfg.max_train) if cfg.max_train > 0 else images


def expected_epochs(cfg: ExperimentConfig) -> float:
    """Early stopping ends VP runs around half their budget (mini study: 22 of 40)."""
    if not cfg.patience:
        return cfg.epochs
    return min(cfg.epochs, max(3 * cfg.patience, cfg.epochs / 2))


def prior_seconds(configs: Iterable[ExperimentConfig]) -> float:
    """Seconds one notebook executing `configs` takes on one core, by the prior model."""
    configs = list(configs)
    total = NOTEBOOK_S
    for cfg in configs:
        images = _train_images(cfg)
        if cfg.method == "vp":
            total += VP_S_PER_IMAGE_EPOCH * expected_epochs(cfg) * images * 1.3  # + validation
        else:
            total += LP_S_PER_RUN
    if configs and configs[0].method == "lp":
        pool = configs[0].train_pool if configs[0].train_pool > 0 else 50_000
        test = configs[0].max_test if configs[0].max_test > 0 else 10_000
        total += LP_S_PER_FEATURE_IMAGE * (pool + test)
    return total


def pretrain_prior_seconds(settings: dict[str, Any] | None) -> float:
    """Seconds of the pretrain stage by the prior model (0 without one)."""
    if not settings:
        return 0.0
    levels = settings.get("max_state", 8) + 1 + len(settings.get("random_states", ()))
    images = settings.get("num_classes", 45) * settings.get("per_class", 400)
    return SOURCE_S_PER_IMAGE_EPOCH * images * settings.get("epochs", 6) * levels


class Estimate:
    """Time left of a sweep: each notebook's prior cost, scaled per method by the ratio of
    measured to prior seconds of the notebooks finished so far, over `workers`."""

    def __init__(self, executions: list[Execution], workers: int = 1) -> None:
        self.workers = max(1, workers)
        self.prior = {e.key: prior_seconds(e.configs) for e in executions}
        self.method = {e.key: e.params.get("method", "vp") for e in executions}
        self.left = {e.key for e in executions if not e.done}
        self.measured: dict[str, list[tuple[float, float]]] = {}  # method -> (prior, actual)
        self.start = time.monotonic()

    def ratio(self, method: str) -> float:
        """Measured / prior seconds of this method's finished notebooks (1 before the first:
        VP and LP notebooks differ too much for one to predict the other)."""
        pairs = self.measured.get(method)
        return sum(a for _, a in pairs) / sum(p for p, _ in pairs) if pairs else 1.0

    def finished(self, key: str, seconds: float | None) -> None:
        """Notebook `key` ended; `seconds` is its wall time (None: skipped, not measured)."""
        self.left.discard(key)
        if seconds is not None and seconds > 0 and key in self.prior:
            self.measured.setdefault(self.method[key], []).append((self.prior[key], seconds))

    @property
    def measured_any(self) -> bool:
        return bool(self.measured)

    def seconds_left(self) -> float:
        return sum(self.prior[k] * self.ratio(self.method[k]) for k in self.left) / self.workers

    def total_prior(self) -> float:
        return sum(self.prior[k] for k in self.left) / self.workers


def key_metric(execution: Execution) -> str:
    """Mean test accuracy and ECE of the execution's records ('' when none)."""
    from lib.study import results

    accs, eces = [], []
    for cfg in execution.configs:
        path = results.record_path(cfg.study, cfg.run_key)
        try:
            test = json.loads(path.read_text())["metrics"]["test"]
        except (OSError, ValueError, KeyError):
            continue
        accs.append(test["accuracy"])
        eces.append(test.get("ece", float("nan")))
    if not accs:
        return ""
    return f"acc {sum(accs) / len(accs):.3f}, ECE {sum(eces) / len(eces):.3f}"


def notebook_line(
    execution: Execution, outcome: Outcome, index: int, total: int, estimate: Estimate
) -> str:
    """'[ 3/57] mnist-ticket-vp-1a2b3c4d  6 runs  1 min 02 s  acc 0.512, ECE 0.031  ETA 14 min'."""
    width = len(str(total))
    head = f"[{index:>{width}}/{total}] {outcome.status:<7} {execution.key}"
    runs = f"{len(execution.configs)} run{'s' if len(execution.configs) != 1 else ''}"
    parts = [head, runs]
    if outcome.status == "done":
        parts += [duration(outcome.seconds), key_metric(execution)]
    elif outcome.status == "failed":
        parts += [duration(outcome.seconds), outcome.error]
    if estimate.left:
        parts.append(f"ETA {duration(estimate.seconds_left())}")
    return "  ".join(p for p in parts if p)


def final_line(outcomes: list[Outcome], seconds: float, report: Path | None) -> str:
    """'[sweep] finished in 21 min 40 s: 57 notebooks (55 done, 2 skipped, 0 failed); ...'."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    text = (
        f"[sweep] finished in {duration(seconds)}: {len(outcomes)} notebooks "
        f"({counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
    )
    cancelled = sum(o.status == "cancelled" for o in outcomes)  # by Slurm (scancel)
    text += f", {cancelled} cancelled)" if cancelled else ")"
    return text + (f"; report {report}" if report else "; no report")


def shots_label(n_shot: int) -> str:
    """'full' for all training images (-1), else '10-shot'."""
    return "full" if n_shot == -1 else f"{n_shot}-shot"


def shots_order(n_shots: Iterable[int]) -> list[int]:
    """The distinct n-shots, fewest first and full data (-1) last."""
    return sorted(set(n_shots), key=lambda n: math.inf if n == -1 else n)


def run_line(record: dict[str, Any]) -> str:
    """One finished run: 'mnist 10-shot seed 1: acc 0.512, ECE 0.031, 23 epochs, 41 s'."""
    p, m = record["params"], record["metrics"]
    epochs = m.get("epochs_trained")
    stopped = " (early stop)" if m.get("stopped_early") else ""
    seconds = sum(v for k, v in record.get("timings", {}).items() if k in ("train_s", "eval_s"))
    return (
        f"{p['dataset']} {shots_label(p['n_shot'])} seed {p['seed']}"
        f"{' source ' + str(p['source_seed']) if 'source_seed' in p else ''}: "
        f"acc {m['test']['accuracy']:.3f}, ECE {m['test']['ece']:.3f}, "
        f"{epochs} epochs{stopped}, {duration(seconds)}"
    )


# ---------------------------------------------------------------- pretraining progress


def _level(report: dict[str, Any]) -> str:
    kind = "ticket" if report.get("kind") == "dyn4" else "random"
    return f"{kind} state {report.get('state')}"


class LevelWatcher:
    """While pretraining runs in a kernel, print one line per IMP level it finishes (its
    `*_report.json` appears in `folder`): state, sparsity, source accuracy, seconds, ETA."""

    def __init__(
        self,
        folder: Path,
        levels: int,
        out: Callable[[str], None] = print,
        interval: float = 2.0,
        prefix: str = "[pretrain]",
    ) -> None:
        self.folder, self.levels, self.out, self.interval = Path(folder), levels, out, interval
        self.prefix = prefix
        self.seen = {p.name for p in self._reports()}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.start = time.monotonic()
        self.new = 0

    def _reports(self) -> list[Path]:
        return sorted(self.folder.glob("*_report.json")) if self.folder.is_dir() else []

    def poll(self) -> None:
        for path in self._reports():
            if path.name in self.seen:
                continue
            try:
                report = json.loads(path.read_text())
            except (OSError, ValueError):  # being written: next poll
                continue
            self.seen.add(path.name)
            self.new += 1
            done = len(self.seen)
            elapsed = time.monotonic() - self.start
            rate = elapsed / self.new
            left = max(0, self.levels - done)
            line = (
                f"{self.prefix} level {done}/{self.levels}: {_level(report)}, "
                f"{100 * report.get('sparsity', 0):.0f}% sparse, source accuracy "
                f"{100 * report.get('test_accuracy', float('nan')):.1f}%, "
                f"{duration(report.get('train_seconds', 0))}"
            )
            self.out(line + (f"; ETA {duration(rate * left)}" if left else ""))

    def _watch(self) -> None:
        while not self.stop.wait(self.interval):
            self.poll()

    def __enter__(self) -> LevelWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.poll()
