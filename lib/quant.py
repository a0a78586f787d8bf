"""Shim for the documented name lib.quant; the code is lib.models.quant."""

from lib.models.quant import *  # noqa: F403
from lib.models.quant import quantize_backbone  # noqa: F401
