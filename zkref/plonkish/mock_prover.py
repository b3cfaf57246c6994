"""MockProver: checks a synthesised witness against every gate, lookup, copy and instance constraint, without a proof.

Like halo2's MockProver, `verify()` returns a list of typed failures (empty when satisfied) and `assert_satisfied()`
raises with a readable rendering. Checks are vectorised over rows with numpy and exact modulo p.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zkref.plonkish.constraint_system import Gate, Lookup
from zkref.plonkish.expression import Column, ColumnKind, Expression, Query, SelectorExpr, evaluate_rows
from zkref.plonkish.failures import (CellNotAssigned, CellRef, ConstraintNotSatisfied, CopyConstraintFailure, InstanceMismatch,
                       LookupFailure, NotEnoughRows, VerifyFailure)
from zkref.primitives.field import HALF_P, INT64_SAFE, P, abs_bound, as_field_array, canonical, field_equal, is_zero
from zkref.plonkish.layout import Circuit, Layout, configure, synthesize

MAX_K = 28


class VerificationError(AssertionError):
    """Raised by `assert_satisfied` with every failure rendered."""

    def __init__(self, failures: list[VerifyFailure], shown: int = 20):
        self.failures = failures
        lines = [f"circuit is not satisfied: {len(failures)} failure(s)"]
        lines += [f"[{i}] {f}" for i, f in enumerate(failures[:shown])]
        if len(failures) > shown:
            lines.append(f"... and {len(failures) - shown} more")
        super().__init__("\n".join(lines))


@dataclass
class _Override:
    """A single perturbed advice cell, used by the under-constrained audit."""

    column: Column
    row: int
    value: int


class MockProver:
    """Synthesise `circuit` with a witness, lay it out in 2^k rows, and check every constraint."""

    def __init__(self, circuit: Circuit, instances: Sequence[Sequence[int]] = (), k: int | None = None):
        self.cs, config = configure(circuit)
        self.instances = [as_field_array(list(col)) for col in instances]
        if len(self.instances) != len(self.cs.instance):
            raise ValueError(f"circuit has {len(self.cs.instance)} instance column(s), got values for "
                             f"{len(self.instances)}")
        self.layout: Layout = synthesize(circuit, with_values=True, instances=self.instances, cs=self.cs,
                                         config=config)
        needed = max([self.layout.rows_used(), self.layout.instance_rows()] + [len(c) for c in self.instances])
        self.k = self.cs.minimal_k(needed) if k is None else int(k)
        if not 1 <= self.k <= MAX_K:
            raise ValueError(f"k={self.k} is outside 1..{MAX_K}")
        self.n = 1 << self.k
        self.usable = max(0, self.n - self.cs.blinding_rows())
        self._rows_failures: list[VerifyFailure] = []
        if needed > self.usable:
            self._rows_failures.append(NotEnoughRows(needed, self.usable, self.k, "the layout and public inputs"))
        self._materialise()
        self._copy_index: dict | None = None

    # ------------------------------------------------------------------------------------------------ materialising
    def _materialise(self) -> None:
        n, cs, lay = self.n, self.cs, self.layout
        self.values: dict[Column, np.ndarray] = {}
        self.assigned: dict[Column, np.ndarray] = {}
        self.cell_region: dict[Column, np.ndarray] = {}
        for kind_cols, blocks in ((cs.advice, lay.advice), (cs.fixed, lay.fixed)):
            for col in kind_cols:
                self.values[col] = np.zeros(n, dtype=np.int64)
                self.assigned[col] = np.zeros(n, dtype=bool)
                self.cell_region[col] = np.full(n, -1, dtype=np.int32)
            for b in blocks:
                self._write(b.column, b.rows, b.values, b.region.index)
        for table, arrays in lay.tables.values():
            length = len(arrays[0])
            fill_to = max(length, self.usable)
            for col, arr in zip(table.columns, arrays):
                full = np.concatenate([arr, np.repeat(arr[:1], fill_to - length)])  # unused rows repeat row 0
                self._write(col, np.arange(min(fill_to, n)), full[:n], -1)
        for col in cs.instance:
            vals = self.instances[col.index]
            arr = np.zeros(n, dtype=object if vals.dtype == object else np.int64)
            m = min(len(vals), n)
            arr[:m] = vals[:m]
            self.values[col] = arr
            self.assigned[col] = np.zeros(n, dtype=bool)
            self.assigned[col][:m] = True
        self.selector_on: dict = {s: np.zeros(n, dtype=bool) for s in cs.selectors}
        self.selector_region: dict = {s: np.full(n, -1, dtype=np.int32) for s in cs.selectors}
        for sel, rows, region in lay.selectors:
            rows = rows[rows < n]
            self.selector_on[sel][rows] = True
            self.selector_region[sel][rows] = region.index
        self._bounds = {col: abs_bound(v) for col, v in self.values.items()}

    def _write(self, col: Column, rows: np.ndarray, vals: np.ndarray, region: int) -> None:
        keep = rows < self.n
        rows = rows[keep]
        vals = vals[keep]
        cur = self.values[col]
        if vals.dtype == object and cur.dtype != object:
            cur = canonical(cur)
            self.values[col] = cur
        if cur.dtype == object and vals.dtype != object:
            vals = canonical(vals)
        cur[rows] = vals
        self.assigned[col][rows] = True
        self.cell_region[col][rows] = region

    # ------------------------------------------------------------------------------------------------ evaluation
    def _leaves(self, rows: np.ndarray, override: _Override | None):
        n = self.n

        def gather(q: Query, as_objects: bool) -> np.ndarray:
            idx = (rows + q.rotation) % n
            out = self.values[q.column][idx]
            if as_objects and out.dtype != object:
                out = canonical(out)
            if override is not None and q.column == override.column:
                hit = idx == override.row
                if hit.any():
                    out = out.copy() if out.dtype == object else out.astype(np.int64)
                    out[hit] = override.value if as_objects else _signed_small(override.value)
            return out

        def leaf_int64(node: Expression) -> np.ndarray:
            if isinstance(node, SelectorExpr):
                return self.selector_on[node.selector][rows].astype(np.int64)
            return gather(node, False)

        def leaf_object(node: Expression) -> np.ndarray:
            if isinstance(node, SelectorExpr):
                return self.selector_on[node.selector][rows].astype(object) * 1
            return gather(node, True)

        def bound(q: Query) -> int:
            b = self._bounds[q.column]
            if override is not None and q.column == override.column:
                s = _signed_small(override.value)
                b = HALF_P if s is None else max(b, abs(s))
            return b

        return leaf_int64, leaf_object, bound

    def _evaluate(self, expr: Expression, rows: np.ndarray, override: _Override | None = None) -> np.ndarray:
        leaf_int64, leaf_object, bound = self._leaves(rows, override)
        return evaluate_rows(expr, leaf_int64, leaf_object, bound, len(rows))

    def _cell_value(self, col: Column, row: int) -> int:
        return int(self.values[col][row % self.n]) % P

    def _region_of_row(self, selectors, columns, row: int) -> tuple[str | None, int | None]:
        for s in selectors:
            idx = int(self.selector_region[s][row])
            if idx >= 0:
                return self._region_at(idx, row)
        for c in columns:
            if c in self.cell_region:
                idx = int(self.cell_region[c][row % self.n])
                if idx >= 0:
                    return self._region_at(idx, row)
        return None, None

    def _region_at(self, idx: int, row: int) -> tuple[str, int]:
        reg = self.layout.regions[idx]
        return reg.name, row - (reg.start or 0)

    def _cell_ref(self, col: Column, row: int) -> CellRef:
        region, offset = None, None
        if col in self.cell_region:
            idx = int(self.cell_region[col][row % self.n])
            if idx >= 0:
                region, offset = self._region_at(idx, row)
        return CellRef(col.name, row, region, offset)

    # ------------------------------------------------------------------------------------------------ checks
    def _gate_failures(self, gate: Gate, rows: np.ndarray, override: _Override | None = None,
                       first_only: bool = False) -> list[VerifyFailure]:
        out: list[VerifyFailure] = []
        for con in gate.constraints:
            con_rows = self._gated_rows(con.expr.gating_selectors(), rows)
            vals = self._evaluate(con.expr, con_rows, override)
            bad = np.nonzero(~is_zero(vals))[0]
            if first_only and len(bad):
                return [None]  # type: ignore[list-item]
            for i in bad:
                row = int(con_rows[i])
                out.append(self._constraint_failure(gate, con, row, int(vals[i]) % P, override))
        return out

    def _gated_rows(self, gating: set, rows: np.ndarray) -> np.ndarray:
        """The rows where the expression can be non-zero: those with its sparsest gating selector on (exact)."""
        if not gating:
            return rows
        best = min(gating, key=lambda s: int(self._selector_count(s)))
        if self._selector_count(best) >= len(rows):
            return rows
        return rows[self.selector_on[best][rows]]

    def _selector_count(self, sel) -> int:
        counts = self.__dict__.setdefault("_sel_counts", {})
        if sel not in counts:
            counts[sel] = int(self.selector_on[sel].sum())
        return counts[sel]

    def _constraint_failure(self, gate, con, row: int, value: int, override) -> ConstraintNotSatisfied:
        queries = sorted(con.expr.queries(), key=lambda q: (q.column.kind.value, q.column.index, q.rotation))
        cells = []
        for q in queries:
            r = (row + q.rotation) % self.n
            v = override.value if (override and q.column == override.column and r == override.row) \
                else self._cell_value(q.column, r)
            cells.append((q.render(), v))
        for s in sorted(con.expr.selectors(), key=lambda s: s.index):
            cells.append((s.name, int(self.selector_on[s][row])))
        region, offset = self._region_of_row(gate.selectors(), [q.column for q in queries], row)
        return ConstraintNotSatisfied(gate.name, con.name, region, offset, row, value, con.expr.render(), tuple(cells))

    def _lookup_failures(self, lk: Lookup, rows: np.ndarray, override: _Override | None = None,
                         first_only: bool = False) -> list[VerifyFailure]:
        index = self._table_index(lk)
        # rows where a common gating selector is off give the all-zero tuple: skip them if the table holds it
        gating = set.intersection(*(e.gating_selectors() for e in lk.inputs)) if lk.inputs else set()
        if gating and index.contains([np.zeros(1, dtype=np.int64)] * len(lk.inputs))[0]:
            rows = self._gated_rows(gating, rows)
        inputs = [self._evaluate(e, rows, override) for e in lk.inputs]
        found = index.contains(inputs)
        bad = np.nonzero(~found)[0]
        if first_only:
            return [None] if len(bad) else []  # type: ignore[list-item]
        out: list[VerifyFailure] = []
        cols = [q.column for q in lk.queries()]
        for i in bad:
            row = int(rows[i])
            region, offset = self._region_of_row(lk.selectors(), cols, row)
            out.append(LookupFailure(lk.name, lk.table.name, region, offset, row,
                                     tuple(int(a[i]) % P for a in inputs)))
        return out

    def _table_index(self, lk: Lookup) -> "TableIndex":
        cache = self.__dict__.setdefault("_tables", {})
        if lk.table.name not in cache:
            rows = np.arange(self.usable)
            cols = [self.values[c][rows] for c in lk.table.columns]
            cache[lk.table.name] = TableIndex(cols)
        return cache[lk.table.name]

    def _unassigned_failures(self, gate: Gate, rows: np.ndarray) -> list[VerifyFailure]:
        sels = gate.selectors()
        if not sels:
            return []
        active = np.zeros(len(rows), dtype=bool)
        for s in sels:
            active |= self.selector_on[s][rows]
        out: list[VerifyFailure] = []
        act_rows = rows[active]
        if not len(act_rows):
            return out
        for q in sorted(gate.queries(), key=lambda q: (q.column.index, q.rotation)):
            if q.column.kind is not ColumnKind.ADVICE:
                continue
            target = (act_rows + q.rotation) % self.n
            missing = np.nonzero(~self.assigned[q.column][target])[0]
            for i in missing:
                row = int(act_rows[i])
                region, offset = self._region_of_row(sels, [], row)
                out.append(CellNotAssigned(gate.name, region, offset, row, q.column.name, int(target[i])))
        return out

    def _copy_failures(self) -> list[VerifyFailure]:
        out: list[VerifyFailure] = []
        for block in self.layout.copies:
            lrows, rrows = block.left.rows, block.right.rows
            lv = self.values[block.left.column][lrows % self.n]
            rv = self.values[block.right.column][rrows % self.n]
            for i in np.nonzero(~field_equal(lv, rv))[0]:
                out.append(CopyConstraintFailure(self._cell_ref(block.left.column, int(lrows[i])),
                                                 self._cell_ref(block.right.column, int(rrows[i])),
                                                 int(lv[i]) % P, int(rv[i]) % P))
        for ic in self.layout.instance_copies:
            rows = ic.cells.rows
            actual = self.values[ic.cells.column][rows % self.n]
            inst = self.instances[ic.column.index]
            missing = ic.rows >= len(inst)
            expected = np.zeros(len(ic.rows), dtype=inst.dtype if len(inst) else np.int64)
            if len(inst):
                expected[~missing] = inst[ic.rows[~missing]]
            bad = ~field_equal(actual, expected) | missing
            for i in np.nonzero(bad)[0]:
                out.append(InstanceMismatch(ic.column.name, int(ic.rows[i]),
                                            0 if missing[i] else int(expected[i]) % P,
                                            self._cell_ref(ic.cells.column, int(rows[i])), int(actual[i]) % P))
        return out

    # ------------------------------------------------------------------------------------------------ public API
    def verify(self) -> list[VerifyFailure]:
        """Every failure, typed and located; an empty list means the witness satisfies the circuit."""
        failures: list[VerifyFailure] = list(self._rows_failures)
        rows = np.arange(self.usable, dtype=np.int64)
        for gate in self.cs.gates:
            failures += self._unassigned_failures(gate, rows)
            failures += self._gate_failures(gate, rows)
        for lk in self.cs.lookups:
            failures += self._lookup_failures(lk, rows)
        failures += self._copy_failures()
        return failures

    def is_satisfied(self) -> bool:
        return not self.verify()

    def assert_satisfied(self) -> None:
        """Raise VerificationError listing every failure, or return quietly."""
        failures = self.verify()
        if failures:
            raise VerificationError(failures)

    def set_cell(self, column: Column | str, row: int, value: int) -> None:
        """Overwrite one materialised cell (advice, fixed or instance), e.g. to tamper with a witness in a test."""
        col = self.column(column) if isinstance(column, str) else column
        v = int(value) % P
        s = _signed_small(v)
        if s is not None and self.values[col].dtype != object:
            self.values[col][row] = s
        else:
            if self.values[col].dtype != object:
                self.values[col] = canonical(self.values[col])
            self.values[col][row] = v
        if col.kind is ColumnKind.INSTANCE:
            inst = self.instances[col.index]
            if row < len(inst):
                if inst.dtype != object and s is None:
                    inst = canonical(inst)
                inst[row] = s if inst.dtype != object else v
                self.instances[col.index] = inst
        self._bounds[col] = abs_bound(self.values[col])
        self.__dict__.pop("_tables", None)

    def column(self, name: str) -> Column:
        """Look a column up by name."""
        for c in self.cs.advice + self.cs.fixed + self.cs.instance:
            if c.name == name:
                return c
        raise KeyError(f"no column named {name!r}")

    def cell(self, column: Column | str, row: int) -> int:
        """The canonical value of one cell."""
        col = self.column(column) if isinstance(column, str) else column
        return self._cell_value(col, row)

    # ------------------------------------------------------------------------------------------------ audit support
    def perturbation_caught(self, column: Column, row: int, value: int) -> bool:
        """Would replacing one advice cell's value by `value` make any constraint fail? (Only nearby rows re-checked.)"""
        ov = _Override(column, row, int(value) % P)
        for gate in self._gates_on(column):
            rows = self._affected_rows(gate.queries(), column, row)
            if len(rows) and self._gate_failures(gate, rows, ov, first_only=True):
                return True
        for lk in self._lookups_on(column):
            rows = self._affected_rows(lk.queries(), column, row)
            if len(rows) and self._lookup_failures(lk, rows, ov, first_only=True):
                return True
        for other_col, other_row, is_instance in self.copy_partners(column, row):
            other = (int(self.instances[other_col.index][other_row]) % P if is_instance
                     else self._cell_value(other_col, other_row))
            if other != ov.value:
                return True
        return False

    def _affected_rows(self, queries: set[Query], column: Column, row: int) -> np.ndarray:
        rots = {q.rotation for q in queries if q.column == column}
        rows = np.array(sorted({(row - r) % self.n for r in rots}), dtype=np.int64)
        return rows[rows < self.usable]

    def _gates_on(self, column: Column) -> list[Gate]:
        cache = self.__dict__.setdefault("_gates_by_col", {})
        if column not in cache:
            cache[column] = [g for g in self.cs.gates if any(q.column == column for q in g.queries())]
        return cache[column]

    def _lookups_on(self, column: Column) -> list[Lookup]:
        cache = self.__dict__.setdefault("_lookups_by_col", {})
        if column not in cache:
            cache[column] = [lk for lk in self.cs.lookups if any(q.column == column for q in lk.queries())]
        return cache[column]

    def copy_partners(self, column: Column, row: int) -> list[tuple[Column, int, bool]]:
        """Cells tied to (column, row) by copy constraints: (column, row, is_instance)."""
        if self._copy_index is None:
            idx: dict[tuple[Column, int], list[tuple[Column, int, bool]]] = {}
            for block in self.layout.copies:
                for a, b in zip(block.left.rows.tolist(), block.right.rows.tolist()):
                    idx.setdefault((block.left.column, a), []).append((block.right.column, b, False))
                    idx.setdefault((block.right.column, b), []).append((block.left.column, a, False))
            for ic in self.layout.instance_copies:
                for a, b in zip(ic.cells.rows.tolist(), ic.rows.tolist()):
                    idx.setdefault((ic.cells.column, a), []).append((ic.column, b, True))
            self._copy_index = idx
        return self._copy_index.get((column, row), [])

    def assigned_advice_cells(self) -> list[tuple[Column, np.ndarray]]:
        """(column, rows) of every assigned advice cell within the usable rows."""
        return [(c, np.nonzero(self.assigned[c][: self.usable])[0]) for c in self.cs.advice]


