"""One pipeline from float tensors to a checked proof, shared by the command line, the demo and the server.

    quantise   float lora_A, lora_B, peft's scaling, calibration x  →  QuantizedLoRA (shift fixed here, once)
    prepare    + the call's activations and the bindings            →  Prepared (statement, witness)
    prove      with a backend                                       →  Proven (public values, proof, verdict)
    compare    dequantised y_q against the float delta              →  DeltaCheck (error, proven bound)
    cost       zkref's accounting of the statement's layout         →  CircuitCost

Each step returns a typed result. The statement is fixed before any proof: its shift comes from the calibration
activations given to `quantise`, never from the values being proven.
"""
from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from backends.base import AdapterAnchor, Backend, BatchProofResult, Progress, ProofResult, Verdict
from zkref.lora.batch import LoRABatch
from zkref.lora.circuit import LoRACircuit, LoRALayout, unsupported_reason
from zkref.lora.quantisation import DeltaCheck, QuantizedLoRA, ScaleMode
from zkref.lora.presets import ModuleShape
from zkref.models.peft_loading import CapturedIO, LoRAModule
from zkref.lora.statement import ActivationBinding, AdapterBinding, LoRAStatement, LoRAWitness, OutputBinding
from zkref.plonkish.accounting import CircuitCost, account
from zkref.plonkish.mock_prover import MockProver
from zkref.primitives.quant import finite_array


@dataclass(frozen=True, kw_only=True)
class Bindings:
    """How x, the adapter and y are bound: defaults give the statement every backend supports."""

    x: ActivationBinding = ActivationBinding.PUBLIC
    adapter: AdapterBinding = AdapterBinding.FIXED
    y: OutputBinding = OutputBinding.PUBLIC

    def __post_init__(self) -> None:
        for name, kind in (("x", ActivationBinding), ("adapter", AdapterBinding), ("y", OutputBinding)):
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                raise ValueError(f"{name} binding must be one of {', '.join(m.value for m in kind)}, "
                                 f"got {getattr(self, name)!r}") from None


def quantise(lora_A: np.ndarray, lora_B: np.ndarray, *, scaling: float, x_calibration: np.ndarray,
             per_channel: bool = False, shift: int | None = None, weight_bits: int = 4, z_bits: int = 8,
             x_mode: ScaleMode | str = ScaleMode.PER_TENSOR, x_bits: int = 8, group_size: int = 0) -> QuantizedLoRA:
    """Quantise an adapter (int4 or wider) and fix the activation scale and shift from calibration activations."""
    return QuantizedLoRA.from_float(lora_A, lora_B, scaling=scaling, x_calibration=x_calibration,
                                    per_channel=per_channel, shift=shift, weight_bits=weight_bits, z_bits=z_bits,
                                    x_mode=x_mode, activation_bits=x_bits, group_size=group_size)


@dataclass(frozen=True)
class Precision:
    """How an adapter is quantised: weight width (the circuit's cost), per-channel weight scales (free: outside the
    circuit), z_q's width (`LoRAStatement.z_bits`: in the circuit), the activations' scale mode (free) and width
    (`LoRAStatement.activation_bits`: in the circuit); or int4 with group-wise scales of lora_A (`group_size`),
    proven as int12 weights (`QuantizedLoRA.from_float`)."""

    weight_bits: int
    per_channel: bool
    z_bits: int = 8
    x_mode: ScaleMode = ScaleMode.PER_TENSOR
    x_bits: int = 8
    group_size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "x_mode", ScaleMode(self.x_mode))

    def quantise(self, lora_A: np.ndarray, lora_B: np.ndarray, *, scaling: float, x_calibration: np.ndarray,
                 shift: int | None = None) -> QuantizedLoRA:
        return quantise(lora_A, lora_B, scaling=scaling, x_calibration=x_calibration, per_channel=self.per_channel,
                        shift=shift, weight_bits=self.weight_bits, z_bits=self.z_bits, x_mode=self.x_mode,
                        x_bits=self.x_bits, group_size=self.group_size)

    def __str__(self) -> str:
        z = "" if self.z_bits == 8 else f", z int{self.z_bits}"
        x = "" if self.x_bits == 8 else f", x int{self.x_bits}"
        x += "" if self.x_mode is ScaleMode.PER_TENSOR else " per token" if self.x_bits != 8 else ", x per token"
        scales = f"group-wise g={self.group_size} (as int12)" if self.group_size else \
            "per-channel" if self.per_channel else "per-tensor"
        return f"int{self.weight_bits} {scales}{z}{x}"


