"""`zkref audit`: perturb advice cells of a named circuit one at a time and report those no constraint catches."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

from zkref.cli.console import err, out, print_json
from zkref.cli.options import SEED, integer

MAX_SAMPLE = 1 << 30


def _small_lora(strategy: str):
    """A seeded 12→10, r=3, 2-token LoRA circuit (private adapter): small enough to audit every cell in seconds."""
    from zkref.lora.circuit import LoRACircuit, LoRALayout
    from zkref.lora.statement import LoRAStatement, LoRAWitness

    rng = np.random.default_rng(0)
    w = LoRAWitness(A_q=rng.integers(-8, 8, (3, 12)), B_q=rng.integers(-8, 8, (10, 3)),
                    x_q=rng.integers(-128, 128, (2, 12)))
    statement = LoRAStatement(shape=w.shape, shift=8, adapter_binding="unbound")
    return LoRACircuit(statement=statement, witness=w, layout=LoRALayout(lanes=4, products=strategy))


def circuits() -> dict[str, Callable[[], object]]:
    """The circuits `zkref audit --circuit NAME` knows."""
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


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit a named example circuit (or a LoRA circuit) for under-constrained cells."""
    from rich.progress import Progress

    from zkref.plonkish.audit import audit

    table = circuits()
    if args.circuit not in table:
        raise ValueError(f"unknown circuit {args.circuit!r}; choose one of {', '.join(sorted(table))}")
    circuit = table[args.circuit]()
    with Progress(console=err, transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("perturbing cells", total=None)
        report = audit(circuit, circuit.public_inputs(), sample=args.sample, seed=args.seed,
                       progress=lambda i, n: bar.update(task, completed=i, total=n))
    if args.json:
        print_json({"circuit": report.circuit, "cells_total": report.cells_total,
                    "cells_checked": report.cells_checked, "sampled": report.sampled, "seed": report.seed,
                    "unconstrained": [vars(c) | {"value": str(c.value), "to": str(c.to)}
                                      for c in report.unconstrained]})
    else:
        out.print(report.render())
    return 0 if report.ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "audit", help="look for under-constrained advice cells by perturbing them one at a time",
        description="Perturb the advice cells of a named circuit one at a time and report those no constraint "
                    "catches. Exit 0 none found, 1 some found, 2 bad input.")
    p.add_argument("--circuit", default="range-sum", metavar="NAME",
                   help=f"the circuit: {', '.join(sorted(circuits()))}")
    p.add_argument("--sample", type=integer(1, MAX_SAMPLE), default=None, metavar="N",
                   help="check only N random cells (default: every cell)")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seed of the sample")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_audit)
