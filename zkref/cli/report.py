"""`zkref report`: the dense baseline against low-rank strategies, side by side, from zkref's accounting; with
`--backend ezkl`, the rows and k EZKL would lay each module out at, predicted by backends/ezkl/cost.py (no EZKL run)."""
from __future__ import annotations

import argparse

from zkref.cli.console import out, print_json
from zkref.cli.inputs import add_binding_arguments
from zkref.cli.options import integer
from zkref.lora.presets import PRESETS
from zkref.primitives.ranges import MAX_DIM, MAX_LANES, MAX_RANK, MAX_SHIFT, MAX_TOKENS


def cmd_report(args: argparse.Namespace) -> int:
    if args.backend == "ezkl":
        return _ezkl_report(args)
    from zkref.lora.report import build_report

    report = build_report(d_in=args.d_in, d_out=args.d_out, rank=args.rank, tokens=args.tokens, lanes=args.lanes,
                          preset=args.preset, method=args.method, commitments=args.commitments)
    if args.json:
        print_json(report.to_dict())
        return 0
    out.print(report.rich_table())
    out.print(report.effects_table())
    for note in report.notes:
        out.print(f"- {note}")
    out.print(f"accounted in {report.seconds:.3f} s")
    return 0


def _ezkl_report(args: argparse.Namespace) -> int:
    from backends.ezkl.backend import EzklBackend
    from backends.ezkl.cost import ezkl_report
    from zkref.lora.presets import ModuleShape

    if args.preset is not None:
        modules, description = list(PRESETS[args.preset].modules), PRESETS[args.preset].description
    elif args.d_in is None or args.d_out is None:
        raise ValueError("give --d-in and --d-out, or --preset")
    else:
        modules, description = [ModuleShape("module", args.d_in, args.d_out)], f"{args.d_in}→{args.d_out}"
    report = ezkl_report(modules=modules, description=f"{description}, r={args.rank}, T={args.tokens}",
                         rank=args.rank, tokens=args.tokens, shift=args.shift, supports=EzklBackend().supports,
                         x_binding=args.x_binding, adapter_binding=args.adapter_binding, y_binding=args.y_binding,
                         weight_bits=args.weight_bits)
    if args.json:
        print_json(report.to_json())
        return 0
    out.print(report.rich_table())
    out.print("- rows: EZKL's num_rows at the pinned settings (main region cells ÷ inner columns, or the Poseidon "
              "module's rows if larger); einsum cells: Freivalds' check of matrix-matrix products (T > 1), in its own "
              "columns; k: choose_layout's choice and why")
    out.print(f"- {sum(m.count for m in report.modules)} module(s), {report.total_rows:,} rows in all; predicted in "
              f"{report.seconds:.3f} s")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="costs of the dense baseline vs low-rank LoRA circuits, side by side",
        description="The dense baseline against low-rank strategies, from zkref's accounting of its own circuits; "
                    "with --backend ezkl, the rows and k EZKL would lay each module out at, predicted without "
                    "running EZKL (backends/ezkl/cost.py).")
    shape = p.add_argument_group("the module (or --preset)")
    shape.add_argument("--d-in", type=integer(1, MAX_DIM), default=None, metavar="N",
                       help="the module's input width")
    shape.add_argument("--d-out", type=integer(1, MAX_DIM), default=None, metavar="M",
                       help="the module's output width")
    shape.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a named shape or whole model")
    shape.add_argument("--rank", type=integer(1, MAX_RANK), default=16, metavar="R",
                       help="LoRA rank r (8, 16, 32, 64 are the usual ones)")
    shape.add_argument("--tokens", type=integer(1, MAX_TOKENS), default=1, metavar="T",
                       help="tokens per call")
    p.add_argument("--backend", choices=["zkref", "ezkl"], default="zkref",
                   help="zkref: accounting of zkref's circuits; ezkl: EZKL's rows and k, predicted")
    p.add_argument("--lanes", type=integer(1, MAX_LANES), default=8, metavar="L", help="lookup lanes per row (zkref)")
    p.add_argument("--method", choices=["auto", "analytic", "formula"], default="auto",
                   help="zkref: analytic layout pass, closed-form formula, or auto (formula only for huge layouts)")
    p.add_argument("--commitments", action="store_true",
                   help="zkref: also cost binding x and the adapter by Poseidon commitments (plain and packed)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    ezkl = p.add_argument_group("with --backend ezkl: the statement")
    ezkl.add_argument("--shift", type=integer(0, MAX_SHIFT), default=8, metavar="S",
                      help="requantisation shift (calibrated modules here use 8-10): it sets the decomposition width")
    add_binding_arguments(ezkl)
    ezkl.add_argument("--weight-bits", type=int, choices=[4, 8], default=4, help="weight precision")
    p.set_defaults(func=cmd_report)
