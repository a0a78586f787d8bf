"""Shim for `python -m lib.fake_data`; the code is lib.datasets.fake_data."""

from lib.datasets.fake_data import *  # noqa: F403
from lib.datasets.fake_data import cli, main, write_fake  # noqa: F401

if __name__ == "__main__":
    cli()
