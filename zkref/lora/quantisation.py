"""A quantised LoRA adapter: the float → integer map into the statement, dequantisation, and the proven error bound.

peft computes delta = s · B(A x) with s = `scaling` as peft sets it (alpha/r, alpha/√r for rsLoRA, or a per-module
alpha/rank pattern). Quantising lora_A, lora_B (int4) and x (int8) and requantising the rank-r intermediate by a
power of two turns it into the integer statement of zkref.lora.statement; this module holds the scales that map
y_q back to floats and a rigorous bound on the error of doing so. Spec: specs/quantisation.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zkref.lora.statement import (ActivationBinding, AdapterBinding, LoRAShape, LoRAStatement, LoRAWitness,
                                  OutputBinding, evaluate)
from zkref.primitives.quant import choose_shift, finite_array, quantize_int8, quantize_weights, symmetric_scale
from zkref.primitives.ranges import IntRange, check_shift


def lora_delta_float(x: np.ndarray, A: np.ndarray, B: np.ndarray, scaling: float) -> np.ndarray:
    """The float LoRA delta in PEFT's convention, torch float64: scaling · x Aᵀ Bᵀ for x of shape T × d_in."""
    import torch

    x, A, B = (finite_array(v, n) for v, n in ((x, "x"), (A, "lora_A"), (B, "lora_B")))
    _check_lora_shapes(A, B, x)
    xt, At, Bt = (torch.from_numpy(np.array(v, dtype=np.float64)) for v in (x, A, B))  # writable copies
    return (float(scaling) * (xt @ At.T @ Bt.T)).numpy()


def _check_lora_shapes(A: np.ndarray, B: np.ndarray, x: np.ndarray | None = None) -> None:
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"lora_A and lora_B must be matrices, got shapes {A.shape} and {B.shape}")
    if B.shape[1] != A.shape[0]:
        raise ValueError(f"lora_A is r×d_in and lora_B is d_out×r: got A {A.shape}, B {B.shape} (ranks differ)")
    if x is not None and (x.ndim != 2 or x.shape[1] != A.shape[1]):
        raise ValueError(f"x must be T×d_in = T×{A.shape[1]}, got shape {x.shape}")


def _check_scaling(scaling: float) -> float:
    try:
        s = float(scaling)
    except (TypeError, ValueError):
        raise ValueError(f"scaling must be a number, got {scaling!r}") from None
    if not np.isfinite(s) or s == 0:
        raise ValueError(f"scaling must be finite and non-zero, got {scaling!r}")
    return s


@dataclass(frozen=True)
class DeltaCheck:
    """The dequantised proven output against the float delta: max error, the proven bound, and whether it holds."""

    max_abs_error: float
    error_bound: float
    max_abs_delta: float
    within_bound: bool

    @property
    def relative_error(self) -> float:
        """max |error| / max |delta| (0 when the delta is 0)."""
        return self.max_abs_error / self.max_abs_delta if self.max_abs_delta else 0.0


@dataclass(frozen=True)
class Dequantisation:
    """The public numbers that turn y_q into a float delta: delta[t, o] = factor · scale_B[o] · y_q[t, o]."""

    scaling: float
    scale_A: float
    scale_B: tuple[float, ...]
    scale_x: float
    shift: int

    @property
    def factor(self) -> float:
        return self.scaling * self.scale_A * self.scale_x * float(2 ** self.shift)

    def apply(self, y_q: np.ndarray) -> np.ndarray:
        y = np.asarray(y_q)
        if y.ndim != 2 or y.shape[1] != len(self.scale_B):
            raise ValueError(f"y_q must be T×{len(self.scale_B)}, got shape {y.shape}")
        return self.factor * np.asarray(self.scale_B)[None, :] * y.astype(np.float64)

    def to_json(self) -> dict:
        return {"scaling": self.scaling, "scale_A": self.scale_A, "scale_B": list(self.scale_B),
                "scale_x": self.scale_x, "shift": self.shift}


