"""What every command's options share: the parser class (a bad option is one line on stderr and exit 2, help shows
defaults) and `type=` checkers for integers and numbers, so a value out of range is refused before any work."""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

from zkref.primitives.ranges import check_int

MAX_PORT = 65535
MAX_SEED = (1 << 63) - 1
MAX_WORKERS = 256
"""Worker processes or threads a command may start; more than any machine this runs on has cores."""


class HelpFormatter(argparse.HelpFormatter):
    """Help with each option's default appended, unless it has none worth showing or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if not action.option_strings or default is None or default is False or default is argparse.SUPPRESS \
                or "default" in text:
            return text
        shown = ",".join(default) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line — `zkref CMD: what is wrong (zkref CMD --help)` — and exit 2."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def integer(lo: int, hi: int, what: str = "the value") -> Callable[[str], int]:
    """An option's `type=`: an integer in lo..hi (ranges.check_int's rule), else argparse's one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer in {lo}..{hi}, got {text!r}") from None
        try:
            return check_int(what, value, lo, hi)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = "integer"
    return parse


def positive(what: str = "the value", *, hi: float = math.inf, allow_zero: bool = False) -> Callable[[str], float]:
    """An option's `type=`: a finite number > 0 (≥ 0 with `allow_zero`; and ≤ hi), else argparse's one-line error."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (0 <= value if allow_zero else 0 < value) and value <= hi):
            bound = "" if hi == math.inf else f" and at most {hi:g}"
            least = "at least 0" if allow_zero else "greater than 0"
            raise argparse.ArgumentTypeError(f"{what} must be a number {least}{bound}, got {text!r}")
        return value
    parse.__name__ = "number"
    return parse


PORT = integer(0, MAX_PORT)
SEED = integer(0, MAX_SEED)
WORKERS = integer(1, MAX_WORKERS)
