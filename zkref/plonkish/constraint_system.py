"""The PLONKish constraint system: columns, selectors, named gates, named lookups, equality, and the Circuit protocol.

Shaped like halo2's `ConstraintSystem`: a circuit's `configure` declares columns and constraints here once; its
`synthesize` then lays out regions and assigns values through a `Layouter` (see layout.py).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
import math

from zkref.plonkish.expression import Column, ColumnKind, Expression, Query, Selector, lift


class CircuitError(ValueError):
    """A circuit was configured or synthesised incorrectly (not a witness failure: those are VerifyFailures)."""


@dataclass(frozen=True)
class Constraint:
    """One named polynomial that must vanish on every row (selectors inside it switch it on)."""

    name: str
    expr: Expression


@dataclass(frozen=True)
class Gate:
    """A named custom gate: a list of named constraints sharing selectors."""

    name: str
    constraints: tuple[Constraint, ...]

    def degree(self) -> int:
        return max((c.expr.degree() for c in self.constraints), default=0)

    def queries(self) -> set[Query]:
        return set().union(*(c.expr.queries() for c in self.constraints))

    def selectors(self) -> set[Selector]:
        return set().union(*(c.expr.selectors() for c in self.constraints))


@dataclass(frozen=True)
class LookupTable:
    """A named table made of fixed columns; lookups prove input tuples are rows of it."""

    name: str
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Lookup:
    """A named lookup argument: on every row, the tuple of input expressions is a row of `table`."""

    name: str
    inputs: tuple[Expression, ...]
    table: LookupTable

    def degree(self) -> int:
        """halo2's required degree for a (permutation-based) lookup: max(4, 2 + input degree + table degree)."""
        input_degree = max([1] + [e.degree() for e in self.inputs])
        return max(4, 2 + input_degree + 1)

    def queries(self) -> set[Query]:
        return set().union(*(e.queries() for e in self.inputs))

    def selectors(self) -> set[Selector]:
        return set().union(*(e.selectors() for e in self.inputs))


