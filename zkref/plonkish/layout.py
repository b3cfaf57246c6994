"""Regions, assigned cells and the layouter: how `synthesize` places values in the circuit's matrix.

Assignment is vectorised: a call assigns a whole run of cells of one column. Values may be unknown (None), which gives
an analytic layout pass: the same synthesize code records every region's shape, selectors and copy constraints without a
witness, at a cost proportional to the number of calls rather than cells. Regions are placed by a simple floor planner
(halo2's SimpleFloorPlanner idea): a region starts at the first row after every column it uses is free.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

from zkref.plonkish.constraint_system import CircuitError, ConstraintSystem, LookupTable
from zkref.plonkish.expression import Column, ColumnKind, Selector
from zkref.primitives.field import as_field_array, canonical

T = TypeVar("T")
Offsets = int | range | Sequence[int] | np.ndarray


@dataclass
class RegionRecord:
    """A placed (or being placed) region: its name, owning chip, position and shape."""

    index: int
    name: str
    chip: str
    start: int | None = None
    height: int = 0
    columns: set = field(default_factory=set)
    cells: int = 0


@dataclass
class AssignedCells:
    """A run of assigned cells in one column of one region: offsets are relative to the region's start."""

    column: Column
    region: RegionRecord
    offsets: np.ndarray
    values: np.ndarray | None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, idx) -> "AssignedCells":
        if isinstance(idx, (int, np.integer)):
            idx = slice(int(idx), int(idx) + 1 if int(idx) != -1 else None)
        vals = None if self.values is None else self.values[idx]
        return AssignedCells(self.column, self.region, self.offsets[idx], vals)

    @property
    def rows(self) -> np.ndarray:
        """Absolute rows (only valid once the region is placed)."""
        if self.region.start is None:
            raise CircuitError(f"region {self.region.name!r} is not placed yet")
        return self.region.start + self.offsets

    def value(self, i: int = 0) -> int | None:
        return None if self.values is None else int(self.values[i])


@dataclass
class CopyBlock:
    """Elementwise copy constraints between two equally long runs of cells."""

    left: AssignedCells
    right: AssignedCells


@dataclass
class InstanceCopy:
    """Advice (or fixed) cells constrained equal to instance cells at `rows` of an instance column."""

    cells: AssignedCells
    column: Column
    rows: np.ndarray


@dataclass
class CellBlock:
    """Values (or None) assigned at absolute rows of one column; kept sparse until the prover materialises columns."""

    column: Column
    rows: np.ndarray
    values: np.ndarray | None
    region: RegionRecord


@dataclass
class Layout:
    """The synthesised circuit as placed blocks: what a MockProver materialises and what accounting measures."""

    cs: ConstraintSystem
    with_values: bool
    regions: list[RegionRecord] = field(default_factory=list)
    advice: list[CellBlock] = field(default_factory=list)
    fixed: list[CellBlock] = field(default_factory=list)
    selectors: list[tuple[Selector, np.ndarray, RegionRecord]] = field(default_factory=list)
    copies: list[CopyBlock] = field(default_factory=list)
    instance_copies: list[InstanceCopy] = field(default_factory=list)
    tables: dict[str, tuple[LookupTable, list[np.ndarray]]] = field(default_factory=dict)
    next_free: dict[object, int] = field(default_factory=dict)

    def rows_used(self) -> int:
        """Rows occupied by regions, tables and constants (max over all columns)."""
        region_rows = max(self.next_free.values(), default=0)
        table_rows = max((len(v[0]) for _, v in self.tables.values()), default=0)
        return max(region_rows, table_rows)

    def instance_rows(self) -> int:
        return max((int(ic.rows.max()) + 1 for ic in self.instance_copies if len(ic.rows)), default=0)

    def copy_count(self) -> int:
        return sum(len(c.left) for c in self.copies) + sum(len(c.rows) for c in self.instance_copies)


def _offsets(offset: Offsets, length: int | None) -> np.ndarray:
    if isinstance(offset, (int, np.integer)):
        if length is None:
            raise CircuitError("a contiguous assignment needs values or a length")
        return np.arange(int(offset), int(offset) + length, dtype=np.int64)
    arr = np.asarray(offset, dtype=np.int64).reshape(-1)
    if length is not None and len(arr) != length:
        raise CircuitError(f"{len(arr)} offsets for {length} values")
    return arr


