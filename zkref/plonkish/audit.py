"""Under-constrained audit: perturb advice cells of a satisfied circuit one at a time and report changes nobody catches.

A cell whose value can change while every gate, lookup, copy and instance constraint still holds is free for a
malicious prover: either a bug (a missing selector, a forgotten copy) or a cell the statement never uses.
Each cell is tried with two perturbations (v+1 and a seeded random field element); it is flagged if either survives.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from zkref.plonkish.layout import Circuit
from zkref.primitives.field import P
from zkref.plonkish.mock_prover import MockProver, VerificationError


@dataclass(frozen=True)
class UnconstrainedCell:
    """An advice cell whose perturbation `to` went unnoticed."""

    column: str
    row: int
    region: str | None
    offset: int | None
    value: int
    to: int

    def __str__(self) -> str:
        where = f"region {self.region!r} offset {self.offset}" if self.region is not None else "outside any region"
        return f"{self.column}@row {self.row} ({where}): {self.value} -> {self.to} is not caught"


@dataclass
class AuditReport:
    """What the audit checked and which cells are under-constrained."""

    circuit: str
    cells_total: int
    cells_checked: int
    sampled: bool
    seed: int
    unconstrained: list[UnconstrainedCell] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unconstrained

    def render(self, limit: int = 50) -> str:
        scope = f"a random sample of {self.cells_checked} (seed {self.seed})" if self.sampled else "all"
        head = (f"audit of {self.circuit}: {scope} of {self.cells_total} assigned advice cells perturbed; "
                f"{len(self.unconstrained)} under-constrained")
        lines = [head] + [f"  {c}" for c in self.unconstrained[:limit]]
        if len(self.unconstrained) > limit:
            lines.append(f"  ... and {len(self.unconstrained) - limit} more")
        return "\n".join(lines)


def audit(circuit: Circuit, instances: Sequence[Sequence[int]] = (), *, k: int | None = None,
          sample: int | None = None, seed: int = 0,
          progress: Callable[[int, int], None] | None = None) -> AuditReport:
    """Audit `circuit` (which must be satisfied with `instances`); `sample` limits the check to that many random cells."""
    prover = MockProver(circuit, instances, k=k)
    failures = prover.verify()
    if failures:
        raise VerificationError(failures)
    return audit_prover(prover, name=type(circuit).__name__, sample=sample, seed=seed, progress=progress)


def audit_prover(prover: MockProver, *, name: str = "circuit", sample: int | None = None, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> AuditReport:
    """Audit an already-satisfied MockProver."""
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise ValueError(f"sample must be a positive number of cells, got {sample!r}")
    cells = [(col, int(r)) for col, rows in prover.assigned_advice_cells() for r in rows]
    total = len(cells)
    rng = random.Random(seed)
    sampled = sample is not None and sample < total
    if sampled:
        cells = [cells[i] for i in sorted(rng.sample(range(total), sample))]
    report = AuditReport(name, total, len(cells), sampled, seed)
    for i, (col, row) in enumerate(cells):
        value = prover.cell(col, row)
        for to in ((value + 1) % P, rng.randrange(1, P)):
            if to == value:
                continue
            if not prover.perturbation_caught(col, row, to):
                ref = prover._cell_ref(col, row)
                report.unconstrained.append(UnconstrainedCell(col.name, row, ref.region, ref.offset, value, to))
                break
        if progress is not None:
            progress(i + 1, len(cells))
    return report

