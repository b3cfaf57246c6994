"""A cost model of the EZKL backend: the rows `ezkl.gen_settings` reports and the k `choose_layout` picks for a
statement (or a batch), predicted WITHOUT running EZKL by replaying how EZKL 23 lays the statement's graph out.

EZKL's dummy layout pass (`Model::dummy_layout`) walks the graph's nodes and advances ONE linear cell coordinate over a
block of `num_inner_cols` advice columns; `num_rows` = ceil(cells / num_inner_cols), then the maximum with the Poseidon
module's rows (`GraphCircuit::new`). Every count below is read from ezkl's source (src/circuit/ops/layouts.rs,
src/circuit/ops/region.rs, src/circuit/ops/chip/einsum/, src/circuit/modules/poseidon.rs, tag v23.0.4 = 23.0.5's
code) and replayed in graph order by `_Region`:

* pairwise add/sub/mult, `enforce_equality`, `range_check`, `identity`: one cell per value. In the dummy pass no
  value is ever "previously assigned", so every `identity` (the graph's Cast, the 2^-s relabel, the Input node)
  assigns and costs one cell per value too.
* `dot(a, b)` (`layouts::dot`): flush to a row boundary, pad both inputs to a multiple of `num_inner_cols`, assign them
  with duplication (`VarTensor::dummy_assign_with_duplication`: c extra cells each time the run crosses a block of
  (2^k − 6)·c cells, counted from the starting row exactly as ezkl does); the accumulator column runs alongside.
* `einsum` of a matrix-vector product (T = 1, or r = 1, or d_out = 1: `analysis::analyze_single_equation` says
  BaseOps) is one `dot` per output value: T·r dots of d_in (x·A_qᵀ), T·d_out dots of r (z_q·B_qᵀ): ~c products per
  row. A matrix-matrix product (T > 1) is checked by Freivalds' argument in the einsum chip's own columns
  (`Einsums::assign_einsum`): NO cell of the main region; its cells are `einsum_cells`
  (settings["einsum_params"]["total_einsum_col_size"]): random linear combinations of the output over each axis, of
  each input over its output axis, one contraction dot and one product.
* `decompose(v, base, L)`: the claimed digits L+1 (sign first), range checks of the sign (1) and digits (L), the
  recomposition dot of L digits against the base powers (padded: 2·ceil(L/2) at c = 2), times the sign (1), equal to
  v (1); with `zero_sign_matters` also is-zero (4) and sign·is-zero = 0 (2).
* comparisons (`greater`): difference (1) + sign decomposition + (sign == 1) (5); `not` (`iff` with boolean checks): 6;
  clamp bounds `max_comp`/`min_comp`: comparison + not + 3; `floor` (base 2^shift, L legs): decomposition + one −1
  cell + 21 per value (last digit zero? sign negative? and/add) + the recomposition (re-assigned L+1, dot, sign).
* public y: `enforce_equality` against the instance: one cell per value; public or committed x: the Input identity.
* hashed values: EZKL's Poseidon module, 41·n + 2 rows per hashed tensor (`ModulePoseidon::num_rows`), in its own
  column: rows = max(main region, Poseidon).

Nothing here is fitted but the once-per-op constants of the boolean-free requantisation (`ROUNDING_CONSTANT_CELLS`,
measured against gen_settings): each other constant above is a count of assignments in
that code; the boolean-free ops (`relu`, `rebase_div`) are counted the same way. What the replay cannot know is the
order in which ezkl's parallel dummy loops (`RegionCtx::dummy_loop`) start their iterations: a flush or a duplication
may land one cell earlier or later, which is why ezkl itself reports ±1–2 rows between runs of the same graph.
tests/test_ezkl_cost.py checks the prediction against `ezkl.gen_settings` on 24 statements and batches.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from backends.base import Support
from backends.ezkl import graph
from backends.ezkl.settings import K_MAX, K_SPREAD, K_SPREAD_BATCH, NUM_INNER_COLS, Layout, choose_layout, k_floor
from backends.kzg import EZKL_UNUSABLE_ROWS
from zkref.lora.batch import LoRABatch
from zkref.lora.commitments import requant_constants
from zkref.lora.statement import ActivationBinding, AdapterBinding, LoRAStatement, OutputBinding, instance_length
from zkref.primitives.ranges import MEMORY_BUDGET, over_budget

POSEIDON_ROWS_PER_VALUE = 41
"""ezkl `ModulePoseidon::num_rows`: 41 rows per absorbed value (width 2, rate 1: one permutation per value)."""
POSEIDON_FIXED_ROWS = 2
"""… plus 2 rows per hashed tensor."""
IS_ZERO_CELLS = 4
"""`equals_zero`: v·v⁻¹, 1 − that, v·result, result·v = 0 enforced."""
NOT_CELLS = 6
"""`not` = `iff(mask, 0, 1)`: boolean identity of the mask (assign + range check), 1 − mask, two products, a sum."""
ROUNDING_CONSTANT_CELLS = 16
"""Cells the boolean-free rounding (`graph.floor_by_rebase`) assigns once, whatever its length (its constants).
FITTED to gen_settings (tests/test_ezkl_cost.py), not read from ezkl's code like the counts above: within ±6 cells on
every shape there, all at two digits (`graph.decomposition`); the folded clamp's relus assign none."""
FLOOR_LOOP_CELLS = 21
"""`floor`'s per-value loop: last digit is zero (4), not (6), sign == −1 (1 + 4), and (two boolean identities, 2 each,
and a product: 5), the incremented digit (1)."""
BASE_BYTES = 512 << 20
"""Memory of a proving process before its circuit: the interpreter with torch, onnx and ezkl loaded (~300 MiB
measured), rounded up."""
BYTES_PER_ROW = 16 << 10
"""Peak memory per row over settings, compile, setup, witness and prove, rows counted as max(rows, 2^k) plus the
einsum chip's cells: the most measured above ~300 MiB without hashing in benchmarks/results/ezkl.json is 15.2 KiB
(4096→4096 r=16 T=15), rounded up."""
BYTES_PER_POSEIDON_ROW = 12 << 10
"""… plus this per row of EZKL's Poseidon module (hashed x or adapter), which the measurements of fully hashed
statements (k = 15–17) need on top. tests/test_ezkl_cost.py checks that the estimate bounds every measurement."""