class Region:
    """A region being assigned: chips write runs of cells at offsets relative to the region's (future) start."""

    def __init__(self, layouter: "Layouter", record: RegionRecord):
        self._layouter = layouter
        self.record = record
        self._advice: list[tuple[Column, np.ndarray, np.ndarray | None]] = []
        self._fixed: list[tuple[Column, np.ndarray, np.ndarray | None]] = []
        self._selectors: list[tuple[Selector, np.ndarray]] = []
        self._max_offset = -1

    @property
    def with_values(self) -> bool:
        return self._layouter.layout.with_values

    def _touch(self, key: object, offsets: np.ndarray) -> None:
        if len(offsets) == 0:
            return
        if int(offsets.min()) < 0:
            raise CircuitError(f"region {self.record.name!r}: negative offset")
        self.record.columns.add(key)
        self._max_offset = max(self._max_offset, int(offsets.max()))

    def _values(self, values, length: int | None) -> tuple[np.ndarray | None, int | None]:
        if values is None:
            if self.with_values:
                raise CircuitError(f"region {self.record.name!r}: a value is missing while proving with a witness")
            return None, length
        if not self.with_values:
            return None, (length if length is not None else len(np.asarray(values).reshape(-1)))
        arr = as_field_array(values if not np.isscalar(values) else [values]).reshape(-1)
        return arr, len(arr)

    def assign_advice(self, column: Column, offset: Offsets, values=None, *, length: int | None = None
                      ) -> AssignedCells:
        """Assign advice cells: `values` (ints, or None in an analytic pass with `length`) at `offset` onwards."""
        if column.kind is not ColumnKind.ADVICE:
            raise CircuitError(f"{column.name} is not an advice column")
        vals, n = self._values(values, length)
        offs = _offsets(offset, n)
        self._touch(column, offs)
        self._advice.append((column, offs, vals))
        self.record.cells += len(offs)
        return AssignedCells(column, self.record, offs, vals)

    def assign_fixed(self, column: Column, offset: Offsets, values=None, *, length: int | None = None
                     ) -> AssignedCells:
        """Assign fixed (circuit-defined) cells; an analytic pass may skip their values and give a length."""
        if column.kind is not ColumnKind.FIXED:
            raise CircuitError(f"{column.name} is not a fixed column")
        if values is None and self.with_values:
            raise CircuitError(f"region {self.record.name!r}: fixed cells of {column.name} need values")
        arr = None if values is None else as_field_array(values if not np.isscalar(values) else [values]).reshape(-1)
        offs = _offsets(offset, length if arr is None else len(arr))
        self._touch(column, offs)
        self._fixed.append((column, offs, arr))
        return AssignedCells(column, self.record, offs, arr)

    def enable_selector(self, selector: Selector, offset: Offsets, count: int = 1) -> None:
        """Switch a selector on at `offset` (and the next count-1 rows), or at every listed offset."""
        offs = _offsets(offset, count if isinstance(offset, (int, np.integer)) else None)
        self._touch(selector, offs)
        self._selectors.append((selector, offs))

    def constrain_equal(self, left: AssignedCells, right: AssignedCells) -> None:
        """Copy constraints, elementwise between two runs of cells in equality-enabled columns."""
        self._layouter.constrain_equal(left, right)

    def copy_advice(self, cells: AssignedCells, column: Column, offset: Offsets) -> AssignedCells:
        """Assign copies of `cells` into `column` here and constrain them equal (halo2's copy_advice)."""
        copied = self.assign_advice(column, offset, cells.values, length=len(cells))
        self.constrain_equal(cells, copied)
        return copied

    def assign_advice_from_instance(self, instance: Column, rows: Sequence[int] | np.ndarray, column: Column,
                                    offset: Offsets) -> AssignedCells:
        """Assign advice cells from public inputs and constrain them to the instance cells."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        vals = None
        if self.with_values:
            inst = self._layouter.instance_values(instance)
            if len(rows) and int(rows.max()) >= len(inst):
                raise CircuitError(f"instance column {instance.name} has only {len(inst)} values")
            vals = inst[rows]
        cells = self.assign_advice(column, offset, vals, length=len(rows))
        self._layouter.constrain_instance(cells, instance, rows)
        return cells

    def constrain_constant(self, cells: AssignedCells, value: int | Sequence[int]) -> None:
        """Constrain cells to constants held in the circuit's constants column."""
        self._layouter.constrain_constant(cells, value)

    def _close(self) -> None:
        """Place the region and turn its relative assignments into absolute blocks."""
        layout = self._layouter.layout
        start = max((layout.next_free.get(key, 0) for key in self.record.columns), default=0)
        self.record.start = start
        self.record.height = self._max_offset + 1
        for key in self.record.columns:
            layout.next_free[key] = max(layout.next_free.get(key, 0), start + self.record.height)
        for col, offs, vals in self._advice:
            layout.advice.append(CellBlock(col, start + offs, vals, self.record))
        for col, offs, vals in self._fixed:
            layout.fixed.append(CellBlock(col, start + offs, vals, self.record))
        for sel, offs in self._selectors:
            layout.selectors.append((sel, start + offs, self.record))


