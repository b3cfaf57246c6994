"""EZKL settings for a LoRA statement: every run argument pinned, and the layout (logrows, inner columns) chosen.

Nothing is calibrated: `calibrate_settings` rewrites scales, the rebase multiplier and logrows. The run arguments
follow from the statement alone (`run_args_for`); only the layout depends on the circuit's size, which
`gen_settings` reports (`choose_layout`).
"""
from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from backends.ezkl.graph import DECOMP_BASE, decomposition
from backends.kzg import EZKL_UNUSABLE_ROWS
from zkref.lora.statement import ActivationBinding, AdapterBinding, LoRAStatement, OutputBinding

K_MIN = 9
"""Smallest logrows: the 256-row decomposition table and EZKL's reserved rows need 2^9."""
K_MAX = 22
"""Largest logrows this backend will set up (a 2^22 proving key is tens of GB)."""
K_SPREAD = 13
"""The largest k the layout grows to before spreading rows over more columns instead: measured fastest on this
project's 2-core machines for both large shapes (c_attn T=15: k 12/13/14/15 → 14.4/13.3/14.9/21.7 s prove; q_proj
T=1: k 12/13/14 → 18.6/16.7/20.3 s; benchmarks/results/ezkl.md repeats the sweep). Re-measured on the packed,
boolean-free graph (benchmarks/results/ezkl_levers.md, levers k12 and k14, interleaved): k 12 0.98× on c_attn with a
1.85× larger proof and 1.06× on q_proj; k 14 1.16× and 1.08×."""
K_SPREAD_BATCH = 14
"""The same bound for a batch's circuit (several statements: 30k–230k rows here). Measured on batches: GPT-2 c_attn +
c_proj at T=15 proved as fast at k=14 as at 13 with less than half the proof and setup, and Llama-3-8B q,k,v at T=1
(157k rows: 20 column sets at k=13, 10 at 14) proved faster at k=14 (benchmarks/results/ezkl_batch.md)."""
NUM_INNER_COLS = 2
"""Inner columns per block: 2 was fastest or tied in every measurement (1 doubles the rows, 4 was always slower)."""
CHECK_MODE = "safe"
"""EZKL's check_mode, pinned. It shapes no constraint (the circuit and its verifying key are the same under "unsafe"):
"safe" only adds assertions while EZKL lays the witness out (digits within their range, duplicated cells equal).
EZKL's Python `prove` never verifies its own proof whatever the setting (it passes CheckMode::UNSAFE); this backend
checks the witness against `evaluate()` and verifies every proof itself. "unsafe" measured no faster
(benchmarks/results/ezkl_levers.md), so the assertions stay."""
LOOKUP_RANGE = (-32768, 32768)
"""EZKL's default lookup range, pinned; the graph uses no lookup tables (required_lookups is empty)."""
EPSILON = 2.220446049250313e-16
"""EZKL's default epsilon (f64::EPSILON), pinned; no op of the graph reads it."""


class Visibility(str, enum.Enum):
    """EZKL's visibilities as PyRunArgs takes them."""

    PUBLIC = "public"
    PRIVATE = "private"
    FIXED = "fixed"
    HASHED = "hashed"
    POLYCOMMIT = "polycommit"

    def settings_json(self) -> object:
        """How EZKL writes this visibility into settings.json."""
        return {Visibility.PUBLIC: "Public", Visibility.PRIVATE: "Private", Visibility.FIXED: "Fixed",
                Visibility.HASHED: {"Hashed": {"hash_is_public": True, "outlets": []}},
                Visibility.POLYCOMMIT: "KZGCommit"}[self]


X_VISIBILITY = {ActivationBinding.PUBLIC: Visibility.PUBLIC, ActivationBinding.HASHED: Visibility.HASHED,
                ActivationBinding.POLYCOMMIT: Visibility.POLYCOMMIT}
