"""The statement's commitments to activations and to the LoRA adapter: Poseidon hashes of quantised integers.

Plain commitments hash one field element per value (v < 0 encoded p-|v|), exactly what EZKL's "hashed" visibility
puts in the proof's instances, so the EZKL backend's hashes can be compared with these. Packed commitments hash
`zkref.packing.pack` of the same value sequence (int8 activations, int4 adapters), ~30-60x fewer elements to hash.
See specs/commitments.md.
"""
from __future__ import annotations

import numpy as np

from zkref.primitives.field import P
from zkref.primitives.packing import as_int_array, pack
from zkref.primitives.poseidon import poseidon_hash_fast

__all__ = [
    "activations_commitment", "adapter_commitment", "activations_commitment_packed", "adapter_commitment_packed",
    "activations_felts", "adapter_felts", "adapter_values",
]


def _matrix(x: np.ndarray, what: str) -> np.ndarray:
    arr = as_int_array(x, what)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D matrix, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape}); there is nothing to commit to")
    return arr


def _check_adapter(A_q: np.ndarray, B_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    A = _matrix(A_q, "lora_A")
    B = _matrix(B_q, "lora_B")
    if A.shape[0] != B.shape[1]:
        raise ValueError(f"lora_A is r×d_in and lora_B is d_out×r: ranks differ (A {A.shape}, B {B.shape})")
    return A, B


def _felts(values: np.ndarray) -> list[int]:
    return [v % P for v in values.reshape(-1).tolist()]


def activations_felts(x_q: np.ndarray) -> list[int]:
    """The field elements EZKL hashes for a quantised T×d_in input: row-major, negatives as p-|v|."""
    return _felts(_matrix(x_q, "x_q"))


def adapter_values(A_q: np.ndarray, B_q: np.ndarray) -> np.ndarray:
    """The adapter's value sequence: lora_A (r×d_in) row-major, then lora_B (d_out×r) row-major, as int64."""
    A, B = _check_adapter(A_q, B_q)
    return np.concatenate([A.reshape(-1), B.reshape(-1)])


def adapter_felts(A_q: np.ndarray, B_q: np.ndarray) -> list[int]:
    """The field elements of `adapter_values`, as EZKL hashes "hashed" params (ONNX initializer order A, B)."""
    return _felts(adapter_values(A_q, B_q))


def activations_commitment(x_q: np.ndarray) -> int:
    """One Poseidon hash over x_q (T×d_in, row-major): equals EZKL's "hashed" input instance."""
    return poseidon_hash_fast(activations_felts(x_q))


def adapter_commitment(A_q: np.ndarray, B_q: np.ndarray) -> int:
    """One Poseidon hash over lora_A then lora_B (each row-major): equals EZKL's "hashed" params instance."""
    return poseidon_hash_fast(adapter_felts(A_q, B_q))


def activations_commitment_packed(x_q: np.ndarray, bits: int = 8) -> int:
    """Poseidon hash of pack(x_q row-major, bits): values must fit in `bits` signed bits."""
    return poseidon_hash_fast(pack(_matrix(x_q, "x_q"), bits))


def adapter_commitment_packed(A_q: np.ndarray, B_q: np.ndarray, bits: int = 4) -> int:
    """Poseidon hash of pack(lora_A row-major ++ lora_B row-major, bits): ONE packing of the concatenation."""
    return poseidon_hash_fast(pack(adapter_values(A_q, B_q), bits))
