"""Shim for `python -m lib.compare`; the code is lib.study.compare."""

from lib.study.compare import *  # noqa: F403
from lib.study.compare import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
