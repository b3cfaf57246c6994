"""The command line's two consoles: results on stdout (wide in logs and pipes), progress and errors on stderr."""
from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from rich.console import Console
from rich.markup import escape

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


def phase_printer(prefix: str) -> Callable[[str], None]:
    """A progress callback printing each phase as it starts, on stderr."""
    def show(phase: str) -> None:
        err.print(f"[dim]{escape(prefix)}: {escape(phase)}…[/]", highlight=False, soft_wrap=True)
    return show


@contextlib.contextmanager
def phases(prefix: str, *, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """Progress through long set-up work, as a callback taking each phase's name as it starts: a spinner on stderr
    naming the phase, with the time elapsed, removed when the work is done (a line per phase when stderr is not a
    terminal: logs keep them); nothing at all when `quiet`."""
    if quiet:
        yield lambda phase: None
        return
    if not err.is_terminal:
        yield phase_printer(prefix)
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("[dim]{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task(f"{escape(prefix)}…", total=None)
        yield lambda phase: bar.update(task, description=f"{escape(prefix)}: {escape(phase)}…")


def quiet_model_loading() -> None:
    """No transformers progress bars or advisory warnings on stderr: the command's own lines stay readable. Called by
    every command that loads a model."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
