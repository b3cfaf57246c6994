"""BatchedMac: matrix × vectors as dot products, L multiplication lanes per row, each lane a MulTable lookup.

Columns (L lanes, 1 ≤ L ≤ 16): advice w_i, a_i, p_i per lane and one accumulator `acc`; selectors q_start, q_cont.

    every MAC row, every lane i:  (q·w_i, q·a_i, q·p_i) ∈ MulTable          lookup "<name> lane i: w·a = p"
    first row of a dot product:   acc = Σ_i p_i                             gate "<name> start"      (q_start)
    its other rows:               acc = acc[prev] + Σ_i p_i                 gate "<name> accumulate" (q_cont)
    with q = q_start + q_cont (the lanes are looked up on every MAC row).

A dot product of length d takes R = ceil(d/L) consecutive rows; element j sits in row j // L, lane j % L. The
R·L − d padding lanes of its last row hold w = a = 0, copy-constrained to a fixed zero cell (otherwise a prover could
put any w·a = p there and add p to the sum). The accumulator of the last row is the result; callers copy it onward.
Activations are copied from their source (public inputs or earlier cells); for T tokens the weight cells of tokens
1..T-1 are copied from token 0's, which are the canonical weight cells (a later commitment binds those).

`LaneMac` holds the layout shared with MulGate (mul_gate.py), which proves the same products with a degree-3 gate.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field

import numpy as np

from zkref.plonkish.constraint_system import CircuitError, ConstraintSystem, LookupTable
from zkref.plonkish.expression import Column, ColumnKind, Expression, Selector
from zkref.primitives.field import signed
from zkref.plonkish.layout import AssignedCells, Layouter, Region
from zkref.chips.mul_table import MulTable, MulTableConfig, low_nibble_table_columns, mul_table_columns
from zkref.primitives.ranges import check_lanes

def rows_per_dot(d: int, lanes: int) -> int:
    """Rows one dot product of length d takes: ceil(d / L)."""
    return -(-int(d) // int(lanes))


def padding_lanes(d: int, lanes: int) -> int:
    """Padding lanes in the last row of a dot product of length d."""
    return rows_per_dot(d, lanes) * lanes - d


@dataclass(frozen=True)
class InstanceSource:
    """Activations that are public inputs: activation (t, j) is `column[rows[t, j]]` (rows has shape (T, d))."""

    column: Column
    rows: np.ndarray


@dataclass(frozen=True)
class CellSource:
    """Activations assigned earlier (e.g. Requant outputs): activation (t, j) is `cells[index[t, j]]`."""

    cells: AssignedCells
    index: np.ndarray


Source = InstanceSource | CellSource


@dataclass(frozen=True)
class LaneMacConfig:
    """Columns, selectors and tables of a lane MAC chip (BatchedMac: p columns + MulTable; MulGate: no p columns).

    The weight columns `w` are advice (a private adapter) or fixed (an adapter baked into the circuit).
    """

    name: str
    lanes: int
    w: tuple[Column, ...]
    a: tuple[Column, ...]
    p: tuple[Column, ...]
    acc: Column
    q_start: Selector
    q_cont: Selector
    zero: Column | None
    tables: tuple[LookupTable, ...]
    w_lo: tuple[Column, ...] = ()
    """int8 weights in BatchedMac: the low digit l = w & 15 per lane (`w` then holds the high digit w >> 4)."""
    p_lo: tuple[Column, ...] = ()

    @property
    def fixed_weights(self) -> bool:
        return self.w[0].kind is ColumnKind.FIXED

    @property
    def weight_digits(self) -> bool:
        return bool(self.w_lo)


@dataclass
class MatmulCells:
    """What a matmul assigned: results (T·n_out accumulators, (t, o) row-major) and the canonical weight cells.

    With fixed weights there are no canonical weight cells to commit to (the verifying key holds the weights).
    """

    results: AssignedCells
    w_lanes: list[AssignedCells] = field(default_factory=list)
    """Token 0's weight cells, one run per lane."""
    w_index: list[np.ndarray] = field(default_factory=list)
    """For each lane, the flat index o·d + j of each of its canonical weight cells."""
    rows: int = 0


