"""Command-line habits shared by every entry point: defaults shown in --help, both spellings
of a multi-word flag (`--batch_size` and `--batch-size`), unknown flags refused.

    from lib.core.cli import HelpFormatter, accept_both_spellings
    p = argparse.ArgumentParser(formatter_class=HelpFormatter); ...; accept_both_spellings(p)

Import nothing heavy here: `--help` of every command must return within two seconds.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from typing import NoReturn


def _has_default(action: argparse.Action) -> bool:
    """A default worth printing: not None, False, "" or suppressed (0 is one)."""
    default = action.default
    return not (default is None or default is False or default in (argparse.SUPPRESS, ""))


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (it holds example commands), and "(default: X)" after
    every option whose help does not already name its default (an option without help, too)."""

    def add_argument(self, action: argparse.Action) -> None:
        if action.help is None and action.option_strings and _has_default(action):
            action = copy.copy(action)  # argparse prints no line for help=None
            action.help = "(default: %(default)s)"
        super().add_argument(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text.lower()
            or not _has_default(action)
            or not action.option_strings
            or isinstance(action, argparse._HelpAction)
        ):
            return text
        return f"{text} (default: %(default)s)"


def _other_spelling(flag: str) -> str:
    body = flag[2:]
    return "--" + (body.replace("_", "-") if "_" in body else body.replace("-", "_"))


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register `--a-b` for every `--a_b` (and the other way round), same action: users of
    the paper's scripts typed one spelling, users of this project's docs the other."""
    for action in list(parser._actions):
        for flag in list(action.option_strings):
            if not flag.startswith("--") or not any(c in flag[2:] for c in "-_"):
                continue
            other = _other_spelling(flag)
            if other not in parser._option_string_actions:
                action.option_strings.append(other)
                parser._option_string_actions[other] = action
    return parser


def run_main(
    main: Callable[[], int], prog: str, errors: tuple[type[Exception], ...] = ()
) -> NoReturn:
    """Exit with main()'s status; an error of `errors` (one a user causes) prints one line,
    no traceback, and exits 2."""
    try:
        sys.exit(main())
    except errors as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
