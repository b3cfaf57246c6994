"""`zkref report`: the dense baseline against low-rank strategies, side by side, from zkref's accounting."""
from __future__ import annotations

import argparse

from zkref.cli.console import out, print_json
from zkref.lora.presets import PRESETS


def cmd_report(args: argparse.Namespace) -> int:
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


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="costs of the dense baseline vs low-rank LoRA circuits, side by side")
    p.add_argument("--d-in", type=int, default=None)
    p.add_argument("--d-out", type=int, default=None)
    p.add_argument("--rank", type=int, default=16, help="LoRA rank r (8, 16, 32, 64 are the usual ones)")
    p.add_argument("--tokens", type=int, default=1)
    p.add_argument("--lanes", type=int, default=8, help="lookup lanes per row, 1..16")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="named shape or whole model")
    p.add_argument("--method", choices=["auto", "analytic", "formula"], default="auto",
                   help="analytic layout pass, closed-form formula, or auto (formula only for huge layouts)")
    p.add_argument("--commitments", action="store_true",
                   help="also cost binding x and the adapter by Poseidon commitments (plain and packed)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_report)
