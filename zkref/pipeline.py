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

import time
from dataclasses import dataclass

import numpy as np

from backends.base import AdapterAnchor, Backend, Progress, ProofResult, Verdict
from zkref.lora.circuit import LoRACircuit, LoRALayout, unsupported_reason
from zkref.lora.quantisation import DeltaCheck, QuantizedLoRA
from zkref.lora.statement import ActivationBinding, AdapterBinding, LoRAStatement, LoRAWitness, OutputBinding
from zkref.plonkish.accounting import CircuitCost, account
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
             per_channel: bool = False, shift: int | None = None) -> QuantizedLoRA:
    """Quantise an adapter (int4) and fix the activation scale and shift from calibration activations."""
    return QuantizedLoRA.from_float(lora_A, lora_B, scaling=scaling, x_calibration=x_calibration,
                                    per_channel=per_channel, shift=shift)


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
    if unsupported_reason(statement):
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
