"""Cost accounting: rows, columns, lookups, copies, degree, minimal k and a halo2-KZG proof-size estimate.

Works on any layout, including the analytic pass (no witness), so the cost of very large circuits is computed from the
same synthesize code that proves small ones. Formulas are stated in specs/constraint-system.md.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from zkref.plonkish.constraint_system import ConstraintSystem
from zkref.plonkish.layout import Circuit, Layout, synthesize

POINT_BYTES = 32
"""A compressed BN254 G1 point in the halo2 transcript."""
SCALAR_BYTES = 32


@dataclass
class ChipCost:
    """Rows and cells attributed to one chip (regions placed side by side share rows, so rows may overlap)."""

    chip: str
    regions: int
    rows: int
    cells: int


@dataclass
class ProofSizeEstimate:
    """Commitments and evaluations a halo2 KZG (SHPLONK) proof carries for this constraint system."""

    advice_commitments: int
    lookup_commitments: int
    permutation_commitments: int
    vanishing_commitments: int
    multiopen_commitments: int
    advice_evals: int
    fixed_evals: int
    permutation_evals: int
    lookup_evals: int
    vanishing_evals: int
    bytes: int


@dataclass
class CircuitCost:
    """Everything the accounting reports for one circuit; serialises to JSON and renders as a rich table."""

    name: str
    rows_used: int
    table_rows: int
    instance_rows: int
    advice_columns: int
    fixed_columns: int
    selector_columns: int
    instance_columns: int
    lookup_arguments: int
    lookup_queries: int
    copy_constraints: int
    equality_columns: int
    gates: int
    max_gate_degree: int
    degree: int
    blinding_rows: int
    k: int
    proof: ProofSizeEstimate
    chips: list[ChipCost] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    advice_cells: int = 0

    @property
    def total_rows(self) -> int:
        """Rows the proof's domain must hold: used rows (or public inputs) plus blinding rows."""
        return max(self.rows_used, self.instance_rows) + self.blinding_rows

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_rows"] = self.total_rows
        d["proof_bytes"] = self.proof.bytes
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def rich_table(self):
        """A rich Table with the headline figures and per-chip attribution."""
        from rich.table import Table

        t = Table(title=f"cost of {self.name}", show_header=True)
        t.add_column("quantity")
        t.add_column("value", justify="right")
        rows = [
            ("rows used (regions, tables, constants)", self.rows_used),
            ("lookup table rows", self.table_rows),
            ("public inputs (instance rows)", self.instance_rows),
            ("blinding rows", self.blinding_rows),
            ("k (2^k rows)", f"{self.k} ({1 << self.k:,})"),
            ("advice / fixed / selector / instance columns",
             f"{self.advice_columns} / {self.fixed_columns} / {self.selector_columns} / {self.instance_columns}"),
            ("advice cells assigned", self.advice_cells),
            ("gates (max degree) / constraint system degree", f"{self.gates} ({self.max_gate_degree}) / {self.degree}"),
            ("lookup arguments / active lookups", f"{self.lookup_arguments} / {self.lookup_queries:,}"),
            ("copy constraints (equality columns)", f"{self.copy_constraints:,} ({self.equality_columns})"),
            ("proof size estimate (halo2 KZG)", f"{self.proof.bytes:,} B"),
        ]
        for name, value in rows:
            t.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
        for chip in self.chips:
            t.add_row(f"  chip {chip.chip or '(none)'}", f"{chip.rows:,} rows, {chip.cells:,} cells, {chip.regions} regions")
        return t