_TOKEN = ScaleMode.PER_TOKEN
PRECISIONS = (
    # the design note's int8 z_q, one calibrated int8 activation scale (what the protocol carried so far)
    Precision(4, False), Precision(4, True), Precision(8, False), Precision(8, True),
    # a wider z_q
    Precision(4, True, 16), Precision(8, True, 12), Precision(8, True, 16),
    # each token's own activation scale, and group-wise int4 (groups of 32 or 64 input columns)
    Precision(4, True, 16, _TOKEN), Precision(4, True, 16, _TOKEN, group_size=32),
    Precision(4, True, 16, _TOKEN, group_size=64), Precision(8, False, 16, _TOKEN), Precision(8, True, 12, _TOKEN),
    Precision(8, True, 16, _TOKEN),
    # wider activations and weights
    Precision(8, True, 16, _TOKEN, 12), Precision(12, True, 16, _TOKEN), Precision(12, True, 16, _TOKEN, 12),
    Precision(12, True, 16, ScaleMode.PER_TENSOR, 12), Precision(16, True, 16, _TOKEN, 16),
)
"""Every precision `choose_precision` weighs, in steps: the design note's four, a wider z_q, per-token activation
scales, then wider activations and weights (benchmarks/results/accuracy.md measures each)."""


@dataclass(frozen=True)
class PrecisionTrial:
    """One precision tried on calibration activations: its measured relative error of the delta and its predicted
    proving cost (rows of the backend's layout)."""

    precision: Precision
    relative_error: float
    within: bool
    cost_rows: int = 0


def proving_rows(statement: LoRAStatement, backend: str = "ezkl") -> int:
    """The rows a backend's layout of `statement` takes: EZKL's cost model (backends/ezkl/cost.py, checked against
    gen_settings) or zkref's accounting of its own circuit."""
    if backend == "ezkl":
        from backends.ezkl.cost import predict

        return predict(statement).rows
    if backend == "zkref":
        accounted = cost(statement)
        if accounted is None:
            raise ValueError(f"zkref has no layout of {statement.describe()}")
        return accounted.rows_used
    raise ValueError(f"backend must be ezkl or zkref, got {backend!r}")


def choose_precision(lora_A: np.ndarray, lora_B: np.ndarray, *, scaling: float, x_calibration: np.ndarray,
                     max_rel_error: float, shift: int | None = None, precisions: Sequence[Precision] = PRECISIONS,
                     backend: str = "ezkl") -> tuple[QuantizedLoRA, list[PrecisionTrial]]:
    """Among `precisions`, the cheapest to prove whose measured delta error on the calibration activations is within
    `max_rel_error` (max |dequantised − float delta| / max |float delta|).

    Cost is the backend's predicted rows for a call of the calibration's length (`proving_rows`); equal rows go to
    the narrower statement weights (more lookups per product in zkref's table layout; EZKL measured int8 weights
    1.3–3.4× slower in benchmarks/results/performance.md, equal on c_attn in accuracy.md; group-wise int4 is proven
    as int12), then the narrower z_q and x_q, then the smaller error. ValueError, naming the best error reached, when none is accurate
    enough."""
    if not 0 < float(max_rel_error) < 1e6:
        raise ValueError(f"max_rel_error must be a positive number, got {max_rel_error!r}")
    if not precisions:
        raise ValueError("no precisions to choose from")
    x_calibration = finite_array(x_calibration, "x_calibration")
    trials: list[PrecisionTrial] = []
    quantised: dict[Precision, QuantizedLoRA] = {}
    for precision in precisions:
        q = precision.quantise(lora_A, lora_B, scaling=scaling, x_calibration=x_calibration, shift=shift)
        error = compare(prepare(q, x_calibration), q.y_q(q.quantize_x(x_calibration))).relative_error
        rows = proving_rows(q.statement(max(1, x_calibration.reshape(-1, q.d_in).shape[0])), backend)
        trials.append(PrecisionTrial(precision, error, error <= max_rel_error, rows))
        quantised[precision] = q
    within = [t for t in trials if t.within]
    if within:
        best = min(within, key=lambda t: (t.cost_rows, quantised[t.precision].weight_bits, t.precision.z_bits,
                                          t.precision.x_bits, t.relative_error))
        return quantised[best.precision], trials
    best_trial = min(trials, key=lambda t: t.relative_error)
    raise ValueError(f"no precision reaches a relative error of {max_rel_error:g} on the calibration activations; "
                     f"the best is {best_trial.precision} at {best_trial.relative_error:.3g}")