ADAPTER_VISIBILITY = {AdapterBinding.FIXED: Visibility.FIXED, AdapterBinding.HASHED: Visibility.HASHED,
                      AdapterBinding.POLYCOMMIT: Visibility.POLYCOMMIT, AdapterBinding.UNBOUND: Visibility.PRIVATE}
Y_VISIBILITY = {OutputBinding.PUBLIC: Visibility.PUBLIC, OutputBinding.POLYCOMMIT: Visibility.POLYCOMMIT}


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """The run arguments given to `ezkl.gen_settings`: all of them, none left to EZKL's defaults."""

    input_visibility: Visibility
    param_visibility: Visibility
    output_visibility: Visibility
    input_scale: int
    decomp_legs: int
    logrows: int
    num_inner_cols: int = NUM_INNER_COLS
    param_scale: int = 0
    scale_rebase_multiplier: int = 1
    decomp_base: int = DECOMP_BASE
    ignore_range_check_inputs_outputs: bool = True
    check_mode: str = CHECK_MODE
    lookup_range: tuple[int, int] = LOOKUP_RANGE
    bounded_log_lookup: bool = False
    rebase_frac_zero_constants: bool = False
    disable_freivalds: bool = False
    epsilon: float = EPSILON

    def __post_init__(self) -> None:
        if not K_MIN <= self.logrows <= K_MAX:
            raise ValueError(f"logrows must lie in {K_MIN}..{K_MAX}, got {self.logrows}")
        if not 1 <= self.num_inner_cols <= 8:
            raise ValueError(f"num_inner_cols must lie in 1..8, got {self.num_inner_cols}")

    def py_run_args(self):
        """The `ezkl.PyRunArgs` carrying exactly these values."""
        import ezkl

        ra = ezkl.PyRunArgs()
        ra.input_visibility = self.input_visibility.value
        ra.param_visibility = self.param_visibility.value
        ra.output_visibility = self.output_visibility.value
        ra.input_scale, ra.param_scale = self.input_scale, self.param_scale
        ra.scale_rebase_multiplier = self.scale_rebase_multiplier
        ra.decomp_base, ra.decomp_legs = self.decomp_base, self.decomp_legs
        ra.logrows, ra.num_inner_cols = self.logrows, self.num_inner_cols
        ra.ignore_range_check_inputs_outputs = self.ignore_range_check_inputs_outputs
        ra.check_mode = self.check_mode
        ra.lookup_range = self.lookup_range
        ra.bounded_log_lookup = self.bounded_log_lookup
        ra.rebase_frac_zero_constants = self.rebase_frac_zero_constants
        ra.disable_freivalds = self.disable_freivalds
        ra.epsilon = self.epsilon
        ra.variables = [("batch_size", 1)]
        return ra

    def settings_json(self) -> dict:
        """The `run_args` object EZKL writes into settings.json for these values (compared on verify)."""
        return {"input_scale": self.input_scale, "param_scale": self.param_scale, "rebase_scale": None,
                "scale_rebase_multiplier": self.scale_rebase_multiplier, "lookup_range": list(self.lookup_range),
                "logrows": self.logrows, "num_inner_cols": self.num_inner_cols, "variables": [["batch_size", 1]],
                "input_visibility": self.input_visibility.settings_json(),
                "output_visibility": self.output_visibility.settings_json(),
                "param_visibility": self.param_visibility.settings_json(),
                "rebase_frac_zero_constants": self.rebase_frac_zero_constants,
                "check_mode": self.check_mode.upper(), "decomp_base": self.decomp_base,
                "decomp_legs": self.decomp_legs, "bounded_log_lookup": self.bounded_log_lookup,
                "ignore_range_check_inputs_outputs": self.ignore_range_check_inputs_outputs,
                "epsilon": self.epsilon, "disable_freivalds": self.disable_freivalds}

    def to_json(self) -> dict:
        out = asdict(self)
        for key in ("input_visibility", "param_visibility", "output_visibility"):
            out[key] = out[key].value
        out["lookup_range"] = list(self.lookup_range)
        return out