@dataclass(frozen=True, kw_only=True)
class OpCost:
    """One node of the graph: its name, the cells it takes in the main region and in the einsum chip's columns."""

    op: str
    cells: int
    einsum_cells: int = 0


@dataclass(frozen=True, kw_only=True)
class EzklCost:
    """The predicted EZKL layout of a statement or batch, with the ops that make it up."""

    statement_id: str
    num_inner_cols: int
    decomp_legs: int
    probe_logrows: int
    cells: int
    """Cells of the main region (settings["total_assignments"])."""
    main_rows: int
    einsum_cells: int
    """Cells of the Freivalds einsum chip's columns (settings["einsum_params"]["total_einsum_col_size"])."""
    poseidon_rows: int
    rows: int
    """What `ezkl.gen_settings` reports as num_rows: max(main rows, Poseidon rows)."""
    instances: int
    layout: Layout
    ops: tuple[OpCost, ...] = field(default_factory=tuple)

    @property
    def logrows(self) -> int:
        return self.layout.logrows

    @property
    def memory_bytes(self) -> int:
        """EZKL's peak memory proving this layout, at most (`BASE_BYTES`, `BYTES_PER_ROW`,
        `BYTES_PER_POSEIDON_ROW`); the call's tensors are not included."""
        return BASE_BYTES + BYTES_PER_ROW * (max(self.rows, 1 << self.layout.logrows) + self.einsum_cells) + \
            BYTES_PER_POSEIDON_ROW * self.poseidon_rows

    def to_json(self) -> dict:
        return {"statement_id": self.statement_id, "num_inner_cols": self.num_inner_cols,
                "decomp_legs": self.decomp_legs, "probe_logrows": self.probe_logrows, "cells": self.cells,
                "main_rows": self.main_rows, "einsum_cells": self.einsum_cells, "poseidon_rows": self.poseidon_rows,
                "rows": self.rows, "instances": self.instances,
                "k": self.layout.logrows, "k_floor": self.layout.k_floor, "reason": self.layout.reason,
                "ops": [{"op": o.op, "cells": o.cells, "einsum_cells": o.einsum_cells} for o in self.ops]}


