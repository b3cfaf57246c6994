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

Activations wider than int8 (the requantised intermediate z_q of a statement with z_bits > 8, up to int16) are
multiplied as two digits: each lane also holds a = 256·ah + al (gate "<name> activation digits") with al an
unsigned byte and ah a signed byte, both range-checked by the product lookups, and every weight digit is looked up
against each activation digit (two lookups per product for int4 weights, four for int8). Weights wider than int4
(fixed only) are nibble digits the same way.

`LaneMac` holds the layout shared with MulGate (mul_gate.py), which proves the same products with a degree-3 gate.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field, replace

import numpy as np

from zkref.plonkish.constraint_system import CircuitError, ConstraintSystem, LookupTable
from zkref.plonkish.expression import Column, ColumnKind, Expression, Selector
from zkref.primitives.field import signed
from zkref.plonkish.layout import AssignedCells, Layouter, Region
from zkref.chips.mul_table import MulTableConfig, digit_table_columns
from zkref.primitives.ranges import INT8, check_activation_bits, check_lanes

ACTIVATION_DIGIT = 256
"""Activations wider than int8 are multiplied as a = 256·ah + al: a signed high byte and an unsigned low byte."""

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
    w_low: tuple[tuple[Column, ...], ...] = ()
    """Weights wider than int4 in BatchedMac: the unsigned nibbles below the top one, lowest first, per lane
    (nibble k = (w >> 4k) & 15; `w` then holds the signed top nibble). int8: one, int12: two, int16: three."""
    a_hi: tuple[Column, ...] = ()
    """Activations wider than int8: the signed high byte ah = a >> 8 per lane (with `a_lo`, a = 256·ah + al)."""
    a_lo: tuple[Column, ...] = ()
    """Activations wider than int8: the unsigned low byte al = a & 255 per lane."""
    p_more: tuple[tuple[Column, ...], ...] = ()
    """BatchedMac: the product columns of every weight digit × activation digit after the first (`p`), in
    `_product_groups` order."""

    @property
    def fixed_weights(self) -> bool:
        return self.w[0].kind is ColumnKind.FIXED

    @property
    def weight_nibbles(self) -> int:
        """Nibble digits each weight is laid out as (1: the weight itself)."""
        return 1 + len(self.w_low)

    @property
    def activation_digits(self) -> bool:
        return bool(self.a_lo)


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


def shared_table(cs: ConstraintSystem, name: str, column_names: list[str]) -> LookupTable:
    """The lookup table `name`, declared on first use: chips of one circuit share their fixed tables."""
    found = next((t for t in cs.tables if t.name == name), None)
    return found if found is not None else cs.lookup_table(name, column_names)


def load_table(layouter: Layouter, table: LookupTable, columns: list[np.ndarray]) -> None:
    """Fill a (possibly shared) table once: a second chip using the same table leaves it as loaded."""
    if table.name not in layouter.layout.tables:
        layouter.assign_table(table, columns)


