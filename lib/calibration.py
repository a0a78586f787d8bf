"""Shim for the documented name lib.calibration; the code is lib.metrics.calibration."""

from lib.metrics.calibration import *  # noqa: F403
from lib.metrics.calibration import (  # noqa: F401
    bootstrap_interval,
    classwise_ece,
    debiased_ece,
    ece,
    seed_ece,
    smooth_ece,
)