def _sum(exprs: list[Expression]) -> Expression:
    return functools.reduce(operator.add, exprs)


def _declare_lanes(cs: ConstraintSystem, name: str, lanes: int, *, products: bool, padding: bool,
                   tied_weights: bool, fixed_weights: bool) -> tuple:
    lanes = check_lanes(lanes)
    if fixed_weights:  # constants of the circuit (bound by the verifying key): nothing to copy or pad-constrain
        w = tuple(cs.fixed_column(f"{name}.w{i}") for i in range(lanes))
    else:
        w_eq = padding or tied_weights
        w = tuple(cs.advice_column(f"{name}.w{i}", equality=w_eq) for i in range(lanes))
    a = tuple(cs.advice_column(f"{name}.a{i}", equality=True) for i in range(lanes))
    p = tuple(cs.advice_column(f"{name}.p{i}") for i in range(lanes)) if products else ()
    acc = cs.advice_column(f"{name}.acc", equality=True)
    q_start, q_cont = cs.selector(f"{name}.q_start"), cs.selector(f"{name}.q_cont")
    zero = cs.fixed_column(f"{name}.zero", equality=True) if padding else None
    return lanes, w, a, p, acc, q_start, q_cont, zero


def _as_signed(values: np.ndarray) -> np.ndarray:
    """Signed integer view of a field array (int64 stays; big elements become signed Python ints)."""
    if values.dtype == object:
        return np.array([signed(v) for v in values.reshape(-1)], dtype=object).reshape(values.shape)
    return values.astype(np.int64)