def run_args_for(statement: LoRAStatement, *, logrows: int, num_inner_cols: int = NUM_INNER_COLS) -> RunSettings:
    """The pinned run arguments of `statement` at a given layout.

    Scales: inputs at scale `shift` (the graph feeds x_q / 2^shift), params at 0, rebase multiplier 1 — the graph never
    exceeds scale `shift`, so nothing is rebased. `ignore_range_check_inputs_outputs` is sound here because EZKL's
    input/output "range check" only bounds values by decomp_base^legs: the verifier checks public and committed x
    and y itself (`zkref.lora.statement.check_public`); the requantisation's decompositions stay constrained.
    """
    base, legs = decomposition(statement, logrows=logrows)
    return RunSettings(input_visibility=X_VISIBILITY[statement.x_binding],
                       param_visibility=ADAPTER_VISIBILITY[statement.adapter_binding],
                       output_visibility=Y_VISIBILITY[statement.y_binding],
                       input_scale=statement.shift, decomp_base=base, decomp_legs=legs, logrows=logrows,
                       num_inner_cols=num_inner_cols)


@dataclass(frozen=True, kw_only=True)
class Layout:
    """The chosen logrows and inner columns, and why."""

    logrows: int
    num_inner_cols: int
    rows: int
    k_floor: int
    reason: str


def k_floor(instances: int, module_rows: int = 0) -> int:
    """The smallest k EZKL can lay this statement out at: the public instances share ONE column of 2^k rows (minus
    EZKL's unusable rows), and so do the rows of EZKL's Poseidon module (hashed x or params: ~41 rows per value,
    never spread over columns); the decomposition table needs 2^K_MIN."""
    need = max(instances, module_rows)
    return max(K_MIN, math.ceil(math.log2(need + EZKL_UNUSABLE_ROWS + 1)))


def choose_layout(rows: int, instances: int, module_rows: int = 0, *, k_spread: int = K_SPREAD) -> Layout:
    """logrows and inner columns for the smallest proving time, from the row count `gen_settings` reports at 2 inner
    columns: the smallest k the rows fit (one column set: fewer columns, smaller proof), but no larger than K_SPREAD
    (beyond it, spreading rows over more columns proves faster on this machine), and never below the floor set by
    the instance column and the Poseidon module (`k_floor`). Batches pass `k_spread` = `K_SPREAD_BATCH`.
    """
    floor = k_floor(instances, module_rows)
    fit = max(K_MIN, math.ceil(math.log2(rows + EZKL_UNUSABLE_ROWS + 1)))
    k = max(floor, min(fit, k_spread))
    if k > K_MAX:
        raise ValueError(f"the statement needs logrows {k} (> {K_MAX}): too large for this backend")
    if k == floor and floor > min(fit, k_spread):
        what = f"{instances} public instances" if instances >= module_rows else f"{module_rows} Poseidon rows"
        why = f"k={k}: {what} need one column of 2^{k} rows"
    elif fit <= k_spread:
        why = f"k={k}: {rows} rows fit one column set"
    else:
        why = f"k={k}: {rows} rows spread over {math.ceil(rows / ((1 << k) - EZKL_UNUSABLE_ROWS))} column sets " \
              f"(k={k_spread} proves fastest here)"
    return Layout(logrows=k, num_inner_cols=NUM_INNER_COLS, rows=rows, k_floor=floor, reason=why)


def freivalds_equation(equation: str, dims: dict[str, int]) -> bool:
    """Whether EZKL lays this einsum out in its Freivalds chip rather than with base ops in the main region: its
    `analyze_single_equation` dispatch (ezkl 23, src/circuit/ops/chip/einsum/analysis.rs), restated — after dropping
    axes of length 1, an equation with an output, an axis shared by two inputs and more than one axis not shared."""
    inputs, output = equation.split("->")
    operands = ["".join(c for c in operand if dims[c] > 1) for operand in inputs.split(",")]
    kept_output = [c for c in output if dims.get(c, 0) > 1]
    seen: set[str] = set()
    shared: list[str] = []
    for operand in operands:
        for c in operand:
            (shared.append if c in seen else seen.add)(c)
    not_shared = [c for c, n in dims.items() if c not in shared and n > 1]
    return bool(kept_output) and bool(shared) and len(not_shared) > 1


