"""The BN254 scalar field: exact arithmetic, EZKL felt strings, and fast paths for small integers.

Values live as Python ints in [0, p). Circuits mostly hold small signed integers, so vectorised code keeps them as
int64 *signed representatives* (v or v - p) whenever that is exact, and falls back to object arrays of Python ints.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import numpy as np

P: int = 21888242871839275222246405745257275088548364400416034343698204186575808495617
"""BN254 (alt_bn128) scalar field modulus: the field halo2/EZKL circuits are written over."""

HALF_P: int = P // 2
INT64_SAFE: int = 2**62
"""Signed representatives with |v| < 2^62 are stored as int64; sums of two such never overflow."""

FELT_HEX_CHARS = 64
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


@functools.cache
def gf():
    """A galois field object for readable field code (slow to build without these arguments: it factors p-1)."""
    import galois

    return galois.GF(P, primitive_element=5, verify=False)


def to_field(v: int) -> int:
    """Reduce any Python int (possibly negative) to its canonical element of [0, p)."""
    return int(v) % P


def signed(v: int) -> int:
    """Signed view of a field element: v if v <= (p-1)/2 else v - p (how small negatives read back)."""
    v = int(v) % P
    return v - P if v > HALF_P else v


def check_field_element(v: object, what: str = "value") -> int:
    """Return v as an int if it is a canonical field element, else raise ValueError naming it."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{what} must be an integer field element, got {type(v).__name__}: {v!r}")
    v = int(v)
    if not 0 <= v < P:
        raise ValueError(f"{what} = {v} is outside the field [0, p)")
    return v


def felt_to_str(v: int) -> str:
    """Encode a field element as EZKL's felt string: 64 hex chars of the 32-byte little-endian encoding, no 0x."""
    v = check_field_element(v)
    return v.to_bytes(32, "little").hex()


def felt_from_str(s: str) -> int:
    """Decode an EZKL felt string (64 hex chars, little-endian); ValueError on anything malformed or >= p."""
    if not isinstance(s, str):
        raise ValueError(f"felt string must be str, got {type(s).__name__}")
    if len(s) != FELT_HEX_CHARS:
        raise ValueError(f"felt string must be {FELT_HEX_CHARS} hex chars, got {len(s)}: {s[:80]!r}")
    if s.startswith(("0x", "0X")):
        raise ValueError("felt string must not carry a 0x prefix (EZKL writes bare little-endian hex)")
    if not all(c in _HEX_DIGITS for c in s):
        raise ValueError(f"felt string is not hexadecimal: {s!r}")
    v = int.from_bytes(bytes.fromhex(s), "little")
    if v >= P:
        raise ValueError(f"felt string encodes {v}, which is not below p (non-canonical)")
    return v


def encode_signed(values: Iterable[int]) -> list[int]:
    """Map signed integers to field elements (negative v becomes p-|v|), as EZKL encodes quantised values."""
    return [int(v) % P for v in values]


# ----------------------------------------------------------------------------------------------------------------------
# Vectorised helpers. A "field array" is either an int64 array of signed representatives (|v| < 2^62) or an object
# array of canonical Python ints in [0, p). Both denote the same field elements; int64 is the fast path.
# ----------------------------------------------------------------------------------------------------------------------

def as_field_array(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """Normalise values to a field array: int64 signed representatives when all fit, else canonical objects."""
    arr = np.asarray(values)
    if not isinstance(values, np.ndarray) and arr.dtype.kind in "uf":
        # numpy turns a list holding ints of 2^63 and above into float64 or uint64: read Python ints exactly
        as_objects = np.asarray(values, dtype=object)
        if all(type(v) is int for v in as_objects.reshape(-1).tolist()):
            arr = as_objects
    if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 8:
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= INT64_SAFE:
            return _canonical_objects(arr)
        out = arr.astype(np.int64)
        if out.size and (int(out.max()) >= INT64_SAFE or int(out.min()) <= -INT64_SAFE):
            return _canonical_objects(out)
        return out
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("field values must be integers; got non-integer or non-finite floats")
        return as_field_array(arr.astype(np.int64))
    if arr.dtype.kind == "O" or arr.size == 0:
        flat = arr.reshape(-1).tolist()
        if not all(type(v) is int for v in flat):  # the common case (Python ints) is checked in one pass
            flat = [_check_int(v) for v in flat]
        reduced = [v % P for v in flat]
        signed_vals = [v - P if v > HALF_P else v for v in reduced]
        if all(-INT64_SAFE < v < INT64_SAFE for v in signed_vals):
            return np.array(signed_vals, dtype=np.int64).reshape(arr.shape)
        return np.array(reduced, dtype=object).reshape(arr.shape)
    raise ValueError(f"cannot interpret dtype {arr.dtype} as field elements")


def _check_int(v: object) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"field values must be integers, got {type(v).__name__}: {v!r}")
    return int(v)


def _canonical_objects(arr: np.ndarray) -> np.ndarray:
    out = np.empty(arr.shape, dtype=object)
    flat_in = arr.reshape(-1)
    flat_out = out.reshape(-1)
    for i, v in enumerate(flat_in):
        flat_out[i] = int(v) % P
    return out


def canonical(arr: np.ndarray) -> np.ndarray:
    """Object array of canonical ints in [0, p) for any field array (the slow, always-exact representation)."""
    if arr.dtype == object:
        return np.array([int(v) % P for v in arr.reshape(-1)], dtype=object).reshape(arr.shape)
    return _canonical_objects(arr)


def is_small(arr: np.ndarray) -> bool:
    """True when the field array uses the int64 fast path."""
    return arr.dtype == np.int64


def abs_bound(arr: np.ndarray) -> int:
    """An upper bound on |signed representative| over the array; big (≥ p/2) for object arrays."""
    if arr.size == 0:
        return 0
    if arr.dtype == np.int64:
        return max(abs(int(arr.max())), abs(int(arr.min())))
    return HALF_P


def field_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equality of two field arrays as field elements."""
    if a.dtype == np.int64 and b.dtype == np.int64:
        return a == b
    return canonical(np.asarray(a)) == canonical(np.asarray(b))


def is_zero(arr: np.ndarray) -> np.ndarray:
    """Elementwise test for the zero element."""
    if arr.dtype == np.int64:
        return arr == 0
    return np.array([int(v) % P == 0 for v in arr.reshape(-1)], dtype=bool).reshape(arr.shape)


def element_at(arr: np.ndarray, i: int) -> int:
    """Canonical int of one entry of a field array."""
    return int(arr[i]) % P