def _roundup(n: int, m: int) -> int:
    return -(-n // m) * m


class _Region:
    """ezkl's `RegionCtx` in its dummy pass, reduced to what counts: the linear coordinate of the main region and the
    einsum chip's column coordinate, with flushes and duplication as ezkl computes them."""

    def __init__(self, *, num_inner_cols: int, logrows: int):
        self.c = num_inner_cols
        self.col_size = (1 << logrows) - EZKL_UNUSABLE_ROWS      # VarTensor::dummy: 2^k − 6 rows per column
        self.linear = 0
        self.einsum = 0
        self.ops: list[OpCost] = []

    # -- main region ---------------------------------------------------------------------------------------------
    def flush(self) -> None:
        self.linear = _roundup(self.linear, self.c)

    def _duplicated(self, start: int, length: int) -> int:
        """Cells `dummy_assign_with_duplication` adds to a run of `length` cells starting at linear coordinate
        `start`: c more at each i with (i + offset + 1) % block == 0, the offset starting at the run's row in its
        block and growing by c after each hit (ezkl's `Tensor::duplicate_every_n`)."""
        block = self.col_size * self.c
        row = (start - (start // block) * block) // self.c
        first = (-(row + 1)) % block
        if first >= length or block <= self.c:
            return 0
        return self.c * (1 + (length - 1 - first) // (block - self.c))

    def dot(self, length: int) -> None:
        self.flush()
        padded = _roundup(length, self.c)
        self.linear += padded + self._duplicated(self.linear, padded)

    def dots(self, count: int, length: int) -> None:
        """`einsum_with_base_ops`: a flush, then one dot per output value."""
        self.flush()
        for _ in range(count):
            self.dot(length)

    def decompose(self, n: int, legs: int, *, zero_sign_matters: bool) -> None:
        self.linear += n * (legs + 1)             # claimed sign and digits
        self.linear += n                          # range check of the sign
        if zero_sign_matters:
            self.linear += n * (IS_ZERO_CELLS + 2)
        self.linear += n * legs                   # range check of the digits
        self.dots(n, legs)                        # digits · base powers
        self.linear += 2 * n                      # times the sign; equal to the input

    def greater(self, n: int, legs: int) -> None:
        self.linear += n                          # difference
        self.decompose(n, legs, zero_sign_matters=True)
        self.linear += n + IS_ZERO_CELLS * n      # sign == 1

    def clamp_bound(self, n: int, legs: int) -> None:
        """`max_comp` / `min_comp` against a constant: compare, not, two products, a sum."""
        self.greater(n, legs)
        self.linear += NOT_CELLS * n + 3 * n

    def sign(self, n: int, legs: int) -> None:
        """`sign` with zero_sign_matters false (relu, abs): the decomposition alone (its sign digits are a view)."""
        self.decompose(n, legs, zero_sign_matters=False)

    def relu(self, n: int, legs: int) -> None:
        """`leaky_relu` with α = 0: sign, (sign == 1), the product."""
        self.sign(n, legs)
        self.linear += n + IS_ZERO_CELLS * n      # sign == 1
        self.linear += n                          # value · mask

    def rebase_div(self, n: int, legs: int) -> None:
        """`div` (a RebaseScale's Div): the claimed quotient's decomposition, quotient · divisor, |input − product|
        (difference, sign, product), that distance < divisor (a comparison), enforced equal to 1."""
        self.decompose(n, legs, zero_sign_matters=False)
        self.linear += n                          # quotient · divisor
        self.linear += n                          # input − product
        self.sign(n, legs)
        self.linear += n                          # abs = difference · sign
        self.greater(n, legs)                     # distance < divisor
        self.linear += n                          # == 1

    def floor(self, n: int, legs: int) -> None:
        self.decompose(n, legs, zero_sign_matters=True)
        self.linear += 1                          # the −1 constant
        self.linear += FLOOR_LOOP_CELLS * n
        self.linear += n * (legs + 1)             # recompose re-assigns the adjusted digits
        self.dots(n, legs)
        self.linear += n                          # times the sign

    # -- einsum chip (Freivalds) -----------------------------------------------------------------------------------
    def _einsum_run(self, length: int) -> None:
        padded = _roundup(length, self.c)
        self.einsum += padded + self._duplicated(self.einsum, padded)

    def _einsum_flush(self) -> None:
        self.einsum = _roundup(self.einsum, self.c)

    def freivalds(self, m: int, k: int, n: int) -> None:
        """`mk,kn->mn` with m, k, n > 1: the output's RLC over n (m runs of n) then over m (one run of m) and one cell;
        the inputs' RLCs over their output axis (k runs of m, k runs of n); the contraction over k (one dot); the
        product of the remaining scalar (one padded cell block)."""
        self._einsum_flush()
        for _ in range(m):
            self._einsum_run(n)
        self._einsum_flush()
        self._einsum_run(m)
        self.einsum += 1
        for runs, length in ((k, m), (k, n)):
            self._einsum_flush()
            for _ in range(runs):
                self._einsum_run(length)
        self._einsum_flush()
        self._einsum_run(k)
        self._einsum_flush()
        self._einsum_run(1)

    def matmul(self, m: int, k: int, n: int) -> None:
        """x (m×k) · W (k×n) as ezkl's einsum chip dispatches it: Freivalds when m, n > 1 and k > 1 after dropping
        trivial axes (`analyze_single_equation`), else one dot per output value in the main region."""
        if m > 1 and n > 1 and k > 1:
            self.freivalds(m, k, n)
        else:
            self.dots(m * n, k)

    # -- bookkeeping ---------------------------------------------------------------------------------------------
    def op(self, name: str, fn, *args, **kw) -> None:
        before, before_e = self.linear, self.einsum
        fn(*args, **kw)
        self.ops.append(OpCost(op=name, cells=self.linear - before, einsum_cells=self.einsum - before_e))

    def cells(self, name: str, n: int) -> None:
        self.linear += n
        self.ops.append(OpCost(op=name, cells=n))


def _member_ops(region: _Region, statement: LoRAStatement, *, legs: int, prefix: str, input_scale: int,
                packing: graph.OutputPacking | None = None) -> None:
    """The statement's graph (backends/ezkl/graph.py) node by node; `packing` as the single statement's graph packs
    its output (batch members are not packed)."""
    s = statement.shape
    n = s.tokens * s.rank
    region.cells(f"{prefix}input x (identity)", s.tokens * s.d_in)
    region.op(f"{prefix}x·A_qᵀ", region.matmul, s.tokens, s.d_in, s.rank)
    relabel = input_scale - statement.shift
    if relabel:
        region.cells(f"{prefix}z·2^{relabel} (relabel to the batch scale)", n)
    boolean_free = packing is not None and graph.boolean_free_requant(statement)
    if statement.shift:
        region.op(f"{prefix}z < 0", region.greater, n, legs)
        region.cells(f"{prefix}cast (identity)", n)
        region.cells(f"{prefix}c − lt (c = rounding_constant)", n)
        region.cells(f"{prefix}·2^-s (identity)", n)
        if relabel:
            region.cells(f"{prefix}rescale to the batch scale", n)
        region.cells(f"{prefix}z + …", n)
        if boolean_free:
            region.cells(f"{prefix}u·2^-s (identity)", n)
            region.cells(f"{prefix}+ 1", n)
            region.op(f"{prefix}rebase to scale {statement.shift} (Div by 2^{statement.shift})", region.rebase_div,
                      n, legs)
            region.cells(f"{prefix}− 1", n)
            region.cells(f"{prefix}quotient × 2^s", n)
            region.op(f"{prefix}u < q", region.greater, n, legs)
            region.cells(f"{prefix}cast (identity)", n)
            region.cells(f"{prefix}[u < q] at scale s", n)
            region.cells(f"{prefix}a = q − [u < q]", n)
            region.cells(f"{prefix}the rounding's constants", ROUNDING_CONSTANT_CELLS)
        else:
            region.op(f"{prefix}floor (base 2^{statement.shift})", region.floor, n, legs)
    if boolean_free:
        lo, hi = statement.z_range.lo, statement.z_range.hi
        if not statement.shift:
            region.cells(f"{prefix}a = z − {lo}", n)
        region.op(f"{prefix}relu(a)", region.relu, n, legs)
        region.cells(f"{prefix}{hi - lo} − relu(a)", n)
        region.op(f"{prefix}relu", region.relu, n, legs)
        region.cells(f"{prefix}{hi} − relu", n)
    else:
        region.op(f"{prefix}clamp ≥ {statement.z_range.lo}", region.clamp_bound, n, legs)
        region.op(f"{prefix}clamp ≤ {statement.z_range.hi}", region.clamp_bound, n, legs)
    rows, cols = s.tokens, s.d_out
    if packing is not None and packing.packed:
        rows, cols = packing.shape(s.y_shape)
        if packing.tokens > 1:
            region.op(f"{prefix}token matrix · z_q ({packing.tokens} tokens a row)", region.matmul, rows, s.tokens,
                      s.rank)
    region.op(f"{prefix}z_q·B_qᵀ", region.matmul, rows, s.rank, cols)
    if statement.y_binding is OutputBinding.PUBLIC:
        region.cells(f"{prefix}public y = instance", s.tokens * s.d_out)


def _poseidon_rows(statements: Sequence[LoRAStatement]) -> int:
    rows = 0
    for st in statements:
        s = st.shape
        if st.x_binding is ActivationBinding.HASHED:
            rows += POSEIDON_ROWS_PER_VALUE * s.tokens * s.d_in + POSEIDON_FIXED_ROWS
    params = sum(st.shape.rank * (st.shape.d_in + st.shape.d_out) + len(requant_constants(st.shift, st.z_bits))
                 for st in statements if st.adapter_binding is AdapterBinding.HASHED)
    if params:
        rows += POSEIDON_ROWS_PER_VALUE * params + POSEIDON_FIXED_ROWS    # all params: ONE flattened tensor
    return rows


def predict(target: LoRAStatement | LoRABatch, *, num_inner_cols: int = NUM_INNER_COLS,
            logrows: int | None = None) -> EzklCost:
    """The EZKL layout of a statement or batch as the backend prepares it: rows at the probe k (the instance floor,
    where `EzklBackend.prepare` runs gen_settings), then `choose_layout`. `logrows` overrides the probe k."""
    if isinstance(target, LoRABatch):
        from backends.ezkl.batch import batch_decomp_legs, batch_input_scale

        members, names, k_spread = target.members, target.names, K_SPREAD_BATCH
        legs, scale = batch_decomp_legs(target), batch_input_scale(target)
        instances = sum(instance_length(m) for m in members)
    else:
        members, names, k_spread = (target,), ("",), K_SPREAD
        instances = instance_length(target)
    probe = k_floor(instances) if logrows is None else logrows
    if not isinstance(target, LoRABatch):
        legs, scale = graph.decomposition(target, logrows=probe)[1], target.shift
    region = _Region(num_inner_cols=num_inner_cols, logrows=probe)
    packing = None if isinstance(target, LoRABatch) else graph.output_packing(target)
    for name, member in zip(names, members):
        _member_ops(region, member, legs=legs, prefix=f"{name}: " if name else "", input_scale=scale,
                    packing=packing)
    main_rows = math.ceil(region.linear / num_inner_cols)
    poseidon = _poseidon_rows(members)
    rows = max(main_rows, poseidon)
    try:
        layout = choose_layout(rows, instances, poseidon, k_spread=k_spread)
    except ValueError:                       # beyond K_MAX: still say what it would need, and that it is refused
        floor = k_floor(instances, poseidon)
        k = max(floor, min(math.ceil(math.log2(rows + EZKL_UNUSABLE_ROWS + 1)), k_spread))
        layout = Layout(logrows=k, num_inner_cols=num_inner_cols, rows=rows, k_floor=floor,
                        reason=f"k={k} > {K_MAX}: too large for this backend (use polycommit, or fewer hashed values)")
    return EzklCost(statement_id=target.id, num_inner_cols=num_inner_cols, decomp_legs=legs, probe_logrows=probe,
                    cells=region.linear, main_rows=main_rows, einsum_cells=region.einsum, poseidon_rows=poseidon,
                    rows=rows, instances=instances, layout=layout, ops=tuple(region.ops))


REPLAY_MAX_ROWS = 1 << 24
"""The largest layout `ezkl_report` replays (a few seconds of `predict`): 16M rows need ~256 GiB in EZKL, far beyond
`MEMORY_BUDGET`."""


def _rows_lower_bound(statement: LoRAStatement, num_inner_cols: int) -> int:
    """At most `predict`'s rows plus einsum cells, in O(1): the input's cells and the two products' (one dot per output
    value of a matrix-vector product, Freivalds' runs over the output and both inputs otherwise), over the columns."""
    s = statement.shape

    def product(m: int, k: int, n: int) -> int:
        return m * n + k * (m + n) if m > 1 and n > 1 and k > 1 else m * n * k

    cells = s.tokens * s.d_in + product(s.tokens, s.d_in, s.rank) + product(s.tokens, s.rank, s.d_out)
    return cells // num_inner_cols


def memory_estimate(target: LoRAStatement | LoRABatch, *, num_inner_cols: int = NUM_INNER_COLS) -> int:
    """Bytes proving `target` with EZKL allocates, at most: the tensors (`LoRAShape.tensor_bytes`) and the predicted
    layout's `memory_bytes`. When an O(1) lower bound of the rows is already beyond `MEMORY_BUDGET`, that bound
    (an underestimate, still over budget) is returned without replaying the layout, whose work grows with it."""
    members = target.members if isinstance(target, LoRABatch) else (target,)
    tensors = sum(m.shape.tensor_bytes for m in members)
    floor = tensors + BASE_BYTES + BYTES_PER_ROW * sum(_rows_lower_bound(m, num_inner_cols) for m in members)
    if floor > MEMORY_BUDGET:
        return floor
    return tensors + predict(target, num_inner_cols=num_inner_cols).memory_bytes


# ----------------------------------------------------------------------------------------------------------------------
# `zkref report --backend ezkl`
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ModulePrediction:
    """One distinct module shape of a report: its predicted EZKL layout and how many modules share it."""

    name: str
    count: int
    statement: LoRAStatement
    cost: EzklCost
    supported: bool
    support_reason: str

    def to_json(self) -> dict:
        s = self.statement.shape
        return {"name": self.name, "d_in": s.d_in, "d_out": s.d_out, "count": self.count,
                "statement": self.statement.canonical(), "supported": self.supported,
                "support_reason": self.support_reason, **self.cost.to_json()}


@dataclass(frozen=True, kw_only=True)
class EzklReport:
    """Predicted EZKL rows and k for every distinct module of a shape or preset (no EZKL run)."""

    description: str
    modules: tuple[ModulePrediction, ...]
    seconds: float

    @property
    def total_rows(self) -> int:
        return sum(m.cost.rows * m.count for m in self.modules)

    def to_json(self) -> dict:
        return {"backend": "ezkl", "description": self.description, "model": "backends/ezkl/cost.py",
                "modules": [m.to_json() for m in self.modules],
                "module_count": sum(m.count for m in self.modules), "total_rows": self.total_rows,
                "seconds": self.seconds}

    def rich_table(self):
        from rich.table import Table

        t = Table(title=f"EZKL layout predicted for {self.description} (ezkl 23 pinned settings, "
                        f"{NUM_INNER_COLS} inner columns)")
        for h in ("module", "shape", "count", "rows", "main rows", "einsum cells", "Poseidon rows", "instances",
                  "legs", "k", "why"):
            t.add_column(h, justify="left" if h in ("module", "shape", "why") else "right")
        for m in self.modules:
            c, s = m.cost, m.statement
            why = c.layout.reason if m.supported else f"{c.layout.reason}; REFUSED: {m.support_reason}"
            t.add_row(m.name.rsplit(".", 1)[-1], f"{s.shape} s={s.shift}", f"{m.count}", f"{c.rows:,}",
                      f"{c.main_rows:,}",
                      f"{c.einsum_cells:,}", f"{c.poseidon_rows:,}", f"{c.instances:,}", f"{c.decomp_legs}",
                      f"{c.logrows}", why)
        return t


def ezkl_report(*, modules: Sequence, description: str, rank: int, tokens: int, shift: int,
                supports: Callable[[LoRAStatement], Support], x_binding: str = "public",
                adapter_binding: str = "fixed", y_binding: str = "public", weight_bits: int = 4) -> EzklReport:
    """Predict every distinct module shape (`zkref.lora.presets.ModuleShape`s) as one statement each; `supports` is
    the backend's (`EzklBackend().supports`), whose answer each module reports. A shape whose layout is too large to
    replay (beyond `REPLAY_MAX_ROWS` rows, far beyond what EZKL proves) is a ValueError."""
    import time

    from zkref.lora.statement import LoRAShape

    t0 = time.perf_counter()
    groups: dict[tuple[int, int], ModulePrediction] = {}
    for m in modules:
        key = (m.d_in, m.d_out)
        if key in groups:
            groups[key] = ModulePrediction(name=groups[key].name, count=groups[key].count + m.count,
                                           statement=groups[key].statement, cost=groups[key].cost,
                                           supported=groups[key].supported, support_reason=groups[key].support_reason)
            continue
        st = LoRAStatement(shape=LoRAShape(d_in=m.d_in, d_out=m.d_out, rank=rank, tokens=tokens), shift=shift,
                           x_binding=x_binding, adapter_binding=adapter_binding, y_binding=y_binding,
                           weight_bits=weight_bits)
        if _rows_lower_bound(st, NUM_INNER_COLS) > REPLAY_MAX_ROWS:
            raise ValueError(f"{m.name} ({st.shape}): more than {REPLAY_MAX_ROWS:,} rows, too large to predict "
                             f"(and to prove: an EZKL proof of it {over_budget('', memory_estimate(st))[1:]})")
        support = supports(st)
        groups[key] = ModulePrediction(name=m.name, count=m.count, statement=st, cost=predict(st),
                                       supported=bool(support), support_reason=support.reason)
    return EzklReport(description=description, modules=tuple(groups.values()), seconds=time.perf_counter() - t0)
