"""Small example circuits that exercise every part of the constraint system (used by the demo, tests and benchmarks)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zkref.plonkish.constraint_system import ConstraintSystem, LookupTable
from zkref.plonkish.expression import Column, Selector
from zkref.primitives.field import P
from zkref.plonkish.layout import Layouter, Region


def fibonacci(n: int, a: int = 1, b: int = 1) -> list[int]:
    """The first n terms of the Fibonacci-like sequence starting a, b, modulo p."""
    seq = [a % P, b % P]
    while len(seq) < n:
        seq.append((seq[-1] + seq[-2]) % P)
    return seq[:n]


@dataclass(frozen=True)
class FibonacciConfig:
    f: Column
    q_step: Selector
    out: Column


@dataclass
class FibonacciCircuit:
    """f[i+2] = f[i+1] + f[i] in one advice column (rotations prev/cur/next); f0, f1 and f[n-1] are public."""

    n: int = 10
    a: int = 1
    b: int = 1

    def configure(self, cs: ConstraintSystem) -> FibonacciConfig:
        f = cs.advice_column("f", equality=True)
        q = cs.selector("q_fib")
        out = cs.instance_column("public")
        cs.create_gate("fibonacci", [("f[next] = f + f[prev]", q.expr() * (f.next() - f.cur() - f.prev()))])
        return FibonacciConfig(f, q, out)

    def witness(self) -> list[int]:
        return fibonacci(self.n, self.a, self.b)

    def public_inputs(self) -> list[list[int]]:
        seq = self.witness()
        return [[seq[0], seq[1], seq[-1]]]

    def synthesize(self, config: FibonacciConfig, layouter: Layouter) -> None:
        seq = self.witness() if layouter.layout.with_values else None

        def assign(region: Region):
            cells = region.assign_advice(config.f, 0, seq, length=self.n)
            region.enable_selector(config.q_step, 1, count=self.n - 2)
            return cells

        cells = layouter.assign_region("fibonacci", assign, chip="Fibonacci")
        layouter.constrain_instance(cells[np.array([0, 1, self.n - 1])], config.out, [0, 1, 2])


@dataclass(frozen=True)
class RangeSumConfig:
    value: Column
    acc: Column
    q_sum: Selector
    q_range: Selector
    range_table: LookupTable
    total: Column


@dataclass
class RangeSumCircuit:
    """A running sum of values that are range-checked by a lookup into [0, 2^bits); the total is public.

    Rows: value[i] (looked up), acc[i+1] = acc[i] + value[i], acc[0] constrained to the constant 0.
    """

    values: tuple[int, ...] = (3, 1, 4, 1, 5, 9, 2, 6)
    bits: int = 4

    def configure(self, cs: ConstraintSystem) -> RangeSumConfig:
        value = cs.advice_column("value")
        acc = cs.advice_column("acc", equality=True)
        q_sum = cs.selector("q_sum")
        q_range = cs.selector("q_range")
        table = cs.lookup_table("range", ["v"])
        constants = cs.fixed_column("constants")
        cs.enable_constant(constants)
        total = cs.instance_column("total")
        cs.create_gate("running sum", [("acc[next] = acc + value", q_sum.expr() * (acc.next() - acc.cur() - value.cur()))])
        cs.lookup("value in range", [q_range.expr() * value.cur()], table)
        return RangeSumConfig(value, acc, q_sum, q_range, table, total)

    def total(self) -> int:
        return sum(self.values) % P

    def public_inputs(self) -> list[list[int]]:
        return [[self.total()]]

    def synthesize(self, config: RangeSumConfig, layouter: Layouter) -> None:
        n = len(self.values)
        layouter.assign_table(config.range_table, [np.arange(1 << self.bits)])
        known = layouter.layout.with_values
        vals = np.array(self.values, dtype=np.int64) if known else None
        acc = np.concatenate([[0], np.cumsum(vals)]) if known else None

        def assign(region: Region):
            region.assign_advice(config.value, 0, vals, length=n)
            region.enable_selector(config.q_range, 0, count=n)
            region.enable_selector(config.q_sum, 0, count=n)
            accs = region.assign_advice(config.acc, 0, acc, length=n + 1)
            region.constrain_constant(accs[0], 0)
            return accs

        with layouter.chip("RangeSum"):
            accs = layouter.assign_region("running sum", assign)
        layouter.constrain_instance(accs[n], config.total, [0])


@dataclass(frozen=True)
class SquareConfig:
    x: Column
    y: Column
    q: Selector
    out: Column


@dataclass
class SquaresCircuit:
    """y[i] = x[i]^2 for public x. `broken=True` forgets the selector on the last row,

    planting an under-constrained cell (y[-1]) that the audit must find — the classic "off-by-one selector" bug.
    """

    xs: tuple[int, ...] = (2, 3, 5, 7)
    broken: bool = False

    def configure(self, cs: ConstraintSystem) -> SquareConfig:
        x = cs.advice_column("x", equality=True)
        y = cs.advice_column("y")
        q = cs.selector("q_square")
        out = cs.instance_column("xs")
        cs.create_gate("square", [("y = x * x", q.expr() * (y.cur() - x.cur() * x.cur()))])
        return SquareConfig(x, y, q, out)

    def public_inputs(self) -> list[list[int]]:
        return [list(self.xs)]

    def synthesize(self, config: SquareConfig, layouter: Layouter) -> None:
        n = len(self.xs)
        known = layouter.layout.with_values

        def assign(region: Region):
            xs = region.assign_advice_from_instance(config.out, range(n), config.x, 0)
            ys = np.array(self.xs, dtype=object) ** 2 if known else None
            region.assign_advice(config.y, 0, ys, length=n)
            region.enable_selector(config.q, 0, count=n - 1 if self.broken else n)
            return xs

        layouter.assign_region("squares", assign, chip="Squares")


@dataclass(frozen=True)
class LookupBenchConfig:
    inputs: tuple[Column, ...]
    acc: Column
    q: Selector
    table: LookupTable


@dataclass
class LookupBenchCircuit:
    """A stress circuit: `lookups` byte-range lookups per row and a degree-3 running-sum gate acc' = acc + a0*a1."""

    rows: int
    lookups: int = 8
    seed: int = 0

    def configure(self, cs: ConstraintSystem) -> LookupBenchConfig:
        inputs = tuple(cs.advice_column(f"a{i}") for i in range(self.lookups))
        acc = cs.advice_column("acc")
        q = cs.selector("q")
        table = cs.lookup_table("byte", ["v"])
        for i, col in enumerate(inputs):
            cs.lookup(f"a{i} is a byte", [q.expr() * col.cur()], table)
        cs.create_gate("mac", [("acc[next] = acc + a0*a1", q.expr() * (acc.next() - acc.cur() - inputs[0].cur() * inputs[1 % self.lookups].cur()))])
        return LookupBenchConfig(inputs, acc, q, table)

    def synthesize(self, config: LookupBenchConfig, layouter: Layouter) -> None:
        n = self.rows
        layouter.assign_table(config.table, [np.arange(256)])
        known = layouter.layout.with_values
        rng = np.random.default_rng(self.seed)
        data = rng.integers(0, 256, size=(self.lookups, n)) if known else [None] * self.lookups

        def assign(region: Region):
            for col, vals in zip(config.inputs, data):
                region.assign_advice(col, 0, vals, length=n)
            acc = None
            if known:
                acc = np.concatenate([[0], np.cumsum(data[0] * data[1 % self.lookups])])
            region.assign_advice(config.acc, 0, acc, length=n + 1)
            region.enable_selector(config.q, 0, count=n)

        layouter.assign_region("bench", assign, chip="LookupBench")
