"""MulGate: the alternative to MulTable lookups — products in a custom gate, operands range-checked by small tables.

Same lane layout as BatchedMac (batched_mac.py) without the product columns:

    first row of a dot product:   acc = Σ_i w_i·a_i                         gate "<name> start"      (degree 3)
    its other rows:               acc = acc[prev] + Σ_i w_i·a_i             gate "<name> accumulate" (degree 3)
    every MAC row, every lane i:  q·w_i ∈ int4 table (16 rows)              lookup "<name> lane i: w is int4"
                                  q·a_i ∈ int8 table (256 rows)             lookup "<name> lane i: a is int8"

So per lane: 2 advice columns and 2 lookups (BatchedMac: 3 advice columns and 1 lookup); the tables are 16 + 256
rows instead of 4096. The report compares the two designs on the same shapes.
"""
from __future__ import annotations

import numpy as np

from zkref.plonkish.constraint_system import CircuitError, ConstraintSystem
from zkref.plonkish.layout import Layouter
from zkref.chips.batched_mac import LaneMac, LaneMacConfig, _declare_lanes, _sum
from zkref.primitives.ranges import A_MAX, A_MIN, W_MAX, W_MIN


class MulGate(LaneMac):
    """Products w·a in the accumulate gate; w and a range-checked by lookups into int4 / int8 tables."""

    chip_name = "MulGate"

    @staticmethod
    def configure(cs: ConstraintSystem, lanes: int = 8, *, padding: bool = True, tied_weights: bool = True,
                  fixed_weights: bool = False, weight_bits: int = 4, name: str = "mac") -> LaneMacConfig:
        """Declare lane columns, the degree-3 start/accumulate gates and two range lookups per lane (weights
        int4, or int8 with weight_bits=8: then one int8 table range-checks both operands)."""
        if weight_bits not in (4, 8):
            raise CircuitError(f"MulGate multiplies int4 or int8 weights, not int{weight_bits}")
        lanes, w, a, p, acc, q_start, q_cont, zero = _declare_lanes(cs, name, lanes, products=False, padding=padding,
                                                                   tied_weights=tied_weights,
                                                                   fixed_weights=fixed_weights)
        int8 = cs.lookup_table("int8", ["v"])
        int4 = cs.lookup_table("int4", ["v"]) if weight_bits == 4 else int8
        total = _sum([w[i].cur() * a[i].cur() for i in range(lanes)])
        cs.create_gate(f"{name} start", [
            ("first row: acc = Σ w·a", q_start.expr() * (acc.cur() - total)),
        ])
        cs.create_gate(f"{name} accumulate", [
            ("next rows: acc = acc[prev] + Σ w·a", q_cont.expr() * (acc.cur() - acc.prev() - total)),
        ])
        q = q_start.expr() + q_cont.expr()
        for i in range(lanes):
            cs.lookup(f"{name} lane {i}: w is int{weight_bits}", [q * w[i].cur()], int4)
            cs.lookup(f"{name} lane {i}: a is int8", [q * a[i].cur()], int8)
        return LaneMacConfig(name, lanes, w, a, (), acc, q_start, q_cont, zero, (int8,) if int4 is int8 else (int4, int8))

    def load(self, layouter: Layouter) -> None:
        tables = self.config.tables
        layouter.assign_table(tables[-1], [np.arange(A_MIN, A_MAX + 1, dtype=np.int64)])
        if len(tables) == 2:
            layouter.assign_table(tables[0], [np.arange(W_MIN, W_MAX + 1, dtype=np.int64)])