@dataclass(frozen=True, eq=False)
class CalibratedModule:
    """One LoRA layer as peft built it, what it saw on the calibration prompt, and its quantisation (shift fixed)."""

    module: LoRAModule
    captured: CapturedIO
    quantised: QuantizedLoRA
    trials: tuple[PrecisionTrial, ...] = ()

    @property
    def name(self) -> str:
        return self.module.name


def calibrate(peft_model, calibration_ids: Sequence[int], *, modules: Sequence[str] | None = None,
              precision: Precision = PRECISIONS[0], max_rel_error: float | None = None, shift: int | None = None,
              adapter: str | None = None, precisions: Sequence[Precision] = PRECISIONS) -> list[CalibratedModule]:
    """Quantise every LoRA layer of a peft model (or those named) once, from one calibration prompt.

    The activation scale and the shift come from the calibration activations (never from a later call's); the
    precision is given, or with `max_rel_error` chosen per module among `precisions` (`choose_precision`).
    """
    from zkref.models.peft_loading import capture_module_io, lora_modules

    layers = lora_modules(peft_model, adapter)
    if modules is not None:
        unknown = sorted(set(modules) - {m.name for m in layers})
        if unknown:
            raise ValueError(f"no LoRA module named {', '.join(unknown[:3])}; the adapter has "
                             f"{', '.join(m.name for m in layers[:4])}{'…' if len(layers) > 4 else ''}")
        layers = [m for m in layers if m.name in set(modules)]
    captured = capture_module_io(peft_model, list(calibration_ids), [m.name for m in layers], adapter=adapter)
    out = []
    for m in layers:
        x = captured[m.name].x
        if max_rel_error is not None:
            q, trials = choose_precision(m.lora_A, m.lora_B, scaling=m.scaling, x_calibration=x,
                                         max_rel_error=max_rel_error, shift=shift, precisions=precisions)
        else:
            q, trials = precision.quantise(m.lora_A, m.lora_B, scaling=m.scaling, x_calibration=x, shift=shift), []
        out.append(CalibratedModule(m, captured[m.name], q, tuple(trials)))
    return out


@dataclass(frozen=True, eq=False)
class Prepared:
    """One call ready to prove: the quantised adapter, the float activations, the statement and its witness."""

    quantised: QuantizedLoRA
    x: np.ndarray
    statement: LoRAStatement
    witness: LoRAWitness


def prepare(quantised: QuantizedLoRA, x: np.ndarray, bindings: Bindings = Bindings()) -> Prepared:
    """Quantise the call's activations with the adapter's calibrated scale and state what will be proven."""
    x = finite_array(x, "x")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != quantised.d_in:
        raise ValueError(f"x must be T×{quantised.d_in} (or a single d_in vector), got shape {x.shape}")
    statement = quantised.statement(x.shape[0], x_binding=bindings.x, adapter_binding=bindings.adapter,
                                    y_binding=bindings.y)
    return Prepared(quantised, x, statement, quantised.witness(quantised.quantize_x(x)))


@dataclass(frozen=True, eq=False)
class Proven:
    """A proof of a prepared call and the verifier's verdict on it, against the values the verifier holds."""

    result: ProofResult
    anchor: AdapterAnchor
    verdict: Verdict
    prove_seconds: float
    verify_seconds: float

    @property
    def y_q(self) -> np.ndarray:
        return self.result.public.y_q


def prove(prepared: Prepared, backend: Backend, *, progress: Progress | None = None) -> Proven:
    """Prove with `backend`, then verify against the statement's public values and the adapter's published anchor."""
    support = backend.supports(prepared.statement)
    if not support:
        raise ValueError(f"backend {backend.name} cannot prove this statement: {support.reason}")
    anchor = backend.anchor(prepared.statement, prepared.witness)
    t0 = time.perf_counter()
    result = backend.prove(prepared.statement, prepared.witness, progress=progress)
    t1 = time.perf_counter()
    if progress:
        progress("verify")
    verdict = backend.verify(prepared.statement, result.public, result.proof, anchor=anchor)
    return Proven(result, anchor, verdict, t1 - t0, time.perf_counter() - t1)


def compare(prepared: Prepared, y_q: np.ndarray) -> DeltaCheck:
    """The dequantised output against the float delta of the call's activations, with the proven error bound."""
    return prepared.quantised.check(prepared.x, y_q)


