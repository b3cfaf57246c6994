"""MulGate: the alternative to MulTable lookups — products in a custom gate, operands range-checked by small tables.

Same lane layout as BatchedMac (batched_mac.py) without the product columns:

    first row of a dot product:   acc = Σ_i w_i·a_i                         gate "<name> start"      (degree 3)
    its other rows:               acc = acc[prev] + Σ_i w_i·a_i             gate "<name> accumulate" (degree 3)
    every MAC row, every lane i:  q·w_i ∈ int4 table (16 rows)              lookup "<name> lane i: w is int4"
                                  q·a_i ∈ int8 table (256 rows)             lookup "<name> lane i: a is int8"

So per lane: 2 advice columns and 2 lookups (BatchedMac: 3 advice columns and 1 lookup); the tables are 16 + 256
rows instead of 4096. The report compares the two designs on the same shapes. Activations wider than int8 (up to
int16) keep the product in the gate and are range-checked as two bytes: a = 256·ah + al (gate), ah in the int8
table and al in a 256-row unsigned byte table (3 lookups per lane).
"""
from __future__ import annotations

import numpy as np

from zkref.plonkish.constraint_system import CircuitError, ConstraintSystem
from zkref.plonkish.layout import Layouter
from zkref.chips.batched_mac import LaneMac, LaneMacConfig, _declare_digits, _declare_lanes, _sum, load_table, shared_table
from zkref.primitives.ranges import INT8, check_activation_bits

RANGE_TABLES = {**{f"int{b}": np.arange(-(1 << (b - 1)), 1 << (b - 1), dtype=np.int64) for b in (4, 8, 12, 16)},
                "uint8": np.arange(0, 256, dtype=np.int64)}
"""The one-column range tables MulGate looks operands up in (shared between the chips of one circuit): int12 weights
take a 4096-row table, int16 weights a 65,536-row one (k ≥ 17)."""


class MulGate(LaneMac):
    """Products w·a in the accumulate gate; w and a range-checked by lookups into int4 / int8 tables."""

    chip_name = "MulGate"

    @staticmethod
    def configure(cs: ConstraintSystem, lanes: int = 8, *, padding: bool = True, tied_weights: bool = True,
                  fixed_weights: bool = False, weight_bits: int = 4, activation_bits: int = 8,
                  name: str = "mac") -> LaneMacConfig:
        """Declare lane columns, the degree-3 start/accumulate gates and two range lookups per lane (weights
        int4, or int8 with weight_bits=8: then one int8 table range-checks both operands); activations of 9..16
        bits are range-checked as a signed high byte and an unsigned low byte (three lookups per lane)."""
        if weight_bits not in (4, 8, 12, 16):
            raise CircuitError(f"MulGate multiplies int4, int8, int12 or int16 weights, not int{weight_bits}")
        wide = check_activation_bits(activation_bits) > INT8.bits
        lanes, w, a, p, acc, q_start, q_cont, zero = _declare_lanes(cs, name, lanes, products=False, padding=padding,
                                                                   tied_weights=tied_weights,
                                                                   fixed_weights=fixed_weights)
        int8 = shared_table(cs, "int8", ["v"])
        int4 = shared_table(cs, f"int{weight_bits}", ["v"]) if weight_bits != 8 else int8
        total = _sum([w[i].cur() * a[i].cur() for i in range(lanes)])
        cs.create_gate(f"{name} start", [
            ("first row: acc = Σ w·a", q_start.expr() * (acc.cur() - total)),
        ])
        cs.create_gate(f"{name} accumulate", [
            ("next rows: acc = acc[prev] + Σ w·a", q_cont.expr() * (acc.cur() - acc.prev() - total)),
        ])
        q = q_start.expr() + q_cont.expr()
        a_hi = a_lo = ()
        uint8 = None
        if wide:
            a_hi, a_lo = _declare_digits(cs, name, a, q)
            uint8 = shared_table(cs, "uint8", ["v"])
        for i in range(lanes):
            cs.lookup(f"{name} lane {i}: w is int{weight_bits}", [q * w[i].cur()], int4)
            if wide:
                cs.lookup(f"{name} lane {i}: ah is int8", [q * a_hi[i].cur()], int8)
                cs.lookup(f"{name} lane {i}: al is uint8", [q * a_lo[i].cur()], uint8)
            else:
                cs.lookup(f"{name} lane {i}: a is int8", [q * a[i].cur()], int8)
        tables = tuple(dict.fromkeys(t for t in (int4, int8, uint8) if t is not None))
        return LaneMacConfig(name, lanes, w, a, (), acc, q_start, q_cont, zero, tables, a_hi=a_hi, a_lo=a_lo)

    def load(self, layouter: Layouter) -> None:
        for table in self.config.tables:
            load_table(layouter, table, [RANGE_TABLES[table.name]])
