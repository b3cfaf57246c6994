"""MulTable: the fixed lookup table of every int4 × int8 product (w, a, w·a), w ∈ [-8, 7], a ∈ [-128, 127].

A lookup (q·w, q·a, q·p) into it proves p = w·a *and* range-checks w (int4) and a (int8) in one argument. It has
16 · 256 = 4096 rows, so any circuit using it has at least 4096 rows (k ≥ 13 once blinding rows are added). The row
(0, 0, 0) is in the table, which is what lets rows with the selector off pass.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from zkref.plonkish.constraint_system import ConstraintSystem, LookupTable
from zkref.plonkish.layout import Layouter
from zkref.primitives.ranges import A_MAX, A_MIN, INT4, INT8, W_MAX, W_MIN

ROWS = INT4.size * INT8.size
"""16 · 256 = 4096 rows."""


@dataclass(frozen=True)
class MulTableConfig:
    """The table's three fixed columns (w, a, p)."""

    table: LookupTable


@functools.cache
def mul_table_columns() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The table contents, w-major: rows (w, a, w·a) for w in [-8, 7], a in [-128, 127] (4096 rows)."""
    w, a = np.meshgrid(np.arange(W_MIN, W_MAX + 1, dtype=np.int64), np.arange(A_MIN, A_MAX + 1, dtype=np.int64),
                       indexing="ij")
    w, a = w.reshape(-1), a.reshape(-1)
    for arr in (w, a):
        arr.setflags(write=False)
    p = w * a
    p.setflags(write=False)
    return w, a, p


@functools.cache
def low_nibble_table_columns() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The low-digit table of int8 weights, l-major: rows (l, a, l·a) for l in [0, 15], a in [-128, 127] (4096 rows).

    An int8 weight w is 16·h + l with h = w >> 4 in [-8, 7] (MulTable's signed digit) and l = w & 15 in [0, 15].
    """
    l, a = np.meshgrid(np.arange(0, 16, dtype=np.int64), np.arange(A_MIN, A_MAX + 1, dtype=np.int64), indexing="ij")
    l, a = l.reshape(-1), a.reshape(-1)
    p = l * a
    for arr in (l, a, p):
        arr.setflags(write=False)
    return l, a, p


@functools.cache
def digit_table_columns(w_signed: bool, a_signed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 4096-row product table of one weight digit by one activation digit, w-major: rows (w, a, w·a) for w a signed
    int4 [-8, 7] or unsigned nibble [0, 15] digit and a a signed int8 [-128, 127] or unsigned byte [0, 255] digit.

    (signed, signed) is `mul_table_columns`, (unsigned, signed) `low_nibble_table_columns`; the unsigned-byte tables
    multiply the low byte of an activation wider than int8 (a = 256·ah + al with al in [0, 255], ah signed).
    """
    w = np.arange(W_MIN, W_MAX + 1, dtype=np.int64) if w_signed else np.arange(0, 16, dtype=np.int64)
    a = np.arange(A_MIN, A_MAX + 1, dtype=np.int64) if a_signed else np.arange(0, 256, dtype=np.int64)
    w, a = (v.reshape(-1) for v in np.meshgrid(w, a, indexing="ij"))
    p = w * a
    for arr in (w, a, p):
        arr.setflags(write=False)
    return w, a, p


class MulTable:
    """Declares and loads the multiplication table; one per circuit, shared by every BatchedMac using it."""

    ROWS = ROWS

    @staticmethod
    def configure(cs: ConstraintSystem, name: str = "mul") -> MulTableConfig:
        """Declare the table (three fixed columns named `name.w`, `name.a`, `name.p`)."""
        return MulTableConfig(cs.lookup_table(name, ["w", "a", "p"]))

    @staticmethod
    def load(layouter: Layouter, config: MulTableConfig) -> None:
        """Fill the table's 4096 rows (fixed: identical with or without a witness)."""
        layouter.assign_table(config.table, list(mul_table_columns()))
