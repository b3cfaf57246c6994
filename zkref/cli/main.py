"""The `zkref` command line: demo, mock, audit, report, digest."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from rich.console import Console

err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 150)  # wide tables stay readable in logs and pipes

SUBCOMMAND_MODULES: list[str] = ["zkref.cli.lora"]
"""Modules exposing `register(subparsers)` to add their own subcommands (each sets `func` via set_defaults)."""


def _examples() -> dict[str, Callable[[], object]]:
    from zkref.examples import plonkish as ex
    from zkref.examples.commitment import CommitmentCircuit

    return {
        "fibonacci": lambda: ex.FibonacciCircuit(16),
        "range-sum": lambda: ex.RangeSumCircuit(),
        "squares": lambda: ex.SquaresCircuit(),
        "squares-broken": lambda: ex.SquaresCircuit(broken=True),
        "poseidon": lambda: CommitmentCircuit(values=(3, -1, 4, 1, -5)),
        "poseidon-packed": lambda: CommitmentCircuit(values=tuple(range(-8, 8)) * 4, bits=4),
        "lora": lambda: _small_lora("table"),
        "lora-gate": lambda: _small_lora("gate"),
    }


def _small_lora(strategy: str):
    """A seeded 12→10, r=3, 2-token LoRA circuit: small enough to audit every cell in seconds."""
    import numpy as np

    from zkref.lora.circuit import LoRACircuit

    rng = np.random.default_rng(0)
    return LoRACircuit(12, 10, 3, 2, 4, strategy, None, rng.integers(-8, 8, (3, 12)), rng.integers(-8, 8, (10, 3)),
                       rng.integers(-128, 128, (2, 12)))


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit a named example circuit (or a LoRA circuit) for under-constrained cells."""
    from zkref.plonkish.audit import audit

    circuit, instances = _named_circuit(args)
    from rich.progress import Progress

    with Progress(console=err, transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("perturbing cells", total=None)
        report = audit(circuit, instances, sample=args.sample, seed=args.seed,
                       progress=lambda i, n: bar.update(task, completed=i, total=n))
    if args.json:
        print(json.dumps({"circuit": report.circuit, "cells_total": report.cells_total,
                          "cells_checked": report.cells_checked, "sampled": report.sampled, "seed": report.seed,
                          "unconstrained": [vars(c) | {"value": str(c.value), "to": str(c.to)}
                                            for c in report.unconstrained]}))
    else:
        out.print(report.render())
    return 0 if report.ok else 1


def _named_circuit(args: argparse.Namespace):
    table = _examples()
    if args.circuit not in table:
        raise SystemExit(f"zkref: unknown circuit {args.circuit!r}; choose one of {', '.join(sorted(table))}")
    circuit = table[args.circuit]()
    return circuit, circuit.public_inputs()


def cmd_demo(args: argparse.Namespace) -> int:
    """End-to-end demo on a tiny GPT-2 built locally (zkref.demo)."""
    from zkref.cli.demo import run_demo

    result = run_demo(args.model_dir, tokens=args.tokens, rank=args.rank, lanes=args.lanes, seed=args.seed,
                      console=out)
    return 0 if result.ok else 1


def cmd_digest(args: argparse.Namespace) -> int:
    """Poseidon digest of a local transformers model's safetensors weights (cached beside the model)."""
    from zkref.models.digest import model_digest

    result = model_digest(args.model_dir, progress=not args.quiet, use_cache=not args.no_cache, workers=args.workers)
    if args.json:
        print(json.dumps(result.to_json() | {"from_cache": result.from_cache}))
    else:
        source = " (from cache)" if result.from_cache else ""
        out.print(f"base-model digest {result.hex}{source}")
        out.print(f"  {result.format_version}: {result.n_tensors} tensors, {result.n_parameters:,} parameters, "
                  f"{result.n_bytes:,} bytes")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zkref", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="end-to-end demo on a tiny locally built model")
    p.add_argument("--model-dir", default=None, help="keep the tiny model here (default: a temporary directory)")
    p.add_argument("--tokens", type=int, default=4)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--lanes", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("audit", help="look for under-constrained advice cells by perturbing them one at a time")
    p.add_argument("--circuit", default="range-sum", help="example circuit name")
    p.add_argument("--sample", type=int, default=None, help="check only this many random cells")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("digest", help="Poseidon digest of a local model's safetensors weights (specs/commitments.md)")
    p.add_argument("model_dir", help="directory with *.safetensors files (e.g. from save_pretrained)")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write zkref-digest.json")
    p.add_argument("--workers", type=int, default=None, help="hashing processes (default: one per CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_digest)

    import importlib

    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        err.print(f"[red]zkref {args.command}: {exc}[/]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