class LaneMac:
    """Layout shared by BatchedMac and MulGate: L lanes per row, a running accumulator, dot products stacked."""

    chip_name = "LaneMac"

    def __init__(self, config: LaneMacConfig):
        self.config = config
        self._zero: AssignedCells | None = None

    # -- witness helpers ----------------------------------------------------------------------------------------
    @staticmethod
    def activation_values(layouter: Layouter, source: Source, tokens: int, d: int) -> np.ndarray | None:
        """The (T, d) activation values a source holds (None in the analytic pass)."""
        if not layouter.layout.with_values:
            return None
        if isinstance(source, InstanceSource):
            vals = layouter.instance_values(source.column)
            rows = np.asarray(source.rows, dtype=np.int64)
            if rows.size and int(rows.max()) >= len(vals):
                raise CircuitError(f"instance column {source.column.name} has only {len(vals)} values")
            out = vals[rows]
        else:
            if source.cells.values is None:
                raise CircuitError("activation cells carry no values while proving with a witness")
            out = source.cells.values[np.asarray(source.index, dtype=np.int64)]
        return _as_signed(out).reshape(tokens, d)

    def load(self, layouter: Layouter) -> None:
        """Fill the chip's lookup tables."""
        raise NotImplementedError

    def _zero_cell(self, layouter: Layouter) -> AssignedCells:
        """A fixed cell holding 0 that padding lanes are copy-constrained to (one per chip)."""
        if self._zero is None:
            if self.config.zero is None:
                raise CircuitError(f"{self.config.name}: padding lanes need the chip configured with padding=True")
            col = self.config.zero
            self._zero = layouter.assign_region(f"{self.config.name} zero",
                                                lambda region: region.assign_fixed(col, 0, [0]),
                                                chip=self.chip_name)
        return self._zero

    def _assign_products(self, region: Region, w_grid, a_grid, rows: int) -> np.ndarray | None:
        """Assign per-lane product cells (BatchedMac) and return the row sums Σ_i w_i·a_i (None if unknown)."""
        if w_grid is None:
            return None
        return (w_grid * a_grid).sum(axis=1)

    # -- layout ---------------------------------------------------------------------------------------------------
    def matmul(self, layouter: Layouter, *, weights: np.ndarray | None, source: Source, n_out: int, d: int,
               tokens: int, name: str) -> MatmulCells:
        """Prove y[t, o] = Σ_j weights[o, j] · x[t, j] for every token t and output o; returns the y cells.

        weights: (n_out, d) ints (None in the analytic pass); source: where x (T, d) comes from.
        """
        cfg = self.config
        L = cfg.lanes
        R = rows_per_dot(d, L)
        n_dots = tokens * n_out
        rows = n_dots * R
        known = layouter.layout.with_values
        if known and weights is None:
            raise CircuitError(f"{name}: weights are missing while proving with a witness")
        w_grid = a_grid = None
        if known:
            W = np.asarray(weights).reshape(n_out, d)
            W = W.astype(object) if W.dtype == object else W.astype(np.int64)
            X = self.activation_values(layouter, source, tokens, d)
            dtype = object if (W.dtype == object or X.dtype == object) else np.int64
            Wp = np.zeros((n_out, R * L), dtype=dtype)
            Wp[:, :d] = W
            Xp = np.zeros((tokens, R * L), dtype=dtype)
            Xp[:, :d] = X
            w_grid = np.broadcast_to(Wp[None, :, :], (tokens, n_out, R * L)).reshape(rows, L)
            a_grid = np.broadcast_to(Xp[:, None, :], (tokens, n_out, R * L)).reshape(rows, L)

        rho = np.arange(rows, dtype=np.int64)
        k = rho % R
        dot = rho // R
        o = dot % n_out
        t = dot // n_out
        pad_rows = padding_lanes(d, L)
        zero = self._zero_cell(layouter) if pad_rows else None

        def assign(region: Region) -> MatmulCells:
            w_cells, a_cells = [], []
            assign_w = region.assign_fixed if cfg.fixed_weights else region.assign_advice
            w_hi = w_grid if w_grid is None or not cfg.weight_digits else w_grid >> 4
            for i in range(L):
                w_cells.append(assign_w(cfg.w[i], 0, None if w_hi is None else w_hi[:, i], length=rows))
                if cfg.weight_digits:
                    assign_w(cfg.w_lo[i], 0, None if w_grid is None else w_grid[:, i] & 15, length=rows)
                a_cells.append(region.assign_advice(cfg.a[i], 0, None if a_grid is None else a_grid[:, i],
                                                    length=rows))
            row_sums = self._assign_products(region, w_grid, a_grid, rows)
            if row_sums is not None:
                acc_vals = np.cumsum(row_sums.reshape(n_dots, R), axis=1).reshape(-1)
            else:
                acc_vals = None
            acc = region.assign_advice(cfg.acc, 0, acc_vals, length=rows)
            region.enable_selector(cfg.q_start, rho[k == 0])
            region.enable_selector(cfg.q_cont, rho[k != 0])

            w_canon, w_index = [], []
            for i in range(L):
                j = k * L + i
                real = j < d
                rr, tt, jj, oo, kk = rho[real], t[real], j[real], o[real], k[real]
                # activations come from their source
                if isinstance(source, InstanceSource):
                    layouter.constrain_instance(a_cells[i][rr], source.column,
                                                np.asarray(source.rows, dtype=np.int64)[tt, jj])
                else:
                    region.constrain_equal(a_cells[i][rr], source.cells[np.asarray(source.index)[tt, jj]])
                pads = rho[~real]
                zeros = np.zeros(len(pads), dtype=np.int64)
                if len(pads):  # padding lanes hold a = 0 (and w = 0, fixed or copy-constrained)
                    region.constrain_equal(a_cells[i][pads], zero[zeros])
                if cfg.fixed_weights:
                    continue
                # weights of tokens 1.. are token 0's
                later = tt > 0
                if later.any():
                    region.constrain_equal(w_cells[i][rr[later]], w_cells[i][oo[later] * R + kk[later]])
                first = tt == 0
                w_canon.append(w_cells[i][rr[first]])
                w_index.append(oo[first] * d + jj[first])
                if len(pads):
                    region.constrain_equal(w_cells[i][pads], zero[zeros])
            results = acc[np.arange(R - 1, rows, R, dtype=np.int64)]
            return MatmulCells(results, w_canon, w_index, rows)

        return layouter.assign_region(name, assign, chip=self.chip_name)


