"""Shim for the documented name lib.backbone; the code is lib.models.backbone."""

from lib.models.backbone import *  # noqa: F403
from lib.models.backbone import create_backbone, load_lottery_ticket, sparsity  # noqa: F401
