"""Exact integer semantics of the quantised LoRA statement: int4 weights, int8 activations, power-of-two requant.

What the circuit proves is integer arithmetic; this module maps floats to those integers (symmetric scales, rounding
half away from zero as EZKL does), computes the integer forward pass, dequantises, and bounds the error against the
float LoRA delta. Spec: specs/quantisation.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

W_MIN, W_MAX = -8, 7          # int4 weights
A_MIN, A_MAX = -128, 127      # int8 activations (x_q and the requantised z_q)
PRODUCT_ABS_MAX = 8 * 128     # max |w·a|
MAX_SHIFT = 40


def _finite(x: np.ndarray | float, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinity")
    return arr


def _ints(z: np.ndarray | int, what: str) -> np.ndarray:
    arr = np.asarray(z)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_shift(shift: object) -> int:
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or not 0 <= int(shift) <= MAX_SHIFT:
        raise ValueError(f"shift must be an integer in 0..{MAX_SHIFT}, got {shift!r}")
    return int(shift)


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """Round floats to integers, ties away from zero: sign(v)·floor(|v| + 0.5) (0.5→1, -0.5→-1, 2.5→3)."""
    arr = _finite(x, "value to round")
    return (np.sign(arr) * np.floor(np.abs(arr) + 0.5)).astype(np.int64)


def div_pow2_round_half_away(z: np.ndarray | int, shift: int) -> np.ndarray:
    """round_half_away(z / 2^shift) in pure integer arithmetic: sign(z)·((|z| + 2^(shift-1)) >> shift)."""
    z = _ints(z, "z")
    shift = _check_shift(shift)
    if shift == 0:
        return z.copy()
    return np.sign(z) * ((np.abs(z) + (1 << (shift - 1))) >> shift)


@dataclass(frozen=True)
class Requantised:
    """z_q = clamp(round_half_away(z / 2^shift), -128, 127), and how many entries the clamp changed."""

    z_q: np.ndarray
    clamped: int


def requantize(z: np.ndarray | int, shift: int) -> Requantised:
    """Requantise the rank-r intermediate to int8 (what the Requant chip proves)."""
    rounded = div_pow2_round_half_away(z, shift)
    z_q = np.clip(rounded, A_MIN, A_MAX)
    return Requantised(z_q, int(np.count_nonzero(z_q != rounded)))


def choose_shift(z: np.ndarray | int) -> int:
    """Smallest shift with no clamping on the given intermediate values."""
    z = _ints(z, "z")
    for shift in range(MAX_SHIFT + 1):
        if requantize(z, shift).clamped == 0:
            return shift
    return MAX_SHIFT


def static_shift(d_in: int) -> int:
    """A shift that never clamps for any int4 A and int8 x: covers |z| <= d_in·1024."""
    if d_in < 1:
        raise ValueError("d_in must be positive")
    worst = np.array([-d_in * PRODUCT_ABS_MAX, d_in * PRODUCT_ABS_MAX], dtype=np.int64)
    return choose_shift(worst)


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer values and the scale(s) that map them back: real ≈ scale · values (scale per row when per-channel)."""

    values: np.ndarray
    scale: np.ndarray  # shape () for per-tensor, (rows,) for per-channel

    def dequantize(self) -> np.ndarray:
        s = self.scale if self.scale.ndim == 0 else self.scale[:, None]
        return s * self.values


def _symmetric_scale(absmax: np.ndarray, qmax: int) -> np.ndarray:
    return np.where(absmax > 0, absmax / qmax, 1.0)


def quantize_int4(w: np.ndarray, per_channel: bool = False) -> QuantizedTensor:
    """Symmetric int4: scale = max|w| / 7 (per tensor, or per output row), q = round_half_away(w / scale) in [-7, 7].

    An all-zero tensor or row gets scale 1. Since |w / scale| <= 7, rounding never leaves [-8, 7] (no clipping).
    """
    w = _finite(w, "weights")
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D matrix, got shape {w.shape}")
    absmax = np.abs(w).max(axis=1) if per_channel else np.array(np.abs(w).max(initial=0.0))
    scale = _symmetric_scale(absmax, 7)
    s = scale[:, None] if per_channel else scale
    return QuantizedTensor(np.clip(round_half_away(w / s), W_MIN, W_MAX), np.asarray(scale, dtype=np.float64))