class BatchedMac(LaneMac):
    """Products by MulTable lookups (one per lane), L lanes per row, one accumulator constraint per row."""

    chip_name = "BatchedMac"

    @staticmethod
    def configure(cs: ConstraintSystem, lanes: int = 8, *, table: MulTableConfig | None = None,
                  padding: bool = True, tied_weights: bool = True, fixed_weights: bool = False,
                  weight_bits: int = 4, name: str = "mac") -> LaneMacConfig:
        """Declare the lane columns, the start/accumulate gates and one MulTable lookup per lane.

        padding: some dot product length is not a multiple of `lanes` (declares the fixed zero column);
        tied_weights: the weight cells are copied elsewhere (several tokens, or a commitment hashes them);
        fixed_weights: the weights are circuit constants in fixed columns (bound by the verifying key);
        weight_bits 8: each int8 weight is two fixed digits w = 16·h + l, h·a looked up in MulTable and l·a in the
        low-nibble table (two lookups per product, both tables 4096 rows, so no more rows); fixed weights only.
        """
        if weight_bits not in (4, 8):
            raise CircuitError(f"BatchedMac multiplies int4 or int8 weights, not int{weight_bits}")
        if weight_bits == 8 and not fixed_weights:
            raise CircuitError("BatchedMac lays out int8 weights as two fixed digit columns: the weights must be "
                               "fixed (in the verifying key); MulGate takes private int8 weights")
        lanes, w, a, p, acc, q_start, q_cont, zero = _declare_lanes(cs, name, lanes, products=True, padding=padding,
                                                                   tied_weights=tied_weights,
                                                                   fixed_weights=fixed_weights)
        table = table or MulTable.configure(cs)
        tables = [table.table]
        w_lo = p_lo = ()
        if weight_bits == 8:
            w_lo = tuple(cs.fixed_column(f"{name}.wl{i}") for i in range(lanes))
            p_lo = tuple(cs.advice_column(f"{name}.pl{i}") for i in range(lanes))
            tables.append(cs.lookup_table("mul_lo", ["l", "a", "p"]))
            total = _sum([pi.cur() * 16 + pl.cur() for pi, pl in zip(p, p_lo)])
            what = "Σ (16·p + pl)"
        else:
            total = _sum([pi.cur() for pi in p])
            what = "Σ p"
        cs.create_gate(f"{name} start", [
            (f"first row: acc = {what}", q_start.expr() * (acc.cur() - total)),
        ])
        cs.create_gate(f"{name} accumulate", [
            (f"next rows: acc = acc[prev] + {what}", q_cont.expr() * (acc.cur() - acc.prev() - total)),
        ])
        q = q_start.expr() + q_cont.expr()
        for i in range(lanes):
            cs.lookup(f"{name} lane {i}: w·a = p", [q * w[i].cur(), q * a[i].cur(), q * p[i].cur()], table.table)
            if weight_bits == 8:
                cs.lookup(f"{name} lane {i}: wl·a = pl", [q * w_lo[i].cur(), q * a[i].cur(), q * p_lo[i].cur()],
                          tables[1])
        return LaneMacConfig(name, lanes, w, a, p, acc, q_start, q_cont, zero, tuple(tables), w_lo, p_lo)

    def load(self, layouter: Layouter) -> None:
        layouter.assign_table(self.config.tables[0], list(mul_table_columns()))
        if self.config.weight_digits:
            layouter.assign_table(self.config.tables[1], list(low_nibble_table_columns()))

    def _assign_products(self, region: Region, w_grid, a_grid, rows: int) -> np.ndarray | None:
        cfg = self.config
        digits = cfg.weight_digits
        hi = None if w_grid is None else (w_grid >> 4 if digits else w_grid)
        p_grid = None if hi is None else hi * a_grid
        for i, col in enumerate(cfg.p):
            region.assign_advice(col, 0, None if p_grid is None else p_grid[:, i], length=rows)
        if not digits:
            return None if p_grid is None else p_grid.sum(axis=1)
        lo_grid = None if w_grid is None else (w_grid & 15) * a_grid
        for i, col in enumerate(cfg.p_lo):
            region.assign_advice(col, 0, None if lo_grid is None else lo_grid[:, i], length=rows)
        return None if p_grid is None else (16 * p_grid + lo_grid).sum(axis=1)