@dataclass(frozen=True, eq=False)
class QuantizedLoRA:
    """A quantised adapter: delta[t, o] ≈ scaling · scale_B[o] · scale_A · scale_x · 2^shift · y_q[t, o].

    Per-channel mode folds lora_A's per-row scales into lora_B's columns before B is quantised per output channel:
    B·A = (B·diag(a))·(diag(1/a)·A), so the contraction over the rank stays scale-free (scale_A = 1).
    The shift is chosen here, once, from calibration activations (or given), and then fixed in every statement.
    """

    A_q: np.ndarray       # r × d_in, int4 (or int8)
    B_q: np.ndarray       # d_out × r
    scale_A: float
    scale_B: np.ndarray   # (d_out,): per output channel (constant when per-tensor)
    scale_x: float
    scaling: float        # peft's s
    shift: int
    A_eff: np.ndarray     # the float matrix A_q approximates: A (per-tensor) or diag(1/a)·A (per-channel)
    B_eff: np.ndarray     # the float matrix scale_B·B_q approximates: B or B·diag(a)
    weight_bits: int = 4

    @property
    def rank(self) -> int:
        return self.A_q.shape[0]

    @property
    def d_in(self) -> int:
        return self.A_q.shape[1]

    @property
    def d_out(self) -> int:
        return self.B_q.shape[0]

    @classmethod
    def from_float(cls, A: np.ndarray, B: np.ndarray, *, scaling: float, x_calibration: np.ndarray,
                   per_channel: bool = False, shift: int | None = None, weight_bits: int = 4) -> "QuantizedLoRA":
        """Quantise lora_A, lora_B (int4, or int8 with weight_bits=8); take the activation scale and (unless given)
        the shift from calibration data."""
        A, B, x = finite_array(A, "lora_A"), finite_array(B, "lora_B"), finite_array(x_calibration, "x_calibration")
        _check_lora_shapes(A, B, x)
        scaling = _check_scaling(scaling)
        qmax = IntRange(weight_bits).hi
        if per_channel:
            a = symmetric_scale(np.abs(A).max(axis=1), qmax)
            A_eff, B_eff = A / a[:, None], B * a[None, :]
            # rows already span [-qmax, qmax]: per-tensor scale 1 (or less for zero rows)
            qa = quantize_weights(A_eff, bits=weight_bits)
            qb = quantize_weights(B_eff, bits=weight_bits, per_channel=True)
            scale_B = qb.scale
        else:
            A_eff, B_eff = A, B
            qa, qb = quantize_weights(A, bits=weight_bits), quantize_weights(B, bits=weight_bits)
            scale_B = np.full(B.shape[0], float(qb.scale))
        qx = quantize_int8(x)
        chosen = choose_shift(qx.values @ qa.values.T) if shift is None else check_shift(shift)
        return cls(qa.values, qb.values, float(qa.scale), np.asarray(scale_B, dtype=np.float64), float(qx.scale),
                   scaling, chosen, A_eff, B_eff, weight_bits)

    # -- into the statement ------------------------------------------------------------------------------------------
    def statement(self, tokens: int, *, x_binding: ActivationBinding | str = ActivationBinding.PUBLIC,
                  adapter_binding: AdapterBinding | str = AdapterBinding.FIXED,
                  y_binding: OutputBinding | str = OutputBinding.PUBLIC) -> LoRAStatement:
        """The statement proving this adapter on `tokens` tokens (its shift fixed here, not at proving time)."""
        shape = LoRAShape(d_in=self.d_in, d_out=self.d_out, rank=self.rank, tokens=tokens)
        return LoRAStatement(shape=shape, shift=self.shift, x_binding=x_binding, adapter_binding=adapter_binding,
                             y_binding=y_binding, weight_bits=self.weight_bits)

    def quantize_x(self, x: np.ndarray) -> np.ndarray:
        """x_q for new activations with the calibrated scale (clipped to int8)."""
        return quantize_int8(x, self.scale_x).values

    def witness(self, x_q: np.ndarray) -> LoRAWitness:
        return LoRAWitness(A_q=self.A_q, B_q=self.B_q, x_q=x_q)

    def y_q(self, x_q: np.ndarray) -> np.ndarray:
        """The statement's output for quantised activations (zkref.lora.statement.evaluate)."""
        w = self.witness(x_q)
        return evaluate(self.statement(w.shape.tokens), w).y_q

    # -- back to floats --------------------------------------------------------------------------------------------
    @property
    def dequantisation(self) -> Dequantisation:
        return Dequantisation(self.scaling, self.scale_A, tuple(float(v) for v in self.scale_B), self.scale_x,
                              self.shift)

    def dequantize(self, y_q: np.ndarray) -> np.ndarray:
        """Float delta from the statement's integer output (T × d_out)."""
        return self.dequantisation.apply(y_q)

    def error_bound(self, x: np.ndarray) -> np.ndarray:
        """A rigorous bound on |dequantize(y_q) − lora_delta_float(x)| per output (T × d_out); see the spec.

        |err| <= s·( |B_eff|·D + (scale_B/2)·Σᵢ|ũᵢ| ), D = |A_eff|·|x − x̂| + (scale_A/2)·‖x̂‖₁ + R,
        with x̂ = scale_x·x_q, ũ = scale_A·scale_x·2^shift·z_q and R = scale_A·scale_x·|z − 2^shift·z_q|.
        """
        x = finite_array(x, "x")
        x_q = self.quantize_x(x)
        w = self.witness(x_q)
        trace = evaluate(self.statement(w.shape.tokens), w)
        z, z_q = trace.z, trace.z_q
        x_hat = self.scale_x * x_q
        ex = np.abs(x - x_hat)                                            # T × d_in (covers clipping)
        unit = self.scale_A * self.scale_x
        R = unit * np.abs(z - (z_q << self.shift))                         # T × r (covers clamping)
        D = ex @ np.abs(self.A_eff).T + (self.scale_A / 2) * np.abs(x_hat).sum(axis=1, keepdims=True) + R
        u_tilde = unit * float(2 ** self.shift) * np.abs(z_q)              # T × r
        s = abs(self.scaling)
        bound = s * (D @ np.abs(self.B_eff).T + (self.scale_B[None, :] / 2) * u_tilde.sum(axis=1, keepdims=True))
        return bound * (1 + 1e-9) + 1e-12                                  # float64 evaluation slack

    def check(self, x: np.ndarray, y_q: np.ndarray) -> DeltaCheck:
        """Dequantised output against the float delta of x: max error, the bound, and whether it holds."""
        x = finite_array(x, "x")
        ref = lora_delta_float(x, self.A_eff, self.B_eff, self.scaling)
        err = np.abs(self.dequantize(y_q) - ref)
        bound = self.error_bound(x)
        return DeltaCheck(float(err.max(initial=0.0)), float(bound.max(initial=0.0)),
                          float(np.abs(ref).max(initial=0.0)), bool((err <= bound).all()))