def quantize_int8(x: np.ndarray, scale: float | None = None) -> QuantizedTensor:
    """Symmetric per-tensor int8: scale = max|x| / 127 unless given; values clipped to [-128, 127]."""
    x = _finite(x, "activations")
    if scale is None:
        scale = float(_symmetric_scale(np.array(np.abs(x).max(initial=0.0)), 127))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"activation scale must be positive and finite, got {scale}")
    return QuantizedTensor(np.clip(round_half_away(x / scale), A_MIN, A_MAX), np.asarray(scale, dtype=np.float64))


def lora_delta_float(x: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float) -> np.ndarray:
    """The float LoRA delta in PEFT's convention, torch float64: (alpha/r) · x Aᵀ Bᵀ for x of shape T×d_in."""
    import torch

    x, A, B = (_finite(v, n) for v, n in ((x, "x"), (A, "lora_A"), (B, "lora_B")))
    _check_lora_shapes(A, B, x)
    r = A.shape[0]
    xt, At, Bt = (torch.from_numpy(np.ascontiguousarray(v)) for v in (x, A, B))
    return ((alpha / r) * (xt @ At.T @ Bt.T)).numpy()


def _check_lora_shapes(A: np.ndarray, B: np.ndarray, x: np.ndarray | None = None) -> None:
    if A.ndim != 2 or B.ndim != 2:
        raise ValueError(f"lora_A and lora_B must be matrices, got shapes {A.shape} and {B.shape}")
    if B.shape[1] != A.shape[0]:
        raise ValueError(f"lora_A is r×d_in and lora_B is d_out×r: got A {A.shape}, B {B.shape} (ranks differ)")
    if x is not None and (x.ndim != 2 or x.shape[1] != A.shape[1]):
        raise ValueError(f"x must be T×d_in = T×{A.shape[1]}, got shape {x.shape}")


