"""`zkref verify DIR`: check a proof bundle; exit 0 valid, 1 invalid, 2 bad input."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from zkref.cli.console import err, out, print_json


def cmd_verify(args: argparse.Namespace) -> int:
    from backends import get_backend
    from backends.base import AdapterAnchor
    from backends.bundle import read_bundle

    bundle = read_bundle(args.bundle)
    options = {"srs": args.srs} if args.srs and bundle.proof.backend == "ezkl" else {}
    backend = get_backend(bundle.proof.backend, **options)
    pinned = None
    if args.anchor:
        path = Path(args.anchor)
        if not path.is_file() or path.stat().st_size > 1 << 16:
            raise ValueError(f"{path}: not a readable anchor file")
        try:
            pinned = AdapterAnchor.from_json(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON ({exc})") from None
    elif args.vk_hash:
        pinned = AdapterAnchor(backend=bundle.proof.backend, statement_id=bundle.statement.id, vk_hash=args.vk_hash)
    if args.statement_id and args.statement_id != bundle.statement.id:
        verdict_ok, reason = False, f"bundle proves statement {bundle.statement.id}, not the expected {args.statement_id}"
    else:
        verdict = backend.verify(bundle.statement, bundle.public, bundle.proof, anchor=pinned)
        verdict_ok, reason = bool(verdict), verdict.reason
    if pinned is None and verdict_ok:
        err.print("[yellow]warning: no --anchor or --vk-hash given: the adapter is checked only against the bundle's "
                  "own verifying key; pin the contributor's published anchor to bind it[/]")
    doc = {"valid": verdict_ok, "reason": reason, "backend": bundle.proof.backend,
           "zero_knowledge": bundle.proof.zero_knowledge, "statement_id": bundle.statement.id,
           "statement": bundle.statement.describe(), "anchor_pinned": pinned is not None}
    if args.json:
        print_json(doc)
    else:
        out.print(f"[bold]{bundle.statement.describe()}[/]")
        out.print(("[green]valid[/]" if verdict_ok else "[red]INVALID[/]") + f": {reason}")
    return 0 if verdict_ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("verify", help="verify a proof bundle (exit 0 valid, 1 invalid, 2 bad input)")
    p.add_argument("bundle", help="bundle directory written by `zkref prove`")
    p.add_argument("--anchor", default=None, help="the contributor's published adapter anchor (JSON file) to pin")
    p.add_argument("--vk-hash", default=None, help="pin the verifying key's SHA-256 (a fixed adapter)")
    p.add_argument("--statement-id", default=None, help="require the bundle to prove this statement")
    p.add_argument("--srs", default=None, help="the KZG SRS file the proof was made with (ezkl)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)
