"""A naive twin of the MockProver: the same checks, row by row, in plain Python ints modulo p.

MockProver (mock_prover.py) is optimised: gating shortcuts, int64 fast paths, packed table keys. This module is the
reference it is tested against (tests/test_naive_prover.py), as py_ecc keeps a readable and an optimised curve. It
reuses only the public synthesis (layout.py) and materialises the 2^k-row matrix itself, halo2's way:

- unassigned cells are 0; a table's columns hold its rows from row 0, and rows past its length repeat row 0 up to
  the usable rows; instance columns hold the public inputs from row 0; assignments at rows >= 2^k are dropped (the
  layout did not fit: NotEnoughRows is reported) and any other row index is read modulo 2^k, like rotations.
- every gate constraint is evaluated on every usable row, every lookup input tuple on every usable row (against the
  set of the table's usable rows as canonical tuples), every copy and instance constraint is checked;
- CellNotAssigned (as specs/constraint-system.md defines it): on a usable row where any selector of a gate is on,
  every advice cell the gate queries must have been assigned by synthesis, in any region (halo2's MockProver is
  stricter: the cell must be in the selector's region, and fixed and instance cells are checked too).

Failures are hashable keys, and `failure_keys` maps MockProver's typed failures to the same keys:
    ("constraint", gate, constraint, row)          ("lookup", lookup, row)
    ("copy", left column, left row, right column, right row)
    ("instance", instance column, instance row, cell column, cell row)
    ("unassigned", gate, gate row, column, cell row)          ("rows",)
Tampering: `overrides` {(column name, row): value} replaces materialised cells after synthesis, like
MockProver.set_cell (an advice override does not make a cell assigned; an instance override below the number of
public inputs also changes the public input).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from zkref.plonkish.expression import Column, Constant, Expression, Negated, Product, Query, Scaled, SelectorExpr, Sum
from zkref.plonkish.failures import (CellNotAssigned, ConstraintNotSatisfied, CopyConstraintFailure, InstanceMismatch,
                                     LookupFailure, NotEnoughRows, VerifyFailure)
from zkref.plonkish.layout import Circuit, Layout, synthesize
from zkref.primitives.field import P

FailureKey = tuple[object, ...]


@dataclass(frozen=True)
class NaiveReport:
    """What the twin decided: the matrix size it used and the set of failure keys (empty when satisfied)."""

    k: int
    usable: int
    failures: frozenset[FailureKey]


def naive_verify(circuit: Circuit, instances: Sequence[Sequence[int]] = (), k: int | None = None,
                 overrides: Mapping[tuple[str, int], int] | None = None) -> NaiveReport:
    """Synthesise `circuit` (public synthesis only) and check it naively: MockProver's inputs, plus overrides."""
    layout = synthesize(circuit, with_values=True, instances=instances)
    return check_layout(layout, instances, k, overrides)