def proof_size(cs: ConstraintSystem) -> ProofSizeEstimate:
    """Estimate a halo2 KZG/SHPLONK proof's size from the constraint system's shape (see specs for the formula)."""
    degree = cs.degree()
    n_lookups = len(cs.lookups)
    eq = len(cs.equality)
    chunk = degree - 2
    perm_chunks = math.ceil(eq / chunk) if eq else 0
    advice_evals = sum(len(r) for r in cs.advice_queries().values())
    fixed_evals = len(cs.fixed_queries()) + len(cs.selectors)
    commitments = dict(
        advice_commitments=len(cs.advice),
        lookup_commitments=3 * n_lookups,            # permuted input, permuted table, product
        permutation_commitments=perm_chunks,
        vanishing_commitments=1 + (degree - 1),      # random polynomial + quotient pieces
        multiopen_commitments=2,                     # SHPLONK: h and the final opening witness
    )
    evals = dict(
        advice_evals=advice_evals,
        fixed_evals=fixed_evals,
        permutation_evals=eq + (3 * perm_chunks - 1 if perm_chunks else 0),  # sigmas; z(x), z(wx) per chunk, z(w^last x) but last
        lookup_evals=5 * n_lookups,                  # z(x), z(wx), A'(x), A'(w^-1 x), S'(x)
        vanishing_evals=1,                           # random polynomial
    )
    total = POINT_BYTES * sum(commitments.values()) + SCALAR_BYTES * sum(evals.values())
    return ProofSizeEstimate(**commitments, **evals, bytes=total)


def lookup_queries(layout: Layout) -> int:
    """Active lookups: for each lookup argument, the rows where any of its selectors is on (a row mask, O(rows))."""
    rows_by_sel: dict = {}
    for sel, rows, _ in layout.selectors:
        rows_by_sel.setdefault(sel, []).append(rows)
    height = max([layout.rows_used()] + [int(r.max()) + 1 for parts in rows_by_sel.values() for r in parts if len(r)])
    total = 0
    for lk in layout.cs.lookups:
        sels = lk.selectors()
        if not sels:
            total += layout.rows_used()
            continue
        parts = [r for s in sels for r in rows_by_sel.get(s, [])]
        if len(parts) == 1:
            total += len(np.unique(parts[0])) if len(sels) > 1 else len(parts[0])
            continue
        mask = np.zeros(height, dtype=bool)
        for r in parts:
            mask[r] = True
        total += int(mask.sum())
    return total


def circuit_cost(cs: ConstraintSystem, name: str, *, rows_used: int, instance_rows: int, lookup_queries: int,
                 copy_constraints: int, chips: list[ChipCost], tables: dict[str, int], advice_cells: int) -> CircuitCost:
    """Assemble a CircuitCost from layout counts; everything else (columns, degree, k, proof size) comes from `cs`."""
    return CircuitCost(
        name=name,
        rows_used=rows_used,
        table_rows=max(tables.values(), default=0),
        instance_rows=instance_rows,
        advice_columns=len(cs.advice),
        fixed_columns=len(cs.fixed),
        selector_columns=len(cs.selectors),
        instance_columns=len(cs.instance),
        lookup_arguments=len(cs.lookups),
        lookup_queries=lookup_queries,
        copy_constraints=copy_constraints,
        equality_columns=len(cs.equality),
        gates=len(cs.gates),
        max_gate_degree=max((g.degree() for g in cs.gates), default=0),
        degree=cs.degree(),
        blinding_rows=cs.blinding_rows(),
        k=cs.minimal_k(max(rows_used, instance_rows)),
        proof=proof_size(cs),
        chips=sorted(chips, key=lambda c: -c.rows),
        tables=tables,
        advice_cells=advice_cells,
    )


def cost_of_layout(layout: Layout, name: str = "circuit") -> CircuitCost:
    """Account a synthesised (or analytically laid out) circuit."""
    chips: dict[str, ChipCost] = {}
    for reg in layout.regions:
        c = chips.setdefault(reg.chip, ChipCost(reg.chip, 0, 0, 0))
        c.regions += 1
        c.rows += reg.height
        c.cells += reg.cells
    return circuit_cost(
        layout.cs, name,
        rows_used=layout.rows_used(),
        instance_rows=layout.instance_rows(),
        lookup_queries=lookup_queries(layout),
        copy_constraints=layout.copy_count(),
        chips=list(chips.values()),
        tables={tname: len(arrays[0]) for tname, (_, arrays) in layout.tables.items()},
        advice_cells=sum(len(b.rows) for b in layout.advice),
    )


def account(circuit: Circuit, name: str | None = None) -> CircuitCost:
    """Analytic accounting: lay the circuit out without a witness and measure it."""
    layout = synthesize(circuit, with_values=False)
    return cost_of_layout(layout, name or type(circuit).__name__)

