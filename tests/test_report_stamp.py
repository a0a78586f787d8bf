"""The report is re-rendered when its inputs change (records or the code drawing them), and
only then: a warm `make study` changes no file."""

import json

from lib.study import results, stages


def test_report_reruns_when_records_or_code_change(outputs, tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "report.ipynb").write_text("{}")
    monkeypatch.setattr(stages, "NOTEBOOKS", notebooks)
    calls = []

    def execute(name, output, parameters):
        calls.append(name)
        output.write_text("{}")

    monkeypatch.setattr(stages, "execute_notebook", execute)
    monkeypatch.setattr(stages, "export_html", lambda nb: nb.with_suffix(".html").write_text(""))
    records = results.study_dir("s") / "records"
    records.mkdir(parents=True)
    (records / "a.json").write_text(json.dumps({"run_key": "a"}))

    stages.report("s")
    stages.report("s")
    assert len(calls) == 1  # unchanged: kept
    (notebooks / "report.ipynb").write_text('{"changed": 1}')
    stages.report("s")
    assert len(calls) == 2  # the report's code changed
    (records / "b.json").write_text(json.dumps({"run_key": "b"}))
    stages.report("s")
    assert len(calls) == 3  # a new record
