"""Typed verification failures: each names the constraint, lookup or copy that broke, where, and with what values."""
from __future__ import annotations

from dataclasses import dataclass

from zkref.primitives.field import signed


@dataclass(frozen=True)
class CellRef:
    """A cell by column and absolute row, with the region (name, offset) that assigned it when known."""

    column: str
    row: int
    region: str | None = None
    offset: int | None = None

    def __str__(self) -> str:
        where = f" in region {self.region!r} offset {self.offset}" if self.region is not None else ""
        return f"{self.column}@row {self.row}{where}"


class VerifyFailure:
    """Base class of MockProver failures."""

    kind: str = "failure"

    def describe(self) -> str:
        return str(self)


@dataclass(frozen=True)
class ConstraintNotSatisfied(VerifyFailure):
    """A gate's named constraint evaluated to a non-zero value."""

    gate: str
    constraint: str
    region: str | None
    offset: int | None
    row: int
    value: int
    expression: str
    cell_values: tuple[tuple[str, int], ...]
    kind = "constraint"

    def __str__(self) -> str:
        where = f"region {self.region!r} offset {self.offset}" if self.region is not None else "outside any region"
        cells = ", ".join(f"{k} = {signed(v)}" for k, v in self.cell_values)
        return (f"Constraint '{self.constraint}' of gate '{self.gate}' is not satisfied at row {self.row} ({where}):\n"
                f"    {self.expression} = {signed(self.value)} (should be 0)\n    where {cells}")


@dataclass(frozen=True)
class LookupFailure(VerifyFailure):
    """An input tuple of a named lookup is not a row of its table."""

    lookup: str
    table: str
    region: str | None
    offset: int | None
    row: int
    inputs: tuple[int, ...]
    kind = "lookup"

    def __str__(self) -> str:
        where = f"region {self.region!r} offset {self.offset}" if self.region is not None else "outside any region"
        vals = ", ".join(str(signed(v)) for v in self.inputs)
        return f"Lookup '{self.lookup}' failed at row {self.row} ({where}): ({vals}) is not in table '{self.table}'"


@dataclass(frozen=True)
class CopyConstraintFailure(VerifyFailure):
    """Two cells tied by a copy constraint hold different values."""

    left: CellRef
    right: CellRef
    left_value: int
    right_value: int
    kind = "copy"

    def __str__(self) -> str:
        return (f"Copy constraint failed: {self.left} = {signed(self.left_value)} "
                f"but {self.right} = {signed(self.right_value)}")


@dataclass(frozen=True)
class InstanceMismatch(VerifyFailure):
    """A cell constrained to a public input differs from it."""

    instance_column: str
    instance_row: int
    expected: int
    cell: CellRef
    actual: int
    kind = "instance"

    def __str__(self) -> str:
        return (f"Instance mismatch: public input {self.instance_column}[{self.instance_row}] = {signed(self.expected)} "
                f"but {self.cell} = {signed(self.actual)}")


@dataclass(frozen=True)
class CellNotAssigned(VerifyFailure):
    """A gate is active on a row and queries an advice cell that was never assigned."""

    gate: str
    region: str | None
    offset: int | None
    gate_row: int
    column: str
    row: int
    kind = "unassigned"

    def __str__(self) -> str:
        where = f"region {self.region!r} offset {self.offset}" if self.region is not None else "outside any region"
        return (f"Gate '{self.gate}' is active at row {self.gate_row} ({where}) and queries {self.column}@row {self.row}, "
                f"which was never assigned")


@dataclass(frozen=True)
class NotEnoughRows(VerifyFailure):
    """The layout (or the public inputs) need more rows than 2^k leaves usable after blinding."""

    needed: int
    usable: int
    k: int
    what: str = "rows"
    kind = "rows"

    def __str__(self) -> str:
        return (f"Not enough rows for k={self.k}: {self.what} need {self.needed} rows but only {self.usable} are usable "
                f"(2^{self.k} minus blinding rows)")
