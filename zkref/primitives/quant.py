"""Integer quantisation primitives: rounding half away from zero (as EZKL does), power-of-two requantisation, and
symmetric int4/int8 quantisation of float tensors. Spec: specs/quantisation.md.

The LoRA-specific parts (a quantised adapter, dequantisation and the error bound) are in zkref.lora.quantisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zkref.primitives.ranges import (A_MAX, A_MIN, MAX_SHIFT, PRODUCT_MAX, Z_BITS_DEFAULT, IntRange, check_shift,
                                     check_z_bits)


def finite_array(x: np.ndarray | float, what: str) -> np.ndarray:
    """x as float64, or ValueError naming `what` if it holds NaN or infinity."""
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinity")
    return arr


def _ints(z: np.ndarray | int, what: str) -> np.ndarray:
    arr = np.asarray(z)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64)



def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """Round floats to integers, ties away from zero: sign(v)·floor(|v| + 0.5) (0.5→1, -0.5→-1, 2.5→3)."""
    arr = finite_array(x, "value to round")
    return (np.sign(arr) * np.floor(np.abs(arr) + 0.5)).astype(np.int64)


def div_pow2_round_half_away(z: np.ndarray | int, shift: int) -> np.ndarray:
    """round_half_away(z / 2^shift) in pure integer arithmetic: sign(z)·((|z| + 2^(shift-1)) >> shift)."""
    z = _ints(z, "z")
    shift = check_shift(shift)
    if shift == 0:
        return z.copy()
    return np.sign(z) * ((np.abs(z) + (1 << (shift - 1))) >> shift)


@dataclass(frozen=True)
class Requantised:
    """z_q = clamp(round_half_away(z / 2^shift), int{bits}), and how many entries the clamp changed."""

    z_q: np.ndarray
    clamped: int


def requantize(z: np.ndarray | int, shift: int, bits: int = Z_BITS_DEFAULT) -> Requantised:
    """Requantise the rank-r intermediate to `bits`-bit signed integers (int8 by default; what the Requant chip
    proves)."""
    rng = IntRange(check_z_bits(bits))
    rounded = div_pow2_round_half_away(z, shift)
    z_q = np.clip(rounded, rng.lo, rng.hi)
    return Requantised(z_q, int(np.count_nonzero(z_q != rounded)))


def choose_shift(z: np.ndarray | int, bits: int = Z_BITS_DEFAULT) -> int:
    """Smallest shift with no clamping of the given intermediate values to `bits` bits."""
    z = _ints(z, "z")
    for shift in range(MAX_SHIFT + 1):
        if requantize(z, shift, bits).clamped == 0:
            return shift
    return MAX_SHIFT


def static_shift(d_in: int) -> int:
    """A shift that never clamps for any int4 A and int8 x: covers |z| <= d_in·1024."""
    if d_in < 1:
        raise ValueError("d_in must be positive")
    worst = np.array([-d_in * PRODUCT_MAX, d_in * PRODUCT_MAX], dtype=np.int64)
    return choose_shift(worst)


@dataclass(frozen=True)
class QuantizedTensor:
    """Integer values and the scale(s) that map them back: real ≈ scale · values (scale per row when per-channel)."""

    values: np.ndarray
    scale: np.ndarray  # shape () for per-tensor, (rows,) for per-channel

    def dequantize(self) -> np.ndarray:
        s = self.scale if self.scale.ndim == 0 else self.scale[:, None]
        return s * self.values


def symmetric_scale(absmax: np.ndarray, qmax: int) -> np.ndarray:
    """absmax / qmax, or 1 where absmax is 0 (an all-zero tensor keeps a usable scale)."""
    return np.where(absmax > 0, absmax / qmax, 1.0)


def quantize_weights(w: np.ndarray, *, bits: int = 4, per_channel: bool = False) -> QuantizedTensor:
    """Symmetric signed `bits`-bit weights: scale = max|w| / qmax (per tensor, or per output row) with
    qmax = 2^(bits-1) - 1, q = round_half_away(w / scale) in [-qmax, qmax] (int4: [-7, 7]; int8: [-127, 127]).

    An all-zero tensor or row gets scale 1. Since |w / scale| <= qmax, rounding never leaves the range (no clipping).
    """
    rng = IntRange(bits)
    w = finite_array(w, "weights")
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D matrix, got shape {w.shape}")
    absmax = np.abs(w).max(axis=1) if per_channel else np.array(np.abs(w).max(initial=0.0))
    scale = symmetric_scale(absmax, rng.hi)
    s = scale[:, None] if per_channel else scale
    return QuantizedTensor(np.clip(round_half_away(w / s), rng.lo, rng.hi), np.asarray(scale, dtype=np.float64))


def quantize_int8(x: np.ndarray, scale: float | None = None) -> QuantizedTensor:
    """Symmetric per-tensor int8: scale = max|x| / 127 unless given; values clipped to [-128, 127]."""
    x = finite_array(x, "activations")
    if scale is None:
        scale = float(symmetric_scale(np.array(np.abs(x).max(initial=0.0)), 127))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"activation scale must be positive and finite, got {scale}")
    return QuantizedTensor(np.clip(round_half_away(x / scale), A_MIN, A_MAX), np.asarray(scale, dtype=np.float64))
