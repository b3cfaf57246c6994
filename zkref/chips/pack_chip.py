"""Packing chip: proves that a field element packs small signed values (int4/int8), so one hash absorbs many of them.

For an element holding digits v_0..v_{m-1} (little-endian, each v in [-2^(b-1), 2^(b-1)), stored biased as
u = v + 2^(b-1) in [0, 2^b)), the rows hold the digits highest first and a Horner accumulator:
    row 0:  acc = u_{m-1}                       gate "pack first digit"
    row j:  acc = acc[prev] · 2^b + u_{m-1-j}    gate "pack horner step"
    every row: u in [0, 2^b)                    lookup "pack digit range"
The last row's acc is the packed element. m·b ≤ 252 < log2(p), so packing is injective and no reduction mod p occurs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zkref.plonkish.constraint_system import CircuitError, ConstraintSystem, LookupTable
from zkref.plonkish.expression import Column, Selector
from zkref.primitives.field import signed
from zkref.plonkish.layout import AssignedCells, Layouter, Region
from zkref.primitives.packing import pack
from zkref.chips.poseidon_chip import message_positions


@dataclass(frozen=True)
class PackConfig:
    digit: Column
    acc: Column
    q_first: Selector
    q_step: Selector
    q_range: Selector
    table: LookupTable
    bits: int


class PackChip:
    """Packs runs of small signed cells into field-element cells, `252 // bits` values per element."""

    def __init__(self, config: PackConfig):
        self.config = config
        self.per_element = 252 // config.bits

    @staticmethod
    def configure(cs: ConstraintSystem, bits: int, prefix: str = "pack") -> PackConfig:
        if not 1 <= bits <= 16:
            raise CircuitError(f"packing supports 1..16-bit digits, got {bits}")
        digit = cs.advice_column(f"{prefix}.digit", equality=True)
        acc = cs.advice_column(f"{prefix}.acc", equality=True)
        q_first, q_step, q_range = cs.selector(f"{prefix}.q_first"), cs.selector(f"{prefix}.q_step"), \
            cs.selector(f"{prefix}.q_range")
        table = cs.lookup_table(f"{prefix}.range{bits}", ["u"])
        bias = 1 << (bits - 1)
        u = digit.cur() + bias
        # two gates, so the first row of an element never queries the row above it
        cs.create_gate(f"{prefix} first digit", [("acc = u", q_first.expr() * (acc.cur() - u))])
        cs.create_gate(f"{prefix} horner step",
                       [("acc = acc[prev]·2^b + u", q_step.expr() * (acc.cur() - (acc.prev() * (1 << bits) + u)))])
        cs.lookup(f"{prefix} digit range", [q_range.expr() * u], table)
        return PackConfig(digit, acc, q_first, q_step, q_range, table, bits)

    def load_table(self, layouter: Layouter) -> None:
        layouter.assign_table(self.config.table, [np.arange(1 << self.config.bits)])

    def elements_for(self, count: int) -> int:
        return -(-count // self.per_element)

    def pack_cells(self, layouter: Layouter, cells: list[AssignedCells], name: str = "pack",
                   positions: list[np.ndarray] | None = None) -> AssignedCells:
        """Copy the values in, prove the packing, and return the packed-element cells (in order).

        Values are packed in the order given, or at `positions` (value indices per run, a permutation of 0..n-1).
        """
        cfg = self.config
        n = sum(len(c) for c in cells)
        if n == 0:
            raise CircuitError("nothing to pack")
        index = message_positions(cells, positions)
        known = all(c.values is not None for c in cells)
        values = None
        if known:
            values = np.empty(n, dtype=object)
            values[np.concatenate(index)] = [signed(v) for c in cells for v in c.values]  # digits are small signed ints
        n_el = self.elements_for(n)
        # digit order in rows: per element, highest digit first
        order = np.concatenate([np.arange(min((e + 1) * self.per_element, n) - 1, e * self.per_element - 1, -1)
                                for e in range(n_el)])
        firsts = np.concatenate([[0], np.cumsum([min(self.per_element, n - e * self.per_element)
                                                 for e in range(n_el)])[:-1]])
        lasts = np.concatenate([firsts[1:] - 1, [n - 1]])

        def assign(region: Region) -> AssignedCells:
            row_of_value = np.zeros(n, dtype=np.int64)
            row_of_value[order] = np.arange(n)  # the row holding each value index
            for run, idx in zip(cells, index):
                region.copy_advice(run, cfg.digit, row_of_value[idx])
            acc = None
            if known:
                bias = 1 << (cfg.bits - 1)
                u = [int(values[i]) + bias for i in order]
                acc = np.empty(n, dtype=object)
                for e in range(n_el):
                    a = 0
                    for row in range(int(firsts[e]), int(lasts[e]) + 1):
                        a = a * (1 << cfg.bits) + u[row]
                        acc[row] = a
            accs = region.assign_advice(cfg.acc, 0, acc, length=n)
            region.enable_selector(cfg.q_range, 0, count=n)
            region.enable_selector(cfg.q_first, firsts)
            steps = np.setdiff1d(np.arange(n), firsts)
            region.enable_selector(cfg.q_step, steps)
            return accs[lasts]

        with layouter.chip("Pack"):
            out = layouter.assign_region(name, assign)
        if known:
            expected = pack([int(v) for v in values], cfg.bits)
            got = [int(v) for v in out.values]
            if [int(v) for v in expected] != got:
                raise CircuitError("packing chip disagrees with zkref.packing.pack (layout bug)")
        return out