def trim_einsum_equations(settings: dict) -> dict:
    """Settings whose einsum equations are only those EZKL proves by Freivalds (`freivalds_equation`).

    EZKL sizes the Freivalds chip's six column groups to the summed reduction lengths of EVERY einsum gen_settings
    records (graph/model.rs configure → analyze_einsum_usage), including those it then lays out with base ops in the
    main region — each decomposition's recomposition, ~880 cells apiece at c_attn T=15 — so GPT-2 c_attn got a third
    block of columns (36 instead of 24) for cells it never assigns. The list only sizes columns: the chip's cells
    (`total_einsum_col_size`, from EZKL's own dummy layout) and every constraint are unchanged; too small a chip would
    make setup fail, never pass. Measured (benchmarks/results/ezkl_levers_trim.md, 5 interleaved rounds): c_attn T=15
    prove 3.94 s trimmed against 4.71 s untrimmed (0.83×), proving key 209 → 141 MiB, fixed columns 84 → 51, proof
    14,656 → 11,360 B; no change where no product is a Freivalds one (T = 1)."""
    params = settings.get("einsum_params") or {}
    equations = params.get("equations") or []
    kept = [[eq, dims] for eq, dims in equations if freivalds_equation(eq, dims)]
    if not kept or len(kept) == len(equations):
        return settings
    return {**settings, "einsum_params": {**params, "equations": kept}}


def committed_input_cells(statements: Sequence[LoRAStatement]) -> int:
    """Cells of the graph's inputs that EZKL's polycommit module assigns before the model is laid out: every x bound by
    polycommit (T·d_in values per statement)."""
    return sum(st.shape.tokens * st.shape.d_in for st in statements if st.x_binding is ActivationBinding.POLYCOMMIT)


def fit_main_region(settings: dict, statements: Sequence[LoRAStatement]) -> dict:
    """Settings whose main-region capacity (`total_assignments`) leaves out the committed inputs' cells.

    EZKL sizes the three main-region advice tensors to `total_assignments`, the cells its dummy layout counted (graph/
    vars.rs: one block of num_inner_cols columns per 2·(2^k − blinding) cells), and that pass lays every input out as
    an identity. A polycommit x never reaches that identity at real layout: the polycommit module assigns it in its
    own columns first, and the Input op returns cells already assigned (circuit/ops/mod.rs, Input::layout:
    `all_prev_assigned`). Counting them again gave GPT-2 c_attn T=15 a second block of columns it never fills. Like
    `trim_einsum_equations` this only sizes columns: every constraint is unchanged, and a capacity too small makes
    setup fail (EZKL panics "index out of bounds"), never pass; tests/test_ezkl_backend.py checks both. Measured:
    benchmarks/results/ezkl_levers.md, lever "uncut"."""
    cut = committed_input_cells(statements)
    total = settings.get("total_assignments")
    if not cut or not isinstance(total, int) or total <= cut:
        return settings
    return {**settings, "total_assignments": total - cut}


CANONICAL_SET_KEYS = ("required_range_checks", "required_lookups")
"""Settings lists EZKL fills from a hash set (their order changes run to run, and with it the verifying key)."""


def canonicalise(settings: dict) -> dict:
    """Settings with the run-to-run noise removed: set-like lists sorted, the timestamp dropped.

    Compiling and setting up from canonical settings makes the circuit, and so the verifying key, reproducible.
    """
    out = {k: v for k, v in settings.items() if k != "timestamp"}
    for key in CANONICAL_SET_KEYS:
        if isinstance(out.get(key), list):
            out[key] = sorted(out[key], key=repr)
    return out
