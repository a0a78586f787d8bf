"""Shim for `python -m lib.tickets`; the code is lib.study.tickets."""

from lib.study.tickets import *  # noqa: F403
from lib.study.tickets import cli, main  # noqa: F401

if __name__ == "__main__":
    cli()
