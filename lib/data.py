"""Shim for the documented name lib.data; the code is lib.datasets.registry."""

from lib.datasets.registry import *  # noqa: F403
from lib.datasets.registry import DATASETS, get_dataset  # noqa: F401