@dataclass
class ConstraintSystem:
    """Everything a circuit declares in `configure`: columns, selectors, gates, lookups, equality and constants."""

    advice: list[Column] = field(default_factory=list)
    fixed: list[Column] = field(default_factory=list)
    instance: list[Column] = field(default_factory=list)
    selectors: list[Selector] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    lookups: list[Lookup] = field(default_factory=list)
    tables: list[LookupTable] = field(default_factory=list)
    equality: list[Column] = field(default_factory=list)
    constants: list[Column] = field(default_factory=list)

    # -- columns -------------------------------------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        taken = {c.name for c in self.advice + self.fixed + self.instance} | {s.name for s in self.selectors}
        if name in taken:
            raise CircuitError(f"column or selector name {name!r} is already used")

    def advice_column(self, name: str, *, equality: bool = False) -> Column:
        self._check_name(name)
        col = Column(ColumnKind.ADVICE, len(self.advice), name)
        self.advice.append(col)
        if equality:
            self.enable_equality(col)
        return col

    def fixed_column(self, name: str, *, equality: bool = False) -> Column:
        self._check_name(name)
        col = Column(ColumnKind.FIXED, len(self.fixed), name)
        self.fixed.append(col)
        if equality:
            self.enable_equality(col)
        return col

    def instance_column(self, name: str) -> Column:
        """A public-input column; always equality-enabled so advice cells can be constrained to it."""
        self._check_name(name)
        col = Column(ColumnKind.INSTANCE, len(self.instance), name)
        self.instance.append(col)
        self.enable_equality(col)
        return col

    def selector(self, name: str) -> Selector:
        self._check_name(name)
        sel = Selector(len(self.selectors), name)
        self.selectors.append(sel)
        return sel

    def lookup_table(self, name: str, column_names: Sequence[str]) -> LookupTable:
        """Declare a table of fixed columns, filled later with `Layouter.assign_table`."""
        if any(t.name == name for t in self.tables):
            raise CircuitError(f"lookup table {name!r} already exists")
        cols = tuple(self.fixed_column(f"{name}.{c}") for c in column_names)
        table = LookupTable(name, cols)
        self.tables.append(table)
        return table

    def enable_equality(self, col: Column) -> None:
        """Let copy constraints reach this column (it joins the permutation argument)."""
        if col not in self.equality:
            self.equality.append(col)

    def enable_constant(self, col: Column) -> None:
        """Use a fixed column to hold constants that advice cells can be constrained to."""
        if col.kind is not ColumnKind.FIXED:
            raise CircuitError("constants live in fixed columns")
        self.enable_equality(col)
        if col not in self.constants:
            self.constants.append(col)

    # -- constraints ---------------------------------------------------------------------------------------------
    def create_gate(self, name: str, constraints: Iterable[tuple[str, Expression]] | dict[str, Expression]) -> Gate:
        """Add a named gate from (constraint name, expression) pairs."""
        items = constraints.items() if isinstance(constraints, dict) else constraints
        cons = tuple(Constraint(cname, lift(expr)) for cname, expr in items)
        if not cons:
            raise CircuitError(f"gate {name!r} has no constraints")
        if any(g.name == name for g in self.gates):
            raise CircuitError(f"gate {name!r} already exists")
        for c in cons:
            self._check_queries(c.expr.queries(), f"gate {name!r}")
        gate = Gate(name, cons)
        self.gates.append(gate)
        return gate

    def lookup(self, name: str, inputs: Sequence[Expression | int], table: LookupTable) -> Lookup:
        """Add a named lookup: the input tuple must appear as a row of `table` on every row."""
        exprs = tuple(lift(e) for e in inputs)
        if len(exprs) != len(table.columns):
            raise CircuitError(f"lookup {name!r}: {len(exprs)} inputs for a {len(table.columns)}-column table")
        if any(lk.name == name for lk in self.lookups):
            raise CircuitError(f"lookup {name!r} already exists")
        if table not in self.tables:
            raise CircuitError(f"lookup {name!r}: table {table.name!r} was not declared in this constraint system")
        for e in exprs:
            self._check_queries(e.queries(), f"lookup {name!r}")
        lk = Lookup(name, exprs, table)
        self.lookups.append(lk)
        return lk

    def _check_queries(self, queries: set[Query], where: str) -> None:
        known = set(self.advice + self.fixed + self.instance)
        for q in queries:
            if q.column not in known:
                raise CircuitError(f"{where} queries column {q.column.name!r} of another constraint system")

    # -- derived properties ----------------------------------------------------------------------------------------
    def degree(self) -> int:
        """The constraint system's degree: permutation (3), every gate and every lookup."""
        return max([3] + [g.degree() for g in self.gates] + [lk.degree() for lk in self.lookups])

    def advice_queries(self) -> dict[Column, set[int]]:
        """Distinct rotations at which each advice column is queried (by gates and lookups)."""
        out: dict[Column, set[int]] = {c: set() for c in self.advice}
        for q in self._all_queries():
            if q.column.kind is ColumnKind.ADVICE:
                out[q.column].add(q.rotation)
        for c in self.equality:  # copy constraints open every equality column at the current row
            if c.kind is ColumnKind.ADVICE:
                out[c].add(0)
        return out

    def _all_queries(self) -> set[Query]:
        qs: set[Query] = set()
        for g in self.gates:
            qs |= g.queries()
        for lk in self.lookups:
            qs |= lk.queries()
        return qs

    def fixed_queries(self) -> set[tuple[Column, int]]:
        """Distinct (fixed column, rotation) openings: gate queries, table columns, selectors counted separately."""
        out = {(q.column, q.rotation) for q in self._all_queries() if q.column.kind is ColumnKind.FIXED}
        for t in self.tables:
            out |= {(c, 0) for c in t.columns}
        for c in self.equality:
            if c.kind is ColumnKind.FIXED:
                out.add((c, 0))
        return out

    def blinding_factors(self) -> int:
        """halo2's count of random rows at the bottom: max(3, max advice queries per column) + 2."""
        max_queries = max([1] + [len(r) for r in self.advice_queries().values()])
        return max(3, max_queries) + 2

    def blinding_rows(self) -> int:
        """Rows a prover cannot use: blinding factors plus the last-row marker."""
        return self.blinding_factors() + 1

    def minimal_k(self, rows_needed: int) -> int:
        """Smallest k with rows_needed + blinding rows <= 2^k (and at least k=4)."""
        total = rows_needed + self.blinding_rows()
        return max(4, math.ceil(math.log2(max(total, 2))))