class Layouter:
    """Places regions and tables and records copy constraints; one per synthesis run."""

    def __init__(self, cs: ConstraintSystem, *, with_values: bool, instances: Sequence[Sequence[int]] | None = None):
        self.layout = Layout(cs, with_values)
        self._instances = [as_field_array(list(col)) for col in (instances or [])]
        self._constants: list[tuple[AssignedCells, np.ndarray]] = []
        self._chip_stack: list[str] = []

    def instance_values(self, column: Column) -> np.ndarray:
        if column.index >= len(self._instances):
            raise CircuitError(f"no values supplied for instance column {column.name}")
        return self._instances[column.index]

    def assign_region(self, name: str, assign: Callable[[Region], T], *, chip: str | None = None) -> T:
        """Run `assign` on a fresh region, then place it below everything already in its columns."""
        record = RegionRecord(len(self.layout.regions), name, chip or (self._chip_stack[-1] if self._chip_stack else ""))
        self.layout.regions.append(record)
        region = Region(self, record)
        result = assign(region)
        region._close()
        return result

    def assign_table(self, table: LookupTable, columns: Sequence[Sequence[int] | np.ndarray]) -> None:
        """Fill a lookup table's fixed columns from row 0; unused rows repeat the first row (as halo2 does)."""
        if len(columns) != len(table.columns):
            raise CircuitError(f"table {table.name!r} has {len(table.columns)} columns, got {len(columns)}")
        arrays = [as_field_array(c).reshape(-1) for c in columns]
        if len({len(a) for a in arrays}) != 1 or len(arrays[0]) == 0:
            raise CircuitError(f"table {table.name!r}: columns must be non-empty and of equal length")
        if table.name in self.layout.tables:
            raise CircuitError(f"table {table.name!r} assigned twice")
        self.layout.tables[table.name] = (table, arrays)
        for col in table.columns:
            self.layout.next_free[col] = max(self.layout.next_free.get(col, 0), len(arrays[0]))

    def constrain_equal(self, left: AssignedCells, right: AssignedCells) -> None:
        cs = self.layout.cs
        for cells in (left, right):
            if cells.column not in cs.equality:
                raise CircuitError(f"copy constraint on {cells.column.name}, which is not equality-enabled")
        if len(left) != len(right):
            raise CircuitError(f"copy constraint between runs of {len(left)} and {len(right)} cells")
        self.layout.copies.append(CopyBlock(left, right))

    def constrain_instance(self, cells: AssignedCells, instance: Column, rows: Sequence[int] | np.ndarray) -> None:
        """Constrain cells to public inputs at `rows` of an instance column."""
        if instance.kind is not ColumnKind.INSTANCE:
            raise CircuitError(f"{instance.name} is not an instance column")
        if cells.column not in self.layout.cs.equality:
            raise CircuitError(f"{cells.column.name} is not equality-enabled")
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) != len(cells):
            raise CircuitError(f"{len(cells)} cells for {len(rows)} instance rows")
        self.layout.instance_copies.append(InstanceCopy(cells, instance, rows))

    def constrain_constant(self, cells: AssignedCells, value: int | Sequence[int]) -> None:
        if not self.layout.cs.constants:
            raise CircuitError("constrain_constant needs a constants column (ConstraintSystem.enable_constant)")
        vals = as_field_array(np.broadcast_to(np.asarray(value, dtype=object), (len(cells),)).copy())
        self._constants.append((cells, vals))

    def chip(self, name: str) -> "_ChipScope":
        """`with layouter.chip("BatchedMac"):` attributes the regions assigned inside to that chip."""
        return _ChipScope(self, name)

    def finish(self) -> Layout:
        """Place pending constants in the constants column and return the completed layout."""
        if self._constants:
            col = self.layout.cs.constants[0]
            # one fixed cell per distinct constant; every constrained cell is copied to its value's cell
            distinct: dict[int, int] = {}
            for _, vals in self._constants:
                for v in canonical(vals).tolist():
                    distinct.setdefault(v, len(distinct))

            def place(region: Region) -> None:
                fixed = region.assign_fixed(col, 0, np.array(list(distinct), dtype=object))
                for cells, vals in self._constants:
                    idx = np.array([distinct[v] for v in canonical(vals).tolist()], dtype=np.int64)
                    self.constrain_equal(cells, fixed[idx])

            self.assign_region("constants", place, chip="constants")
            self._constants = []
        return self.layout


class _ChipScope:
    def __init__(self, layouter: Layouter, name: str):
        self.layouter, self.name = layouter, name

    def __enter__(self):
        self.layouter._chip_stack.append(self.name)
        return self.layouter

    def __exit__(self, *exc):
        self.layouter._chip_stack.pop()
        return False


Config = TypeVar("Config")


class Circuit(Protocol, Generic[Config]):
    """A circuit is `configure` (declare columns and constraints once) plus `synthesize` (lay out and assign)."""

    def configure(self, cs: ConstraintSystem) -> Config: ...

    def synthesize(self, config: Config, layouter: Layouter) -> None: ...


def configure(circuit: Circuit) -> tuple[ConstraintSystem, object]:
    """Run a circuit's configure step on a fresh constraint system."""
    cs = ConstraintSystem()
    config = circuit.configure(cs)
    return cs, config


def synthesize(circuit: Circuit, *, with_values: bool, instances: Sequence[Sequence[int]] | None = None,
               cs: ConstraintSystem | None = None, config=None) -> Layout:
    """Configure (unless given) and synthesise a circuit; with_values=False is the analytic layout pass."""
    if cs is None:
        cs, config = configure(circuit)
    layouter = Layouter(cs, with_values=with_values, instances=instances)
    circuit.synthesize(config, layouter)
    return layouter.finish()