def check_layout(layout: Layout, instances: Sequence[Sequence[int]], k: int | None = None,
                 overrides: Mapping[tuple[str, int], int] | None = None) -> NaiveReport:
    """Materialise a witnessed layout in 2^k rows and run every check on every usable row."""
    cs = layout.cs
    public = [[int(v) % P for v in col] for col in instances]
    if len(public) != len(cs.instance):
        raise ValueError(f"circuit has {len(cs.instance)} instance column(s), got {len(public)}")
    needed = max([_rows_used(layout)] + [r + 1 for ic in layout.instance_copies for r in ic.rows.tolist()]
                 + [len(col) for col in public])
    if k is None:  # the least k >= 4 whose usable rows hold everything
        k = 4
        while needed + cs.blinding_rows() > 1 << k:
            k += 1
    n = 1 << k
    usable = max(0, n - cs.blinding_rows())

    # ---- materialise: column -> list of n canonical ints
    cells: dict[Column, list[int]] = {c: [0] * n for c in cs.advice + cs.fixed}
    assigned: set[tuple[Column, int]] = set()
    for block in layout.advice + layout.fixed:
        for row, v in zip(block.rows.tolist(), block.values.tolist()):
            if row < n:
                cells[block.column][row] = int(v) % P
                assigned.add((block.column, row))
    for table, arrays in layout.tables.values():
        for col, arr in zip(table.columns, arrays):
            vals = [int(v) % P for v in arr.tolist()]
            for row in range(min(max(len(vals), usable), n)):
                cells[col][row] = vals[row] if row < len(vals) else vals[0]
    for col in cs.instance:
        cells[col] = (public[col.index] + [0] * n)[:n]
    selector_rows = {s: set() for s in cs.selectors}
    for sel, rows, _ in layout.selectors:
        selector_rows[sel].update(r for r in rows.tolist() if r < n)
    by_name = {c.name: c for c in cells}
    for (name, row), v in (overrides or {}).items():
        col = by_name[name]
        cells[col][row] = int(v) % P
        if col in cs.instance and row < len(public[col.index]):
            public[col.index][row] = int(v) % P

    def ev(e: Expression, row: int) -> int:
        """The value of expression `e` at `row`: a recursive walk over the seven node types, reduced mod p."""
        if isinstance(e, Constant):
            return e.value % P
        if isinstance(e, Query):
            return cells[e.column][(row + e.rotation) % n]
        if isinstance(e, SelectorExpr):
            return 1 if row in selector_rows[e.selector] else 0
        if isinstance(e, Sum):
            return (ev(e.a, row) + ev(e.b, row)) % P
        if isinstance(e, Product):
            return ev(e.a, row) * ev(e.b, row) % P
        if isinstance(e, Negated):
            return -ev(e.a, row) % P
        if isinstance(e, Scaled):
            return ev(e.a, row) * e.factor % P
        raise TypeError(f"unknown expression node {type(e).__name__}")

    # ---- check
    failures: set[FailureKey] = {("rows",)} if needed > usable else set()
    for gate in cs.gates:
        leaves = [leaf for con in gate.constraints for leaf in _leaves(con.expr)]
        selectors = {leaf.selector for leaf in leaves if isinstance(leaf, SelectorExpr)}
        advice = {(q.column, q.rotation) for q in leaves if isinstance(q, Query) and q.column in cs.advice}
        for row in range(usable):
            for con in gate.constraints:
                if ev(con.expr, row) != 0:
                    failures.add(("constraint", gate.name, con.name, row))
            if any(row in selector_rows[s] for s in selectors):
                for col, rot in advice:
                    if (col, (row + rot) % n) not in assigned:
                        failures.add(("unassigned", gate.name, row, col.name, (row + rot) % n))
    for lookup in cs.lookups:
        table = {tuple(cells[c][row] for c in lookup.table.columns) for row in range(usable)}
        for row in range(usable):
            if tuple(ev(e, row) for e in lookup.inputs) not in table:
                failures.add(("lookup", lookup.name, row))
    for copy in layout.copies:
        left, right = copy.left.column, copy.right.column
        for lrow, rrow in zip(copy.left.rows.tolist(), copy.right.rows.tolist()):
            if cells[left][lrow % n] != cells[right][rrow % n]:
                failures.add(("copy", left.name, lrow, right.name, rrow))
    for ic in layout.instance_copies:
        expected = public[ic.column.index]
        for cell_row, row in zip(ic.cells.rows.tolist(), ic.rows.tolist()):
            if row >= len(expected) or expected[row] != cells[ic.cells.column][cell_row % n]:
                failures.add(("instance", ic.column.name, row, ic.cells.column.name, cell_row))
    return NaiveReport(k, usable, frozenset(failures))


def _rows_used(layout: Layout) -> int:
    """Rows the layout occupies, recomputed from its cells, selectors and tables (not from Layout.rows_used)."""
    rows = [int(b.rows.max()) + 1 for b in layout.advice + layout.fixed if len(b.rows)]
    rows += [int(r.max()) + 1 for _, r, _ in layout.selectors if len(r)]
    rows += [len(arrays[0]) for _, arrays in layout.tables.values()]
    return max(rows, default=0)


def _leaves(e: Expression) -> Iterable[Expression]:
    """The Query, SelectorExpr and Constant leaves of an expression tree (same node dispatch as the evaluator)."""
    if isinstance(e, (Sum, Product)):
        yield from _leaves(e.a)
        yield from _leaves(e.b)
    elif isinstance(e, (Negated, Scaled)):
        yield from _leaves(e.a)
    else:
        yield e


def failure_keys(failures: Iterable[VerifyFailure]) -> frozenset[FailureKey]:
    """MockProver's typed failures as the twin's keys, so the two verdicts compare as sets."""
    keys: set[FailureKey] = set()
    for f in failures:
        if isinstance(f, ConstraintNotSatisfied):
            keys.add(("constraint", f.gate, f.constraint, f.row))
        elif isinstance(f, LookupFailure):
            keys.add(("lookup", f.lookup, f.row))
        elif isinstance(f, CopyConstraintFailure):
            keys.add(("copy", f.left.column, f.left.row, f.right.column, f.right.row))
        elif isinstance(f, InstanceMismatch):
            keys.add(("instance", f.instance_column, f.instance_row, f.cell.column, f.cell.row))
        elif isinstance(f, CellNotAssigned):
            keys.add(("unassigned", f.gate, f.gate_row, f.column, f.row))
        elif isinstance(f, NotEnoughRows):
            keys.add(("rows",))
        else:
            raise TypeError(f"unknown failure type {type(f).__name__}")
    return frozenset(keys)
