"""Columns, selectors and polynomial expressions over column queries (cur / next / prev / any rotation).

Expressions are small immutable trees. They evaluate over a vector of rows at once: in int64 when a bound on every
intermediate value proves the integer result is exact (|value| < 2^63, hence < p/2, so "zero mod p" means "zero"),
otherwise over Python ints modulo p.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from zkref.primitives.field import P, signed, to_field

INT64_LIMIT = 2**63 - 1


class ColumnKind(enum.Enum):
    ADVICE = "advice"
    FIXED = "fixed"
    INSTANCE = "instance"


@dataclass(frozen=True)
class Column:
    """A column of the circuit's matrix. Advice is the prover's witness, fixed is part of the circuit, instance is public."""

    kind: ColumnKind
    index: int
    name: str

    def query(self, rotation: int = 0) -> "Query":
        return Query(self, rotation)

    def cur(self) -> "Query":
        return Query(self, 0)

    def next(self) -> "Query":
        return Query(self, 1)

    def prev(self) -> "Query":
        return Query(self, -1)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Selector:
    """A simple selector: a fixed 0/1 column switched on per row by regions (degree 1 in gates)."""

    index: int
    name: str

    def expr(self) -> "SelectorExpr":
        return SelectorExpr(self)

    def __str__(self) -> str:
        return self.name


class Expression:
    """Base of the expression tree; arithmetic operators build new nodes."""

    def __add__(self, other: "ExprLike") -> "Expression":
        return Sum(self, lift(other))

    def __radd__(self, other: "ExprLike") -> "Expression":
        return Sum(lift(other), self)

    def __sub__(self, other: "ExprLike") -> "Expression":
        return Sum(self, Negated(lift(other)))

    def __rsub__(self, other: "ExprLike") -> "Expression":
        return Sum(lift(other), Negated(self))

    def __mul__(self, other: "ExprLike") -> "Expression":
        other = lift(other)
        if isinstance(other, Constant):
            return Scaled(self, other.value)
        return Product(self, other)

    def __rmul__(self, other: "ExprLike") -> "Expression":
        other = lift(other)
        if isinstance(other, Constant):
            return Scaled(self, other.value)
        return Product(other, self)

    def __neg__(self) -> "Expression":
        return Negated(self)

    # -- structure -----------------------------------------------------------------------------------------------
    def children(self) -> tuple["Expression", ...]:
        return ()

    def degree(self) -> int:
        raise NotImplementedError

    def walk(self):
        """All nodes, depth first."""
        yield self
        for c in self.children():
            yield from c.walk()

    def queries(self) -> set["Query"]:
        return {n for n in self.walk() if isinstance(n, Query)}

    def selectors(self) -> set[Selector]:
        return {n.selector for n in self.walk() if isinstance(n, SelectorExpr)}

    def gating_selectors(self) -> set[Selector]:
        """Selectors s such that this expression is 0 on every row where s is off (a factor of every term)."""
        if isinstance(self, SelectorExpr):
            return {self.selector}
        if isinstance(self, Product):
            return self.a.gating_selectors() | self.b.gating_selectors()
        if isinstance(self, (Negated, Scaled)):
            return self.a.gating_selectors()
        if isinstance(self, Sum):
            return self.a.gating_selectors() & self.b.gating_selectors()
        return set()

    # -- evaluation ----------------------------------------------------------------------------------------------
    def bound(self, column_bound: Callable[["Query"], int]) -> int:
        """Upper bound on |value| (signed representatives) given bounds on every query."""
        raise NotImplementedError

    def evaluate(self, leaf: Callable[["Expression"], np.ndarray], exact_int64: bool) -> np.ndarray:
        """Evaluate over a row vector. `leaf` supplies arrays for Query / SelectorExpr nodes in the chosen mode."""
        raise NotImplementedError

    def render(self, value_of: Callable[["Expression"], str] | None = None) -> str:
        """Human-readable form; `value_of` may annotate leaves with their values (used in failure reports)."""
        raise NotImplementedError


ExprLike = Expression | int


def lift(x: ExprLike) -> Expression:
    """Turn an int into a Constant; pass expressions through."""
    if isinstance(x, Expression):
        return x
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return Constant(to_field(int(x)))
    raise TypeError(f"cannot use {type(x).__name__} in a circuit expression")


@dataclass(frozen=True, eq=False)
class Constant(Expression):
    value: int

    def degree(self) -> int:
        return 0

    def bound(self, column_bound) -> int:
        return abs(signed(self.value))

    def evaluate(self, leaf, exact_int64):
        return np.int64(signed(self.value)) if exact_int64 else self.value

    def render(self, value_of=None) -> str:
        return str(signed(self.value))


@dataclass(frozen=True)
class Query(Expression):
    """The value of `column` at (current row + rotation)."""

    column: Column
    rotation: int = 0

    def degree(self) -> int:
        return 1

    def bound(self, column_bound) -> int:
        return column_bound(self)

    def evaluate(self, leaf, exact_int64):
        return leaf(self)

    def render(self, value_of=None) -> str:
        rot = {0: "", 1: "[next]", -1: "[prev]"}.get(self.rotation, f"[{self.rotation:+d}]")
        text = f"{self.column.name}{rot}"
        return f"{text}={value_of(self)}" if value_of else text


@dataclass(frozen=True)
class SelectorExpr(Expression):
    selector: Selector

    def degree(self) -> int:
        return 1

    def bound(self, column_bound) -> int:
        return 1

    def evaluate(self, leaf, exact_int64):
        return leaf(self)

    def render(self, value_of=None) -> str:
        return f"{self.selector.name}={value_of(self)}" if value_of else self.selector.name


@dataclass(frozen=True, eq=False)
class Sum(Expression):
    a: Expression
    b: Expression

    def children(self):
        return (self.a, self.b)

    def degree(self) -> int:
        return max(self.a.degree(), self.b.degree())

    def bound(self, column_bound) -> int:
        return self.a.bound(column_bound) + self.b.bound(column_bound)

    def evaluate(self, leaf, exact_int64):
        return self.a.evaluate(leaf, exact_int64) + self.b.evaluate(leaf, exact_int64)

    def render(self, value_of=None) -> str:
        b = self.b
        if isinstance(b, Negated):
            return f"{self.a.render(value_of)} - {_paren(b.a, value_of)}"
        return f"{self.a.render(value_of)} + {b.render(value_of)}"


@dataclass(frozen=True, eq=False)
class Product(Expression):
    a: Expression
    b: Expression

    def children(self):
        return (self.a, self.b)

    def degree(self) -> int:
        return self.a.degree() + self.b.degree()

    def bound(self, column_bound) -> int:
        return self.a.bound(column_bound) * self.b.bound(column_bound)

    def evaluate(self, leaf, exact_int64):
        out = self.a.evaluate(leaf, exact_int64) * self.b.evaluate(leaf, exact_int64)
        return out if exact_int64 else out % P

    def render(self, value_of=None) -> str:
        return f"{_paren(self.a, value_of)} * {_paren(self.b, value_of)}"


@dataclass(frozen=True, eq=False)
class Negated(Expression):
    a: Expression

    def children(self):
        return (self.a,)

    def degree(self) -> int:
        return self.a.degree()

    def bound(self, column_bound) -> int:
        return self.a.bound(column_bound)

    def evaluate(self, leaf, exact_int64):
        return -self.a.evaluate(leaf, exact_int64)

    def render(self, value_of=None) -> str:
        return f"-{_paren(self.a, value_of)}"


@dataclass(frozen=True, eq=False)
class Scaled(Expression):
    a: Expression
    factor: int

    def children(self):
        return (self.a,)

    def degree(self) -> int:
        return self.a.degree()

    def bound(self, column_bound) -> int:
        # the factor itself must fit the int64 path, even when its operand is 0
        return abs(signed(self.factor)) * max(1, self.a.bound(column_bound))

    def evaluate(self, leaf, exact_int64):
        if exact_int64:
            return self.a.evaluate(leaf, exact_int64) * np.int64(signed(self.factor))
        return (self.a.evaluate(leaf, exact_int64) * self.factor) % P

    def render(self, value_of=None) -> str:
        return f"{signed(self.factor)}*{_paren(self.a, value_of)}"


def _paren(e: Expression, value_of) -> str:
    text = e.render(value_of)
    return f"({text})" if isinstance(e, (Sum,)) else text


def evaluate_rows(expr: Expression, leaf_int64: Callable[[Expression], np.ndarray],
                  leaf_object: Callable[[Expression], np.ndarray], leaf_bound: Callable[[Query], int],
                  nrows: int) -> np.ndarray:
    """Evaluate `expr` exactly over `nrows` rows, picking int64 when the bound allows, else Python ints mod p.

    Returns a field array: int64 signed values (|v| < 2^63 < p/2, so zero test is exact) or canonical objects.
    """
    if all(node.bound(leaf_bound) <= INT64_LIMIT for node in expr.walk()):
        out = np.asarray(expr.evaluate(leaf_int64, True), dtype=np.int64)
        return np.full(nrows, int(out), dtype=np.int64) if out.ndim == 0 else out
    out = expr.evaluate(leaf_object, False)
    if np.ndim(out) == 0:
        return np.full(nrows, int(out) % P, dtype=object)
    return np.array([int(v) % P for v in out], dtype=object)
