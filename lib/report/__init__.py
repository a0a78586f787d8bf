"""The report: figures by report section (run, accuracy, calibration, mapping,
findings_figure, source), their shared helpers (figures), every figure by name for the
notebooks (plots), and the report's text and tables (summary)."""
