"""Benchmark: mock-prove a 2^16-row circuit with 8 lookups per row and a degree-3 gate; account a 2^20-row one.

Writes benchmarks/results/mock_prover.json and .md. Timings live here, never in test asserts.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from zkref.plonkish.accounting import account
from zkref.plonkish.audit import audit_prover
from zkref.examples.plonkish import LookupBenchCircuit
from zkref.plonkish.mock_prover import MockProver

from timing import best_of

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    k = 16
    blinding = 6
    rows = (1 << k) - blinding - 1  # the accumulator column needs rows + 1 cells
    circuit = LookupBenchCircuit(rows=rows, lookups=8)
    t_synth, prover = best_of(lambda: MockProver(circuit, []), args.repeat)
    t_verify, failures = best_of(prover.verify, args.repeat)
    t_total, _ = best_of(lambda: MockProver(circuit, []).verify(), args.repeat)  # cold: fresh prover, no caches
    assert prover.k == k and not failures, failures[:3]
    t_account, cost = best_of(lambda: account(LookupBenchCircuit(rows=(1 << 20) - 100)), args.repeat)
    small = MockProver(LookupBenchCircuit(rows=200), [])
    t_audit, report = best_of(lambda: audit_prover(small, name="LookupBench(200 rows)"), 1)

    result = {
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "mock_prove_2^16_rows_8_lookups_degree3": {
            "k": prover.k, "rows": rows, "lookups_per_row": 8, "gate_degree": 3,
            "synthesize_s": round(t_synth, 4), "verify_s": round(t_verify, 4), "total_s": round(t_total, 4),
        },
        "analytic_accounting_2^20_rows": {"k": cost.k, "seconds": round(t_account, 4)},
        "audit_200_rows": {"cells": report.cells_checked, "seconds": round(t_audit, 3),
                           "cells_per_second": round(report.cells_checked / t_audit)},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mock_prover.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["mock_prove_2^16_rows_8_lookups_degree3"]
    md = [
        "# MockProver benchmark", "",
        "| workload | k | seconds |", "|---|---|---|",
        f"| synthesize 2^16-row circuit (8 lookups/row, degree-3 gate) | {m['k']} | {m['synthesize_s']} |",
        f"| verify it (all gates, lookups, copies) | {m['k']} | {m['verify_s']} |",
        f"| **total mock prove, cold (fresh prover: synthesize + verify)** | {m['k']} | **{m['total_s']}** |",
        f"| analytic accounting of a 2^20-row circuit | {cost.k} | {result['analytic_accounting_2^20_rows']['seconds']} |",
        f"| audit, {report.cells_checked} advice cells | {small.k} | {result['audit_200_rows']['seconds']} |",
        "", f"Best of {args.repeat} runs; Python {platform.python_version()}, {platform.machine()}.",
    ]
    (RESULTS / "mock_prover.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
