"""Shim for `python -m lib.transfer`; the code is lib.study.seed_cli."""

from lib.study.seed_cli import *  # noqa: F403
from lib.study.seed_cli import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
