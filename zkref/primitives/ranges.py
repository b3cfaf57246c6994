"""Integer ranges and size limits: the one definition every layer checks against.

Quantised values are signed two's-complement integers of a declared width (int4 weights, int8 activations and
requantised intermediates). Limits on dimensions, ranks, tokens, lanes and the requantisation shift bound what any
input may ask a circuit or a backend to allocate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IntRange:
    """The signed integers of `bits` bits: [-2^(bits-1), 2^(bits-1) - 1]."""

    bits: int

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 32:
            raise ValueError(f"bits must be an integer in 1..32, got {self.bits!r}")

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def size(self) -> int:
        return 1 << self.bits

    @property
    def name(self) -> str:
        return f"int{self.bits}"

    def contains(self, values: np.ndarray) -> bool:
        """True when every entry lies in the range (an empty array does)."""
        arr = np.asarray(values)
        return not arr.size or (int(arr.min()) >= self.lo and int(arr.max()) <= self.hi)

    def __str__(self) -> str:
        return f"{self.name} [{self.lo}, {self.hi}]"


INT4 = IntRange(4)
"""LoRA weights (lora_A, lora_B) after quantisation."""
INT8 = IntRange(8)
"""Activations x_q, and the requantised rank-r intermediate z_q by default."""
Z_BITS_DEFAULT = 8
"""The requantised intermediate z_q's width unless a statement declares a wider one (int8: the design note's)."""
MAX_Z_BITS = 16
"""Widest z_q a statement may declare: zkref multiplies it as a signed high byte and an unsigned low byte."""
ACTIVATION_BITS_DEFAULT = 8
"""The activations x_q's width unless a statement declares a wider one (int8: the design note's)."""
MAX_ACTIVATION_BITS = 16
"""Widest x_q a statement may declare (multiplied as two bytes, like a wide z_q)."""

W_MIN, W_MAX = INT4.lo, INT4.hi
A_MIN, A_MAX = INT8.lo, INT8.hi
PRODUCT_MIN = min(W_MIN * A_MAX, W_MAX * A_MIN)
"""Smallest int4 × int8 product, -8·127 = -1016."""
PRODUCT_MAX = W_MIN * A_MIN
"""Largest int4 × int8 product, (-8)·(-128) = 1024."""

MAX_SHIFT = 40
"""Largest requantisation shift (z ranges stay far below 2^61 for every allowed shape)."""
MAX_DIM = 1 << 20
"""Largest d_in or d_out of a module."""
MAX_RANK = 4096
MAX_TOKENS = 1 << 16
MAX_LANES = 16
"""Lookup lanes per row of the MAC chips."""
MEMORY_BUDGET = 16 << 30
"""The most memory (bytes) one statement or batch may ask a process to allocate: its tensors and a backend's
circuit, estimated before anything is allocated (`LoRAShape.tensor_bytes`, each backend's `supports`). Each limit
above allows more than this in combination (d_in = d_out = MAX_DIM at MAX_RANK is ~10^11 values); the project's
machines have 24 GiB."""


def check_int(name: str, value: object, lo: int, hi: int) -> int:
    """`value` as an int if it is an integer (not a bool) in [lo, hi]; ValueError naming it otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def format_bytes(n: int) -> str:
    """A byte count for people: 1.5 GiB, 300 MiB, 12 KiB, 7 B."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{n} B"


def over_budget(what: str, estimate: int) -> str | None:
    """Why `what`, estimated to allocate `estimate` bytes, exceeds `MEMORY_BUDGET` (None when it does not)."""
    if estimate <= MEMORY_BUDGET:
        return None
    return (f"{what} would need about {format_bytes(estimate)} of memory, more than the "
            f"{format_bytes(MEMORY_BUDGET)} budget: use smaller shapes or fewer tokens")


def check_memory(what: str, estimate: int) -> int:
    """`estimate` if within `MEMORY_BUDGET`; ValueError saying `over_budget`'s reason otherwise."""
    reason = over_budget(what, estimate)
    if reason:
        raise ValueError(reason)
    return estimate


def check_shift(shift: object) -> int:
    """A requantisation shift: an integer in 0..MAX_SHIFT."""
    return check_int("shift", shift, 0, MAX_SHIFT)


def check_z_bits(bits: object) -> int:
    """A width for the requantised intermediate z_q: an integer in Z_BITS_DEFAULT..MAX_Z_BITS."""
    return check_int("z_bits", bits, Z_BITS_DEFAULT, MAX_Z_BITS)


def check_activation_bits(bits: object) -> int:
    """A width for the activations x_q: an integer in ACTIVATION_BITS_DEFAULT..MAX_ACTIVATION_BITS."""
    return check_int("activation_bits", bits, ACTIVATION_BITS_DEFAULT, MAX_ACTIVATION_BITS)


def check_lanes(lanes: object) -> int:
    """A lane count: an integer in 1..MAX_LANES."""
    return check_int("lanes", lanes, 1, MAX_LANES)


def as_int_matrix(name: str, values: object, rng: IntRange, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validate a 2-D matrix of integers in `rng` (and of `shape` if given); a read-only int64 copy, else ValueError.

    Integer-valued floats are accepted (quantised tensors sometimes travel as floats); NaN, fractions, bools and
    ragged or non-numeric input are not.
    """
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
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinity")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integers (quantise floats first)")
    if arr.size and (arr.min() < rng.lo or arr.max() > rng.hi):
        raise ValueError(f"{name} values must lie in {rng}, got [{arr.min():g}, {arr.max():g}]")
    out = arr.astype(np.int64)
    out.setflags(write=False)
    return out
