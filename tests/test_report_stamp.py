"""The report is re-rendered when its inputs change (records or the code drawing them), and
only then: a warm `make study` changes no file."""

import json

from lib.study import results, sweep


def test_report_reruns_when_records_or_code_change(outputs, tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "report.ipynb").write_text("{}")
    monkeypatch.setattr(sweep, "NOTEBOOKS", notebooks)
    calls = []

    def execute(name, output, parameters):
        calls.append(name)
        output.write_text("{}")

    monkeypatch.setattr(sweep, "execute_notebook", execute)
    monkeypatch.setattr(sweep, "export_html", lambda nb: nb.with_suffix(".html").write_text(""))
    records = results.study_dir("s") / "records"
    records.mkdir(parents=True)
    (records / "a.json").write_text(json.dumps({"run_key": "a"}))

    sweep.report("s")
    sweep.report("s")
    assert len(calls) == 1  # unchanged: kept
    (notebooks / "report.ipynb").write_text('{"changed": 1}')
    sweep.report("s")
    assert len(calls) == 2  # the report's code changed
    (records / "b.json").write_text(json.dumps({"run_key": "b"}))
    sweep.report("s")
    assert len(calls) == 3  # a new record