@dataclass(frozen=True)
class QuantizedLoRA:
    """A quantised adapter: delta[t, j] ≈ s · scale_B[j] · scale_A · scale_x · 2^shift · y_q[t, j].

    Per-channel mode folds lora_A's per-row scales into lora_B's columns before B is quantised per output channel:
    B·A = (B·diag(a))·(diag(1/a)·A), so the contraction over the rank stays scale-free (scale_A = 1).
    """

    A_q: np.ndarray       # r × d_in, int4
    B_q: np.ndarray       # d_out × r, int4
    scale_A: float
    scale_B: np.ndarray   # (d_out,): per output channel (constant when per-tensor)
    scale_x: float
    alpha: float
    shift: int
    A_eff: np.ndarray     # the float matrix A_q approximates: A (per-tensor) or diag(1/a)·A (per-channel)
    B_eff: np.ndarray     # the float matrix scale_B·B_q approximates: B or B·diag(a)

    @property
    def rank(self) -> int:
        return self.A_q.shape[0]

    @property
    def s(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def from_float(cls, A: np.ndarray, B: np.ndarray, alpha: float, x_calibration: np.ndarray,
                   per_channel: bool = False, shift: int | None = None) -> "QuantizedLoRA":
        """Quantise lora_A, lora_B; take the activation scale and (unless given) the shift from calibration data."""
        A, B, x = _finite(A, "lora_A"), _finite(B, "lora_B"), _finite(x_calibration, "x_calibration")
        _check_lora_shapes(A, B, x)
        if not np.isfinite(alpha) or alpha == 0:
            raise ValueError(f"alpha must be finite and non-zero, got {alpha}")
        if per_channel:
            a = _symmetric_scale(np.abs(A).max(axis=1), 7)
            A_eff, B_eff = A / a[:, None], B * a[None, :]
            qa = quantize_int4(A_eff)  # rows already span [-7, 7]: per-tensor scale 1 (or less for zero rows)
            qb = quantize_int4(B_eff, per_channel=True)
            scale_B = qb.scale
        else:
            A_eff, B_eff = A, B
            qa, qb = quantize_int4(A), quantize_int4(B)
            scale_B = np.full(B.shape[0], float(qb.scale))
        qx = quantize_int8(x)
        z = qx.values @ qa.values.T
        chosen = choose_shift(z) if shift is None else _check_shift(shift)
        return cls(qa.values, qb.values, float(qa.scale), np.asarray(scale_B, dtype=np.float64), float(qx.scale),
                   float(alpha), chosen, A_eff, B_eff)

    def quantize_x(self, x: np.ndarray) -> np.ndarray:
        """x_q for new activations with the calibrated scale (clipped to int8)."""
        return quantize_int8(x, self.scale_x).values

    def forward_int(self, x_q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z, z_q, y_q) exactly: z = x_q A_qᵀ, z_q = requantize(z, shift), y_q = z_q B_qᵀ (T×r, T×r, T×d_out)."""
        x_q = _ints(x_q, "x_q")
        if x_q.ndim != 2 or x_q.shape[1] != self.A_q.shape[1]:
            raise ValueError(f"x_q must be T×{self.A_q.shape[1]}, got shape {x_q.shape}")
        if x_q.size and (x_q.min() < A_MIN or x_q.max() > A_MAX):
            raise ValueError("x_q values must lie in [-128, 127]")
        z = x_q @ self.A_q.T
        z_q = requantize(z, self.shift).z_q
        return z, z_q, z_q @ self.B_q.T

    def dequantize(self, y_q: np.ndarray) -> np.ndarray:
        """Float delta from the circuit's integer output (T×d_out)."""
        y_q = _ints(y_q, "y_q")
        factor = self.s * self.scale_A * self.scale_x * float(2 ** self.shift)
        return factor * self.scale_B[None, :] * y_q

    def error_bound(self, x: np.ndarray) -> np.ndarray:
        """A rigorous bound on |dequantize(y_q) − lora_delta_float(x)| per output (T×d_out); see the spec.

        |err| <= s·( |B_eff|·D + (scale_B/2)·Σᵢ|ũᵢ| ), D = |A_eff|·|x − x̂| + (scale_A/2)·‖x̂‖₁ + R,
        with x̂ = scale_x·x_q, ũ = scale_A·scale_x·2^shift·z_q and R = scale_A·scale_x·|z − 2^shift·z_q|.
        """
        x = _finite(x, "x")
        x_q = self.quantize_x(x)
        z, z_q, _ = self.forward_int(x_q)
        x_hat = self.scale_x * x_q
        ex = np.abs(x - x_hat)                                            # T × d_in (covers clipping)
        unit = self.scale_A * self.scale_x
        R = unit * np.abs(z - (z_q << self.shift))                         # T × r (covers clamping)
        D = ex @ np.abs(self.A_eff).T + (self.scale_A / 2) * np.abs(x_hat).sum(axis=1, keepdims=True) + R
        u_tilde = unit * float(2 ** self.shift) * np.abs(z_q)              # T × r
        bound = self.s * (D @ np.abs(self.B_eff).T + (self.scale_B[None, :] / 2) * u_tilde.sum(axis=1, keepdims=True))
        return bound * (1 + 1e-9) + 1e-12                                  # float64 evaluation slack

    def summary(self) -> dict:
        """The public dequantisation parameters, for reports."""
        return {"alpha": self.alpha, "s": self.s, "scale_A": self.scale_A,
                "scale_B": float(self.scale_B[0]) if np.all(self.scale_B == self.scale_B[0]) else self.scale_B.tolist(),
                "scale_x": self.scale_x, "shift": self.shift}

    def check(self, x: np.ndarray, y_q: np.ndarray) -> dict:
        """Dequantised circuit output against the float delta of x: max error, the bound, and whether it holds."""
        x = _finite(x, "x")
        err = np.abs(self.dequantize(y_q) - lora_delta_float(x, self.A_eff, self.B_eff, self.alpha))
        bound = self.error_bound(x)
        return {"max_abs_error": float(err.max(initial=0.0)), "error_bound": float(bound.max(initial=0.0)),
                "within_bound": bool((err <= bound).all())}
