"""The LoRA statement as circuits: y_q = B_q · requant(A_q · x_q) for T tokens, and the dense baseline y = W_q · x_q.

PEFT convention: lora_A is r×d_in, lora_B is d_out×r, delta = s·B(Ax) with s = alpha/r. In the circuit:
x_q int8 (T×d_in, public), A_q and B_q int4 (witness), z = A_q·x_q exact, z_q = requant(z) for a public power-of-two
shift, y_q = B_q·z_q exact (public). Dequantisation (scales, s) happens outside the circuit. Spec: specs/lora-circuit.md.

Instance layout (both circuits): column 0 "x" holds x_q row-major (row t·d_in + j is x_q[t, j]); column 1 "y" holds
y_q row-major (row t·d_out + o is y_q[t, o]).

Every circuit here supports the analytic pass (no weights or activations: only accounting), and `formula_cost`
computes the same accounting in closed form (tests check it equals the analytic pass), which the report uses for
dense baselines too large to lay out cell by cell.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zkref.plonkish.accounting import ChipCost, CircuitCost, circuit_cost
from zkref.chips.batched_mac import (BatchedMac, CellSource, InstanceSource, LaneMac, LaneMacConfig, MatmulCells,
                                check_lanes, padding_lanes, rows_per_dot)
from zkref.chips.mul_gate import MulGate
from zkref.chips.mul_table import A_MAX, A_MIN, PRODUCT_MAX, PRODUCT_MIN, ROWS as MUL_TABLE_ROWS, W_MAX, W_MIN
from zkref.chips.requant import MAX_SHIFT, Requant, RequantConfig, limb_layout, requant_buckets, requant_reference
from zkref.plonkish.constraint_system import ConstraintSystem
from zkref.plonkish.layout import configure
from zkref.plonkish.expression import Column
from zkref.plonkish.layout import Layouter
from zkref.primitives.quant import choose_shift

STRATEGIES = ("table", "gate")
MAX_DIM = 1 << 20


def _chip_class(strategy: str) -> type[LaneMac]:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return BatchedMac if strategy == "table" else MulGate


def _check_dim(name: str, value: object, limit: int = MAX_DIM) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= limit:
        raise ValueError(f"{name} must be an integer in 1..{limit}, got {value!r}")
    return int(value)


def as_int_matrix(name: str, values: object, shape: tuple[int, int], lo: int, hi: int) -> np.ndarray:
    """Validate a matrix of integers in [lo, hi] with the given shape; returns an int64 copy (ValueError otherwise)."""
    try:
        arr = np.asarray(values)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{name} is not a rectangular array: {exc}") from None
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{name} must hold integers, got non-numeric entries") from None
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinity")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integers (quantise floats first)")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name} values must lie in [{lo}, {hi}], got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


def calibrate_shift(z: np.ndarray) -> int:
    """Smallest shift with no clamping (zkref.quant.choose_shift): 0 when every |z| <= 127."""
    return choose_shift(np.asarray(z, dtype=np.int64))


@dataclass(frozen=True)
class LoRAConfig:
    """Instance columns, the MAC chip (shared by both products) and the Requant chip."""

    x: Column
    y: Column
    mac: LaneMacConfig
    requant: RequantConfig


@dataclass(frozen=True)
class DenseConfig:
    x: Column
    y: Column
    mac: LaneMacConfig


@dataclass(frozen=True)
class LoRAReference:
    """The plain-integer statement: z = A_q x, z_q = requant(z), y = B_q z_q (each T×·, row-major per token)."""

    z: np.ndarray
    z_q: np.ndarray
    y: np.ndarray


@dataclass
class LoRACircuit:
    """Proves y_q = B_q · requant(A_q · x_q) for T tokens; x_q and y_q public (instance columns 0 and 1).

    Weights and activations are optional: without them only the analytic pass (accounting) is possible.
    `shift` is public (baked into the requant table); None calibrates it from the values (smallest shift without
    clamping) or uses 0 for an analytic pass.
    """

    d_in: int
    d_out: int
    rank: int
    tokens: int = 1
    lanes: int = 8
    strategy: str = "table"
    shift: int | None = None
    A_q: np.ndarray | None = None
    B_q: np.ndarray | None = None
    x_q: np.ndarray | None = None
    _reference: LoRAReference | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.d_in = _check_dim("d_in", self.d_in)
        self.d_out = _check_dim("d_out", self.d_out)
        self.rank = _check_dim("rank", self.rank, 4096)
        self.tokens = _check_dim("tokens", self.tokens, 1 << 16)
        self.lanes = check_lanes(self.lanes)
        _chip_class(self.strategy)
        if self.A_q is not None:
            self.A_q = as_int_matrix("A_q", self.A_q, (self.rank, self.d_in), W_MIN, W_MAX)
        if self.B_q is not None:
            self.B_q = as_int_matrix("B_q", self.B_q, (self.d_out, self.rank), W_MIN, W_MAX)
        if self.x_q is not None:
            self.x_q = as_int_matrix("x_q", self.x_q, (self.tokens, self.d_in), A_MIN, A_MAX)
        if self.shift is None:
            self.shift = calibrate_shift(self.x_q @ self.A_q.T) if self.x_q is not None and self.A_q is not None else 0
        if isinstance(self.shift, bool) or not isinstance(self.shift, (int, np.integer)) \
                or not 0 <= int(self.shift) <= MAX_SHIFT:
            raise ValueError(f"shift must be an integer in 0..{MAX_SHIFT}, got {self.shift!r}")
        self.shift = int(self.shift)

    # -- the statement ---------------------------------------------------------------------------------------------
    @property
    def has_values(self) -> bool:
        return self.A_q is not None and self.B_q is not None and self.x_q is not None

    @property
    def z_bounds(self) -> tuple[int, int]:
        """Range of z = A_q·x_q over all int4 A_q and int8 x_q: d_in·[-1016, 1024]."""
        return self.d_in * PRODUCT_MIN, self.d_in * PRODUCT_MAX

    @property
    def macs(self) -> int:
        """Multiply-accumulates proven: T·(r·d_in + d_out·r)."""
        return self.tokens * (self.rank * self.d_in + self.d_out * self.rank)

    def reference(self) -> LoRAReference:
        """z, z_q, y computed with plain integers (what the circuit must reproduce exactly)."""
        if not self.has_values:
            raise ValueError("LoRACircuit has no weights/activations: only the analytic pass is possible")
        if self._reference is None:
            z = self.x_q @ self.A_q.T
            z_q = requant_reference(z, self.shift)
            self._reference = LoRAReference(z, z_q, z_q @ self.B_q.T)
        return self._reference

    @property
    def y_q(self) -> np.ndarray:
        return self.reference().y

    def public_inputs(self) -> list[list[int]]:
        """[x_q row-major, y_q row-major]: instance columns 0 and 1."""
        ref = self.reference()
        return [self.x_q.reshape(-1).tolist(), ref.y.reshape(-1).tolist()]

    # -- circuit ---------------------------------------------------------------------------------------------------
    @property
    def padding(self) -> bool:
        return bool(padding_lanes(self.d_in, self.lanes) or padding_lanes(self.rank, self.lanes))

    def configure(self, cs: ConstraintSystem) -> LoRAConfig:
        x = cs.instance_column("x")
        y = cs.instance_column("y")
        chip = _chip_class(self.strategy)
        mac = chip.configure(cs, self.lanes, padding=self.padding, tied_weights=self.tokens > 1)
        z_min, z_max = self.z_bounds
        requant = Requant.configure(cs, shift=self.shift, z_min=z_min, z_max=z_max)
        return LoRAConfig(x, y, mac, requant)

    def synthesize(self, config: LoRAConfig, layouter: Layouter) -> None:
        T, d = self.tokens, self.d_in
        x_rows = np.arange(T * d, dtype=np.int64).reshape(T, d)
        _, stage2 = self.assign_products(layouter, config.mac, config.requant, InstanceSource(config.x, x_rows))
        layouter.constrain_instance(stage2.results, config.y, np.arange(T * self.d_out, dtype=np.int64))

    def assign_products(self, layouter: Layouter, mac_config: LaneMacConfig, requant_config: RequantConfig,
                        x_source: InstanceSource | CellSource) -> tuple[MatmulCells, MatmulCells]:
        """Lay out z = A_q·x, z_q = requant(z), y = B_q·z_q; returns both matmuls (y cells and weight cells)."""
        T, d, r, m = self.tokens, self.d_in, self.rank, self.d_out
        mac = _chip_class(self.strategy)(mac_config)
        requant = Requant(requant_config)
        mac.load(layouter)
        requant.load(layouter)
        known = layouter.layout.with_values
        stage1 = mac.matmul(layouter, weights=self.A_q if known else None, source=x_source,
                            n_out=r, d=d, tokens=T, name="z = A_q·x")
        z_q = requant.assign(layouter, stage1.results, name="z_q = requant(z)")
        stage2 = mac.matmul(layouter, weights=self.B_q if known else None,
                            source=CellSource(z_q, np.arange(T * r, dtype=np.int64).reshape(T, r)),
                            n_out=m, d=r, tokens=T, name="y = B_q·z_q")
        return stage1, stage2


@dataclass
class DenseCircuit:
    """The baseline: y = W_q · x_q with ΔW = s·B·A quantised to one int4 matrix (d_out×d_in), same MAC chip.

    No requantisation: y is the exact integer product (its range is wider than int8, which is fine for a public output).
    """

    d_in: int
    d_out: int
    tokens: int = 1
    lanes: int = 8
    W_q: np.ndarray | None = None
    x_q: np.ndarray | None = None
    strategy: str = "table"

    def __post_init__(self) -> None:
        self.d_in = _check_dim("d_in", self.d_in)
        self.d_out = _check_dim("d_out", self.d_out)
        self.tokens = _check_dim("tokens", self.tokens, 1 << 16)
        self.lanes = check_lanes(self.lanes)
        _chip_class(self.strategy)
        if self.W_q is not None:
            self.W_q = as_int_matrix("W_q", self.W_q, (self.d_out, self.d_in), W_MIN, W_MAX)
        if self.x_q is not None:
            self.x_q = as_int_matrix("x_q", self.x_q, (self.tokens, self.d_in), A_MIN, A_MAX)

    @property
    def has_values(self) -> bool:
        return self.W_q is not None and self.x_q is not None

    @property
    def macs(self) -> int:
        return self.tokens * self.d_in * self.d_out

    @property
    def padding(self) -> bool:
        return bool(padding_lanes(self.d_in, self.lanes))

    @property
    def y_q(self) -> np.ndarray:
        if not self.has_values:
            raise ValueError("DenseCircuit has no weights/activations: only the analytic pass is possible")
        return self.x_q @ self.W_q.T

    def public_inputs(self) -> list[list[int]]:
        """[x_q row-major, y row-major]: instance columns 0 and 1."""
        y = self.y_q
        return [self.x_q.reshape(-1).tolist(), y.reshape(-1).tolist()]

    def configure(self, cs: ConstraintSystem) -> DenseConfig:
        x = cs.instance_column("x")
        y = cs.instance_column("y")
        mac = _chip_class(self.strategy).configure(cs, self.lanes, padding=self.padding,
                                                   tied_weights=self.tokens > 1)
        return DenseConfig(x, y, mac)

    def synthesize(self, config: DenseConfig, layouter: Layouter) -> None:
        T, d, m = self.tokens, self.d_in, self.d_out
        mac = _chip_class(self.strategy)(config.mac)
        mac.load(layouter)
        known = layouter.layout.with_values
        out = mac.matmul(layouter, weights=self.W_q if known else None,
                         source=InstanceSource(config.x, np.arange(T * d, dtype=np.int64).reshape(T, d)),
                         n_out=m, d=d, tokens=T, name="y = W_q·x")
        layouter.constrain_instance(out.results, config.y, np.arange(T * m, dtype=np.int64))


# ------------------------------------------------------------------------------------------------------------------
# Closed-form accounting (specs/lora-circuit.md, "Cost formulas"); tests check it equals zkref.accounting's pass.
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _MatmulShape:
    n_out: int
    d: int


def _mac_counts(shapes: list[_MatmulShape], T: int, L: int, strategy: str) -> dict[str, int]:
    rows = sum(T * s.n_out * rows_per_dot(s.d, L) for s in shapes)
    copies = sum(T * s.n_out * s.d + (T - 1) * s.n_out * s.d + 2 * T * s.n_out * padding_lanes(s.d, L)
                 for s in shapes)
    per_row_cells = (3 if strategy == "table" else 2) * L + 1
    lookups_per_row = L if strategy == "table" else 2 * L
    return dict(rows=rows, copies=copies, cells=rows * per_row_cells, lookups=rows * lookups_per_row,
                regions=len(shapes))


def formula_cost(circuit: LoRACircuit | DenseCircuit, name: str | None = None) -> CircuitCost:
    """The accounting of `circuit` in closed form (no layout at all): equal to `zkref.accounting.account`."""
    cs, _ = configure(circuit)
    T, L, strategy = circuit.tokens, circuit.lanes, circuit.strategy
    chip_name = _chip_class(strategy).chip_name
    tables: dict[str, int] = {}
    if strategy == "table":
        tables["mul"] = MUL_TABLE_ROWS
    else:
        tables.update({"int4": W_MAX - W_MIN + 1, "int8": A_MAX - A_MIN + 1})
    if isinstance(circuit, LoRACircuit):
        shapes = [_MatmulShape(circuit.rank, circuit.d_in), _MatmulShape(circuit.d_out, circuit.rank)]
        z_min, z_max = circuit.z_bounds
        rq = next(c for c in cs.tables if c.name.startswith("requant.limb"))
        limb_bits = int(rq.name.removeprefix("requant.limb"))
        tables["requant.bucket"] = 1 + len(requant_buckets(circuit.shift, z_min, z_max)[0])
        tables[rq.name] = 1 << limb_bits
        _, n = limb_layout(circuit.shift, z_min, z_max)
        count = T * circuit.rank
        rq_rows, rq_cells, rq_lookups, rq_copies = count * n, count * (2 + 2 * n), count * (1 + 2 * n), count
        instance_rows = max(T * circuit.d_in, T * circuit.d_out)
    else:
        shapes = [_MatmulShape(circuit.d_out, circuit.d_in)]
        rq_rows = rq_cells = rq_lookups = rq_copies = 0
        instance_rows = max(T * circuit.d_in, T * circuit.d_out)
    mac = _mac_counts(shapes, T, L, strategy)
    padding = circuit.padding
    out_copies = T * circuit.d_out
    rows_used = max([mac["rows"], rq_rows, 1 if padding else 0] + list(tables.values()))
    chips = [ChipCost(chip_name, mac["regions"] + (1 if padding else 0), mac["rows"] + (1 if padding else 0),
                      mac["cells"])]
    if rq_rows:
        chips.append(ChipCost("Requant", 1, rq_rows, rq_cells))
    return circuit_cost(
        cs, name or type(circuit).__name__,
        rows_used=rows_used,
        instance_rows=instance_rows,
        lookup_queries=mac["lookups"] + rq_lookups,
        copy_constraints=mac["copies"] + rq_copies + out_copies,
        chips=chips,
        tables=tables,
        advice_cells=mac["cells"] + rq_cells,
    )