def _signed_small(v: int) -> int | None:
    s = v - P if v > HALF_P else v
    return s if -INT64_SAFE < s < INT64_SAFE else None


DENSE_MASK_MAX = 1 << 25
"""Tables whose packed key space is at most this many keys are indexed by a boolean mask (≤ 32 MB)."""


class TableIndex:
    """Membership test for tuples in a lookup table, vectorised by packing small tuples into one int64 key."""

    def __init__(self, columns: list[np.ndarray]):
        self.width = len(columns)
        self.small = all(c.dtype == np.int64 for c in columns)
        if self.small and len(columns[0]):
            self.lo = [int(c.min()) for c in columns]
            self.hi = [int(c.max()) for c in columns]
            radices = [h - l + 1 for l, h in zip(self.lo, self.hi)]
            if math.prod(radices) < 2**62:
                self.radices = radices
                self.keys = np.unique(self._keys(columns))
                # a small key space gets a dense membership mask: one gather per query instead of a sort
                self.mask = None
                if math.prod(radices) <= DENSE_MASK_MAX:
                    self.mask = np.zeros(math.prod(radices), dtype=bool)
                    self.mask[self.keys] = True
                return
        self.small = False
        self.radices = None
        self.rows = set(zip(*[canonical(c).tolist() for c in columns]))

    def _keys(self, columns: list[np.ndarray]) -> np.ndarray:
        key = np.zeros(len(columns[0]), dtype=np.int64)
        for c, lo, radix in zip(columns, self.lo, self.radices):
            key = key * radix + (c - lo)
        return key

    def contains(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Boolean per row: is the input tuple a table row?"""
        n = len(inputs[0]) if inputs else 0
        if self.radices is not None and all(a.dtype == np.int64 for a in inputs):
            in_range = np.ones(n, dtype=bool)
            for a, lo, hi in zip(inputs, self.lo, self.hi):
                in_range &= (a >= lo) & (a <= hi)
            found = np.zeros(n, dtype=bool)
            if in_range.any():
                keys = self._keys([a[in_range] for a in inputs])
                found[in_range] = self.mask[keys] if self.mask is not None else np.isin(keys, self.keys)
            return found
        table_rows = self._object_rows()
        tuples = zip(*[canonical(a).tolist() for a in inputs])
        return np.fromiter((t in table_rows for t in tuples), dtype=bool, count=n)

    def _object_rows(self) -> set:
        """The table as a set of canonical tuples (built from the packed keys when a big input meets a small table)."""
        if not hasattr(self, "rows"):
            keys = self.keys.copy()
            decoded = []
            for lo, radix in reversed(list(zip(self.lo, self.radices))):
                decoded.append((keys % radix) + lo)
                keys //= radix
            decoded.reverse()
            self.rows = set(zip(*[[int(v) % P for v in d] for d in decoded]))
        return self.rows