def _declare_digits(cs: ConstraintSystem, name: str, a: tuple[Column, ...], q: Expression
                    ) -> tuple[tuple[Column, ...], tuple[Column, ...]]:
    """Per lane, the byte digits of a wide activation and the gate a = 256·ah + al (ranges: the lookups')."""
    a_hi = tuple(cs.advice_column(f"{name}.ah{i}") for i in range(len(a)))
    a_lo = tuple(cs.advice_column(f"{name}.al{i}") for i in range(len(a)))
    cs.create_gate(f"{name} activation digits", [
        (f"lane {i}: a = 256·ah + al", q * (ai.cur() - ACTIVATION_DIGIT * hi.cur() - lo.cur()))
        for i, (ai, hi, lo) in enumerate(zip(a, a_hi, a_lo))])
    return a_hi, a_lo


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
            top = 4 * (cfg.weight_nibbles - 1)
            w_hi = None if w_grid is None else w_grid >> top
            for i in range(L):
                w_cells.append(assign_w(cfg.w[i], 0, None if w_hi is None else w_hi[:, i], length=rows))
                for nibble, cols in enumerate(cfg.w_low):
                    assign_w(cols[i], 0, None if w_grid is None else (w_grid[:, i] >> (4 * nibble)) & 15,
                             length=rows)
                a_cells.append(region.assign_advice(cfg.a[i], 0, None if a_grid is None else a_grid[:, i],
                                                    length=rows))
                if cfg.activation_digits:
                    region.assign_advice(cfg.a_hi[i], 0, None if a_grid is None else a_grid[:, i] >> 8, length=rows)
                    region.assign_advice(cfg.a_lo[i], 0, None if a_grid is None else a_grid[:, i] & 255,
                                         length=rows)
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
                  weight_bits: int = 4, activation_bits: int = 8, name: str = "mac") -> LaneMacConfig:
        """Declare the lane columns, the start/accumulate gates and one MulTable lookup per lane.

        padding: some dot product length is not a multiple of `lanes` (declares the fixed zero column);
        tied_weights: the weight cells are copied elsewhere (several tokens, or a commitment hashes them);
        fixed_weights: the weights are circuit constants in fixed columns (bound by the verifying key);
        weight_bits 8, 12, 16: each weight is fixed nibble digits w = Σ 16^k·n_k (the top one signed), every digit
        looked up against each activation digit (the low nibbles in the 4096-row low-nibble table, so no more
        rows); fixed weights only;
        activation_bits 9..16: each activation is two byte digits a = 256·ah + al, every weight digit looked up
        against each (tables `mul_u8`, `mul_lo_u8` of 4096 rows for al); the tables are shared between chips.
        """
        if weight_bits not in WEIGHT_BITS:
            raise CircuitError(f"BatchedMac multiplies int4, int8, int12 or int16 weights, not int{weight_bits}")
        if weight_bits > 4 and not fixed_weights:
            raise CircuitError(f"BatchedMac lays out int{weight_bits} weights as fixed nibble columns: the weights "
                               "must be fixed (in the verifying key); MulGate takes private wide weights")
        wide = check_activation_bits(activation_bits) > INT8.bits
        lanes, w, a, p, acc, q_start, q_cont, zero = _declare_lanes(cs, name, lanes, products=True, padding=padding,
                                                                   tied_weights=tied_weights,
                                                                   fixed_weights=fixed_weights)
        q = q_start.expr() + q_cont.expr()
        table = table or MulTableConfig(shared_table(cs, "mul", ["w", "a", "p"]))
        w_low = tuple(tuple(cs.fixed_column(f"{name}.{_nibble_name(k)}{i}") for i in range(lanes))
                      for k in range(weight_bits // 4 - 1))
        a_hi = a_lo = ()
        if wide:
            a_hi, a_lo = _declare_digits(cs, name, a, q)
        draft = LaneMacConfig(name, lanes, w, a, p, acc, q_start, q_cont, zero, (), w_low, a_hi, a_lo)
        more = tuple(tuple(cs.advice_column(f"{name}.{g.product}{i}") for i in range(lanes))
                     for g in _product_groups(draft)[1:])
        config = replace(draft, p_more=more)
        groups = _product_groups(config)
        tables = {}
        for g in groups:
            tables[g.table] = table.table if g.table == "mul" else shared_table(cs, g.table, ["w", "a", "p"])
        total = _sum([pc.cur() * g.coefficient if g.coefficient != 1 else pc.cur()
                      for g in groups for pc in g.p])
        terms = [f"{g.coefficient}·{g.product}" if g.coefficient != 1 else g.product for g in groups]
        what = f"Σ ({' + '.join(terms)})" if len(terms) > 1 else f"Σ {terms[0]}"
        cs.create_gate(f"{name} start", [
            (f"first row: acc = {what}", q_start.expr() * (acc.cur() - total)),
        ])
        cs.create_gate(f"{name} accumulate", [
            (f"next rows: acc = acc[prev] + {what}", q_cont.expr() * (acc.cur() - acc.prev() - total)),
        ])
        for i in range(lanes):
            for g in groups:
                cs.lookup(f"{name} lane {i}: {g.lookup}", [q * g.w[i].cur(), q * g.a[i].cur(), q * g.p[i].cur()],
                          tables[g.table])
        return replace(config, tables=tuple(tables.values()))

    def load(self, layouter: Layouter) -> None:
        for g in _product_groups(self.config):
            table = next(t for t in self.config.tables if t.name == g.table)
            load_table(layouter, table, list(digit_table_columns(g.w_signed, g.a_signed)))

    def _assign_products(self, region: Region, w_grid, a_grid, rows: int) -> np.ndarray | None:
        total = None
        for g in _product_groups(self.config):
            grid = None if w_grid is None else g.products(w_grid, a_grid)
            for i, col in enumerate(g.p):
                region.assign_advice(col, 0, None if grid is None else grid[:, i], length=rows)
            if grid is not None:
                term = grid.sum(axis=1) * g.coefficient
                total = term if total is None else total + term
        return total


WEIGHT_BITS = (4, 8, 12, 16)
"""Weight widths BatchedMac lays out: one signed nibble, or a signed top nibble over 1–3 unsigned ones."""


def _nibble_name(k: int) -> str:
    """Column stem of weight nibble k below the top one: the lowest is "wl" (int8's), the others "wm<k>"."""
    return "wl" if k == 0 else f"wm{k}"


def _digit(values, shift: int, signed: bool, mask: int):
    """Digit of integer arrays: v >> shift (signed: the top digit) or (v >> shift) & mask."""
    return values >> shift if signed else (values >> shift) & mask


@dataclass(frozen=True)
class _ProductGroup:
    """One weight digit times one activation digit in every lane: its columns, its table and its name."""

    w: tuple[Column, ...]
    a: tuple[Column, ...]
    p: tuple[Column, ...]
    w_shift: int
    w_signed: bool
    a_shift: int
    a_signed: bool
    product: str
    """Column stem of the products (p, pl, pu, …)."""
    w_name: str
    a_name: str

    @property
    def coefficient(self) -> int:
        return 1 << (self.w_shift + self.a_shift)

    @property
    def table(self) -> str:
        return {(True, True): "mul", (False, True): "mul_lo", (True, False): "mul_u8",
                (False, False): "mul_lo_u8"}[(self.w_signed, self.a_signed)]

    @property
    def lookup(self) -> str:
        return f"{self.w_name}·{self.a_name} = {self.product}"

    def products(self, w_grid, a_grid):
        return _digit(w_grid, self.w_shift, self.w_signed, 15) * _digit(a_grid, self.a_shift, self.a_signed, 255)


def _product_groups(cfg: LaneMacConfig) -> list[_ProductGroup]:
    """BatchedMac's products: every weight digit (the weight, or its signed top nibble and unsigned lower ones) times
    every activation digit (the activation, or its signed high byte and unsigned low byte). Order: the top nibble,
    then the lower ones lowest first, all times the (high) activation digit; then the same times the low byte.
    Names: p (top), pl (lowest nibble), pm<k> (nibble k); a `u` suffix for the low byte (int8: p, pl, pu, plu)."""
    n = cfg.weight_nibbles
    top = 4 * (n - 1)
    weights = [(cfg.w, top, True, "p", "w")] + [(cols, 4 * k, False, "p" + _nibble_name(k)[1:], _nibble_name(k))
                                                 for k, cols in enumerate(cfg.w_low)]
    wide = bool(cfg.a_lo)
    acts = [(cfg.a_hi, 8, True, "", "ah"), (cfg.a_lo, 0, False, "u", "al")] if wide else [(cfg.a, 0, True, "", "a")]
    more = iter(cfg.p_more)
    groups = []
    for a_cols, a_shift, a_signed, suffix, a_name in acts:
        for w_cols, w_shift, w_signed, stem, w_name in weights:
            product = stem + suffix
            p_cols = cfg.p if not groups else next(more, ())
            groups.append(_ProductGroup(w_cols, a_cols, p_cols, w_shift, w_signed, a_shift, a_signed, product,
                                        w_name, a_name))
    return groups
