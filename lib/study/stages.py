"""The stages of a sweep besides the runs: pretraining the source model and tickets, and the
report over all records; each re-runs only when its inputs changed (a Stamp).

    from lib.study.stages import pretrain, report
    pretrain(params); report("mini")
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lib.core.utils import atomic_write_json, atomic_write_text, project_root
from lib.study import console, results
from lib.study.executions import NOTEBOOKS, NotebookFailed, execute_notebook


class Stamp:
    """Remembers the inputs a stage last ran with, so re-running it unchanged does nothing;
    `outputs`, the files the stage makes, must all still be there (one deleted: it runs)."""

    def __init__(self, study: str, name: str, inputs: Any, outputs: Sequence[Path] = ()) -> None:
        self.path = results.study_dir(study) / ".stamps" / f"{name}.json"
        self.digest = hashlib.sha1(
            json.dumps(inputs, sort_keys=True, default=str).encode()
        ).hexdigest()
        self.outputs = list(outputs)

    @property
    def fresh(self) -> bool:
        try:
            same = json.loads(self.path.read_text())["digest"] == self.digest
        except (OSError, ValueError, KeyError, TypeError):  # none, or not a stamp: run again
            return False
        return same and all(p.is_file() for p in self.outputs)

    def write(self) -> None:
        atomic_write_json(self.path, {"digest": self.digest, "outputs": self.outputs})


def pretrain_stamp(params: dict[str, Any]) -> Stamp:
    """The pretrain stage's stamp: its settings, and every ticket file it makes."""
    settings = params.get("pretrain")
    return Stamp(params["study"], "pretrain", settings, pretrain_outputs(settings or {}))


def pretrain_outputs(settings: dict[str, Any]) -> list[Path]:
    """The ticket files (checkpoint and mask) of every level the pretrain stage trains."""
    if not settings:
        return []
    from lib.models.backbone import ticket_paths
    from lib.models.pretrain import SourceConfig

    cfg = SourceConfig(**settings)
    levels = [(k, "dyn4") for k in range(cfg.max_state + 1)]
    levels += [(k, "random") for k in cfg.random_states]
    return [p for k, kind in levels for p in ticket_paths(cfg.output_path, cfg.arch, k, kind)]


def pretrain(params: dict[str, Any]) -> None:
    """Source model and tickets (the notebook caches everything it trains)."""
    study, settings = params["study"], params.get("pretrain")
    stamp = pretrain_stamp(params)
    if not settings or stamp.fresh:
        return
    levels = pretrain_levels(settings)
    print(
        f"[sweep] pretraining the source model and {levels} IMP levels ({study}; "
        f"estimated {console.duration(console.pretrain_prior_seconds(settings))})",
        flush=True,
    )
    start = time.perf_counter()
    output = results.study_dir(study) / "pretrain.ipynb"
    with console.LevelWatcher(pretrain_folder(settings), levels):
        try:
            execute_notebook("pretrain_source.ipynb", output, pretrain_parameters(settings))
        except Exception as error:  # one line; the levels it finished are kept
            raise NotebookFailed(f"the pretrain stage of {study}", error, output) from None
    print(f"[sweep] pretraining done in {console.duration(time.perf_counter() - start)}")
    stamp.write()


def pretrain_levels(settings: dict[str, Any]) -> int:
    """IMP levels the pretrain stage trains: states 0..max_state and the random controls."""
    from lib.models.pretrain import SourceConfig

    cfg = SourceConfig(**settings)
    return cfg.max_state + 1 + len(cfg.random_states)


def pretrain_parameters(settings: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of notebooks/pretrain_source.ipynb: the settings, the rest SourceConfig's
    defaults (the shipped recipe), never the notebook's own quick defaults."""
    from dataclasses import asdict

    from lib.models.pretrain import SourceConfig

    params = asdict(SourceConfig(**settings))
    params["random_states"] = list(params["random_states"])  # papermill writes a list
    return params


def pretrain_folder(settings: dict[str, Any]) -> Path:
    """Where the pretrain notebook writes its checkpoints and per-level reports."""
    from lib.models.pretrain import SourceConfig

    return SourceConfig(**settings).output_path


def report(study: str) -> Path | None:
    """Execute the report notebook over all records and export it to HTML (its path; None
    without records). Unchanged records and code: the existing report is kept."""
    records = sorted((results.study_dir(study) / "records").glob("*.json"))
    output = results.study_dir(study) / "report.ipynb"
    # Re-rendered when a record or the code drawing it changed (the notebook, lib/).
    code = [NOTEBOOKS / "report.ipynb", *sorted((project_root() / "lib").rglob("*.py"))]
    stamp = Stamp(
        study,
        "report",
        {
            "records": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in records],
            "code": hashlib.sha1(b"".join(f.read_bytes() for f in code)).hexdigest(),
        },
    )
    if not records:
        return None
    if stamp.fresh and output.with_suffix(".html").is_file():
        return output.with_suffix(".html")
    print(f"[sweep] report over {len(records)} records", flush=True)
    start = time.perf_counter()
    try:
        execute_notebook("report.ipynb", output, {"study": study})
        html = export_html(output)
    except Exception as error:
        # The previous report no longer matches the records: never leave it to read as current.
        stale = [p for p in (output, output.with_suffix(".html")) if p.is_file()]
        for path in stale:
            path.unlink()
        note = f"; the previous {' and '.join(p.name for p in stale)} removed (not current)"
        note = note if stale else ""
        raise NotebookFailed(f"the report of {study}", error, output, note) from None
    stamp.write()
    print(f"[sweep] report written in {console.duration(time.perf_counter() - start)}: {html}")
    return html


def export_html(notebook: Path) -> Path:
    """The executed notebook as a document: outputs only, no code cells or prompts."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True)
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    return atomic_write_text(notebook.with_suffix(".html"), body)
