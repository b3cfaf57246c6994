"""`zkref prove`: prove one LoRA call with a backend and write a proof bundle (specs/proof-bundle.md)."""
from __future__ import annotations

import argparse
import platform
import time

from zkref.cli import inputs
from zkref.cli.console import out, phase_printer, print_json


def cmd_prove(args: argparse.Namespace) -> int:
    from backends import get_backend
    from backends.bundle import write_bundle
    from zkref.pipeline import compare

    options = {"srs": args.srs} if args.srs and args.backend == "ezkl" else {}
    if args.srs and args.backend != "ezkl":
        raise ValueError("--srs applies to the ezkl backend only")
    backend = get_backend(args.backend, **options)
    prepared, info = inputs.prepared_from_args(args)
    support = backend.supports(prepared.statement)
    if not support:
        raise ValueError(f"backend {backend.name} cannot prove this statement: {support.reason}")
    progress = None if args.quiet else phase_printer(f"{backend.name} {prepared.statement.id[:12]}")
    t0 = time.perf_counter()
    anchor = backend.anchor(prepared.statement, prepared.witness)
    result = backend.prove(prepared.statement, prepared.witness, progress=progress)
    seconds = time.perf_counter() - t0
    check = compare(prepared, result.public.y_q)
    meta = {"inputs": info, "python": platform.python_version(), "seconds_total": round(seconds, 3),
            "check": {"max_abs_error": check.max_abs_error, "error_bound": check.error_bound,
                      "within_bound": check.within_bound}}
    path = write_bundle(args.out, prepared.statement, result, anchor, meta)
    doc = {"bundle": str(path), "backend": backend.name, "zero_knowledge": backend.zero_knowledge,
           "statement_id": prepared.statement.id, "statement": prepared.statement.describe(),
           "timings": result.timings, "proof_bytes": len(result.proof.data), "anchor": anchor.to_json()}
    if args.json:
        print_json(doc)
    else:
        out.print(f"[bold]{prepared.statement.describe()}[/]")
        kind = "zero-knowledge proof" if backend.zero_knowledge else "MOCK check (not zero-knowledge)"
        out.print(f"{backend.name}: {kind} written to {path} ({len(result.proof.data):,} B proof, {seconds:.2f} s)")
        out.print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
        out.print(f"publish to verifiers: {anchor.to_json()}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("prove", help="prove a LoRA call with a backend and write a proof bundle")
    inputs.add_arguments(p)
    p.add_argument("--backend", choices=["zkref", "ezkl"], default="ezkl")
    p.add_argument("--srs", default=None, help="a real KZG SRS file (ezkl); without it a dev SRS is generated")
    p.add_argument("--out", required=True, help="bundle directory to create (must not exist or be empty)")
    p.add_argument("--quiet", action="store_true", help="no per-phase progress on stderr")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prove)
