"""Shim for the documented name lib.labelmap; the code is lib.adapt.labelmap."""

from lib.adapt.labelmap import *  # noqa: F403
from lib.adapt.labelmap import LabelMapper, apply_mapping, frequency_counts, greedy_mapping  # noqa: F401