def cost(statement: LoRAStatement, layout: LoRALayout = LoRALayout()) -> CircuitCost | None:
    """zkref's accounting of the statement's layout (None when zkref has no layout for it, e.g. polycommit)."""
    if unsupported_reason(statement, layout):
        return None
    return account(LoRACircuit(statement=statement, layout=layout), "LoRACircuit")


@dataclass(frozen=True, eq=False)
class PipelineResult:
    """Everything one run established: the statement, its proof and verdict, the accuracy check, the cost."""

    prepared: Prepared
    proven: Proven
    check: DeltaCheck
    cost: CircuitCost | None

    @property
    def ok(self) -> bool:
        return bool(self.proven.verdict) and self.check.within_bound


def run(prepared: Prepared, backend: Backend, *, layout: LoRALayout = LoRALayout(),
        progress: Progress | None = None) -> PipelineResult:
    """prove → compare → cost, for one prepared call."""
    proven = prove(prepared, backend, progress=progress)
    return PipelineResult(prepared, proven, compare(prepared, proven.y_q), cost(prepared.statement, layout))


# ------------------------------------------------------------------------------------------------------------------
# Whole adapters: every module of a model checked with zkref's circuits
# ------------------------------------------------------------------------------------------------------------------
RANDOM_WEIGHT_STD = 0.02
"""Seeded random adapters look like trained LoRA weights (small); activations like layer-normed inputs (std 1)."""


@dataclass(frozen=True)
class ModuleCheck:
    """One module's mock check: its statement, whether zkref's circuit is satisfied, k and the time taken."""

    name: str
    statement_id: str
    d_in: int
    d_out: int
    satisfied: bool
    reason: str
    k: int
    seconds: float


def random_call(d_in: int, d_out: int, rank: int, tokens: int, seed: int) -> Prepared:
    """A seeded random float adapter and call, quantised (shift from the same activations): a stand-in module."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((rank, d_in)) * RANDOM_WEIGHT_STD
    B = rng.standard_normal((d_out, rank)) * RANDOM_WEIGHT_STD
    x = rng.standard_normal((tokens, d_in))
    return prepare(quantise(A, B, scaling=1.0, x_calibration=x), x)


def _check_module(task: tuple[str, int, int, int, int, int, int, str]) -> ModuleCheck:
    """Worker: build one module's random call and mock-check zkref's layout of it (plain values in, no pickled state)."""
    name, d_in, d_out, rank, tokens, seed, lanes, products = task
    t0 = time.perf_counter()
    prepared = random_call(d_in, d_out, rank, tokens, seed)
    circuit = LoRACircuit(statement=prepared.statement, witness=prepared.witness,
                          layout=LoRALayout(lanes=lanes, products=products))
    prover = MockProver(circuit, circuit.public_inputs())
    failures = prover.verify()
    reason = "satisfied" if not failures else f"{len(failures)} failure(s), first: {failures[0]}"
    return ModuleCheck(name, prepared.statement.id, d_in, d_out, not failures, reason, prover.k,
                       time.perf_counter() - t0)


def check_modules(modules: Sequence[ModuleShape], *, rank: int, tokens: int = 1, layout: LoRALayout = LoRALayout(),
                  seed: int = 0, workers: int | None = None,
                  progress: Callable[[ModuleCheck], None] | None = None) -> list[ModuleCheck]:
    """Mock-check a seeded random adapter on every module (and every repeat of a shape), in worker processes.

    Results come back in module order; `progress` is called as each module finishes.
    """
    tasks = [(f"{m.name}[{c}]" if m.count > 1 else m.name, m.d_in, m.d_out, rank, tokens, seed + i, layout.lanes,
              layout.products.value)
             for i, (m, c) in enumerate((m, c) for m in modules for c in range(m.count))]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    if workers == 1:
        results = []
        for task in tasks:
            results.append(_check_module(task))
            if progress:
                progress(results[-1])
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = []
        for result in pool.map(_check_module, tasks, chunksize=1):
            results.append(result)
            if progress:
                progress(result)
        return results


# ------------------------------------------------------------------------------------------------------------------
# Several modules of one call: one proof per module, or one batch proof
# ------------------------------------------------------------------------------------------------------------------
BATCH_MAX_ROWS = 230_000
"""EZKL: batch while the batch's predicted rows (backends/ezkl/cost.py) stay within the largest batch measured to win
(Llama-3-8B q,k,v,o at T=1: 226,244 rows; benchmarks/results/ezkl_batch.md). Beyond it nothing was measured, and a
batch's peak memory is about the sum of its members' (2.4 GiB there) where one proof per module peaks at the largest."""


class ProvingMode(str, enum.Enum):
    """How `prove_modules` proves several modules: the measured default, or forced."""

    AUTO = "auto"
    BATCH = "batch"
    PER_MODULE = "per-module"


@dataclass(frozen=True)
class ProvingChoice:
    """Batch or one proof per module, and why."""

    batch: bool
    reason: str


def choose_proving(batch: LoRABatch, backend: Backend) -> ProvingChoice:
    """The default rule: one batch proof whenever the backend can prove the batch and, for EZKL, its predicted rows are
    within `BATCH_MAX_ROWS`; else one proof per module.

    Why (benchmarks/results/ezkl_batch.md, x and y polycommit, adapters fixed): in every measured workload the one
    batch proof was 2.0–3.2× smaller than the per-module proofs together and its warm prove 1.09–1.29× faster, at
    1.5–3× the peak memory; verify time was about equal (0.97–1.67×), and the tiny batch's cold setup was slower.
    The zkref backend's batch is the same mock checks under one proof object.
    """
    support = backend.supports_batch(batch)
    if not support:
        return ProvingChoice(False, f"one proof per module: the backend cannot batch them ({support.reason})")
    if backend.name == "ezkl":
        from backends.ezkl.cost import predict

        rows = predict(batch).rows
        if rows > BATCH_MAX_ROWS:
            return ProvingChoice(False, f"one proof per module: the batch's {rows:,} predicted rows exceed "
                                        f"{BATCH_MAX_ROWS:,}, the largest batch measured to win")
        return ProvingChoice(True, f"one batch proof: {rows:,} predicted rows (≤ {BATCH_MAX_ROWS:,}); measured "
                                   "smaller and faster to prove than one proof per module")
    return ProvingChoice(True, "one batch proof: the backend checks the same statements under one proof")


@dataclass(frozen=True, eq=False)
class ModulesProven:
    """Several modules of one call proven either as one batch (`batch_result`) or one by one (`modules`)."""

    batch: LoRABatch
    choice: ProvingChoice
    batch_result: BatchProofResult | None
    batch_anchor: AdapterAnchor | None
    batch_verdict: Verdict | None
    modules: tuple[Proven, ...]
    prove_seconds: float
    verify_seconds: float

    @property
    def names(self) -> tuple[str, ...]:
        return self.batch.names

    @property
    def ok(self) -> bool:
        if self.batch_result is not None:
            return bool(self.batch_verdict)
        return all(bool(m.verdict) for m in self.modules)

    @property
    def y_q(self) -> dict[str, np.ndarray]:
        """Each module's proven output."""
        if self.batch_result is not None:
            return {n: p.y_q for n, p in zip(self.batch.names, self.batch_result.publics)}
        return {n: m.y_q for n, m in zip(self.batch.names, self.modules)}


