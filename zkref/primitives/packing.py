"""Pack many small signed integers (int4/int8 quantised values) into field elements, so one hash absorbs many.

Layout (specs/commitments.md): with b bits per value, v in [-2^(b-1), 2^(b-1)) is stored biased as u = v + 2^(b-1) in
[0, 2^b). Each element holds m = 252 // b digits, little-endian: element = sum_i u_i · 2^(b·i). Values fill elements in
order; the last element holds the remainder and its unused high digits are zero. Every element is < 2^252 < p, so
packing is injective and never reduces mod p.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zkref.primitives.field import P

PACK_BITS_BUDGET = 252
"""Bits used per field element: below log2(p) ≈ 253.6, so a packed element is never reduced mod p."""

MAX_BITS = 32


def _check_bits(bits: object) -> int:
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= MAX_BITS:
        raise ValueError(f"bits must be an int in 1..{MAX_BITS}, got {bits!r}")
    return int(bits)


def per_element(bits: int) -> int:
    """How many b-bit values one field element holds: 252 // b."""
    return PACK_BITS_BUDGET // _check_bits(bits)


def elements_needed(count: int, bits: int) -> int:
    """Number of field elements `pack` produces for `count` values of `bits` bits (0 for an empty input)."""
    if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    m = per_element(bits)
    return -(-int(count) // m)


def as_int_array(values: Sequence[int] | np.ndarray, what: str = "values") -> np.ndarray:
    """Validate integer data and return it as int64 (any shape kept).

    Accepts integer dtypes, bool-free object arrays/lists of ints, and float arrays whose entries are all finite
    integers (quantised tensors sometimes travel as floats). Rejects bools, non-integer floats and values outside int64.
    """
    arr = np.asarray(values)
    kind = arr.dtype.kind
    if kind == "b":
        raise ValueError(f"{what} must be integers, got a boolean array")
    if kind in "iu":
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{what} has entries above int64 range")
        return arr.astype(np.int64, copy=False)
    if kind == "f":
        if arr.size and not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} contains NaN or infinity")
        if arr.size and not np.all(arr == np.round(arr)):
            raise ValueError(f"{what} must be integers; got floats with a fractional part")
        if arr.size and (arr.max() >= 2.0**63 or arr.min() < -(2.0**63)):
            raise ValueError(f"{what} has entries outside int64 range")
        return arr.astype(np.int64)
    if kind == "O":
        flat = arr.reshape(-1)
        for i, v in enumerate(flat):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{what}[{i}] must be an int, got {type(v).__name__}: {v!r}")
            if not -(2**63) <= int(v) < 2**63:
                raise ValueError(f"{what}[{i}] = {v} is outside int64 range")
        return np.array([int(v) for v in flat], dtype=np.int64).reshape(arr.shape)
    raise ValueError(f"{what} must be integers, got dtype {arr.dtype}")


def pack(values: Sequence[int] | np.ndarray, bits: int) -> list[int]:
    """Pack signed `bits`-bit integers (flattened row-major) into field elements, 252 // bits per element."""
    bits = _check_bits(bits)
    v = as_int_array(values).reshape(-1)
    bias = 1 << (bits - 1)
    if v.size == 0:
        return []
    lo, hi = int(v.min()), int(v.max())
    if lo < -bias or hi >= bias:
        bad = int(np.flatnonzero((v < -bias) | (v >= bias))[0])
        raise ValueError(f"value {int(v[bad])} at index {bad} does not fit in {bits} signed bits "
                         f"[{-bias}, {bias})")
    m = PACK_BITS_BUDGET // bits
    n_el = -(-v.size // m)
    digits = np.zeros(n_el * m, dtype=np.uint64)
    digits[: v.size] = (v + bias).astype(np.uint64)
    # bit k of digit i of element e sits at bit position i·bits + k of that element; packbits little-endian → bytes
    bit_planes = ((digits.reshape(n_el, m, 1) >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8)
    raw = np.packbits(bit_planes.reshape(n_el, m * bits), axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in raw]


def unpack(elements: Sequence[int], bits: int, count: int) -> np.ndarray:
    """Inverse of `pack`: the first `count` values as int64; ValueError if elements are not a valid packing."""
    bits = _check_bits(bits)
    n_el = elements_needed(count, bits)
    elements = list(elements)
    if len(elements) != n_el:
        raise ValueError(f"{count} values of {bits} bits pack into {n_el} elements, got {len(elements)}")
    if n_el == 0:
        return np.zeros(0, dtype=np.int64)
    m = PACK_BITS_BUDGET // bits
    used_bits = m * bits
    raw = bytearray()
    for i, e in enumerate(elements):
        if isinstance(e, (bool, np.bool_)) or not isinstance(e, (int, np.integer)):
            raise ValueError(f"packed element [{i}] must be an int, got {type(e).__name__}")
        e = int(e)
        if not 0 <= e < P:
            raise ValueError(f"packed element [{i}] = {e} is not a field element in [0, p)")
        if e >> used_bits:
            raise ValueError(f"packed element [{i}] has bits set above bit {used_bits} (not a {bits}-bit packing)")
        raw += e.to_bytes(32, "little")
    planes = np.unpackbits(np.frombuffer(bytes(raw), dtype=np.uint8).reshape(n_el, 32), axis=1, bitorder="little")
    planes = planes[:, :used_bits].reshape(n_el * m, bits).astype(np.int64)
    u = planes @ (np.int64(1) << np.arange(bits, dtype=np.int64))
    if np.any(u[count:] != 0):
        raise ValueError(f"packed elements hold nonzero digits beyond the {count} declared values")
    return u[:count] - (1 << (bits - 1))
