"""Metrics on predictions: calibration (ECE and its estimators, temperature scaling),
bootstrap resampling, and the power and verdicts of paired comparisons."""
