"""Shim for `python -m lib.sweep`; the code is lib.study.sweep."""

from lib.study.sweep import *  # noqa: F403
from lib.study.sweep import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
