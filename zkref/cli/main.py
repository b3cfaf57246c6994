"""The `zkref` command line: one module per command, each adding itself with `register(subparsers)`.

Exit codes everywhere: 0 success (satisfied, valid), 1 a check failed (not satisfied, invalid, audit finding),
2 bad input (a one-line error on stderr, never a traceback).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from importlib import metadata

from rich.markup import escape

from zkref.cli import audit, client, demo, digest, mock, prove, report, serve, verify
from zkref.cli.console import err
from zkref.cli.options import Parser

COMMANDS = (demo, mock, prove, verify, report, audit, digest, serve, client)


def version() -> str:
    """The installed package's version (from its metadata), or a note when it runs from an uninstalled tree."""
    try:
        return metadata.version("zkref")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="zkref", description="Verifiable LoRA inference: prove that a LoRA adapter's output was "
                                              "computed with the committed adapter (EZKL Halo2/KZG proofs, or "
                                              "zkref's mock check), serve and verify such calls. Exit codes: 0 ok, "
                                              "1 a check failed, 2 bad input.",
                    epilog="`zkref COMMAND --help` for each command's options; README.md for the whole picture.")
    parser.add_argument("--version", action="version", version=f"zkref {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # its own deprecations
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:                      # --help, --version (0) or a bad option (2, already said)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        _fail(args.command, str(exc))
    except RecursionError:
        _fail(args.command, "an input is nested too deeply to read")
    except MemoryError:
        _fail(args.command, "out of memory: the input is larger than this machine can hold")
    return 2


def _fail(command: str, message: str) -> None:
    """The one line a bad input gets on stderr."""
    err.print(f"[red]zkref {command}: {escape(message)}[/]", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    sys.exit(main())