def prove_modules(named: Sequence[tuple[str, Prepared]], backend: Backend, *,
                  mode: ProvingMode | str = ProvingMode.AUTO, progress: Progress | None = None) -> ModulesProven:
    """Prove several prepared modules of one call — as one batch proof or one proof per module (`choose_proving`
    unless `mode` forces it) — and verify against each module's public values and the published anchor(s)."""
    mode = ProvingMode(mode)
    if not named:
        raise ValueError("no modules to prove")
    batch = LoRABatch.of([(name, p.statement) for name, p in named])
    witnesses = [p.witness for _, p in named]
    if mode is ProvingMode.AUTO:
        choice = choose_proving(batch, backend)
    elif mode is ProvingMode.BATCH:
        support = backend.supports_batch(batch)
        if not support:
            raise ValueError(f"backend {backend.name} cannot prove these modules as one batch: {support.reason}")
        choice = ProvingChoice(True, "one batch proof (forced)")
    else:
        choice = ProvingChoice(False, "one proof per module (forced)")
    if not choice.batch:
        modules = tuple(prove(p, backend, progress=progress) for _, p in named)
        return ModulesProven(batch, choice, None, None, None, modules, sum(m.prove_seconds for m in modules),
                             sum(m.verify_seconds for m in modules))
    anchor = backend.anchor_batch(batch, witnesses)
    t0 = time.perf_counter()
    result = backend.prove_batch(batch, witnesses, progress=progress)
    t1 = time.perf_counter()
    if progress:
        progress("verify")
    verdict = backend.verify_batch(batch, result.publics, result.proof, anchor=anchor)
    return ModulesProven(batch, choice, result, anchor, verdict, (), t1 - t0, time.perf_counter() - t1)
