"""The `zkref` command line: one module per command, each adding itself with `register(subparsers)`.

Exit codes everywhere: 0 success (satisfied, valid), 1 a check failed (not satisfied, invalid, audit finding),
2 bad input (a one-line error on stderr, never a traceback).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from zkref.cli import audit, client, demo, digest, mock, prove, report, serve, verify
from zkref.cli.console import err

COMMANDS = (demo, mock, prove, verify, report, audit, digest, serve, client)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zkref", description="Verifiable LoRA inference: the zkref reference and its backends.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")  # its own deprecations
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        err.print(f"[red]zkref {args.command}: {exc}[/]", soft_wrap=True)
        return 2
    except RecursionError:
        err.print(f"[red]zkref {args.command}: an input is nested too deeply to read[/]", soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
