"""The command line's two consoles: results on stdout (wide in logs and pipes), progress and errors on stderr."""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import numpy as np
from rich.console import Console

err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 150)


def print_json(obj: object) -> None:
    """One JSON document on stdout (numpy scalars and arrays converted)."""
    print(json.dumps(obj, default=_json_default))


def report(doc: dict, as_json: bool, lines: Sequence[str]) -> None:
    """A command's result: the JSON document (--json), or its lines for people (rich markup) on stdout."""
    if as_json:
        print_json(doc)
        return
    for line in lines:
        out.print(line)


def _json_default(o: object) -> object:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def phase_printer(prefix: str):
    """A progress callback printing each phase as it starts, on stderr."""
    def show(phase: str) -> None:
        err.print(f"[dim]{prefix}: {phase}…[/]")
    return show
