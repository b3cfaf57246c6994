"""The messages the statement's Poseidon commitments hash, and their digests: one definition for zkref and EZKL.

    activations, plain:   x_q row-major, one felt per value (v < 0 as p-|v|)        = EZKL's "hashed" input
    activations, packed:  pack(x_q row-major, 8)                                    (zkref only)
    adapter, plain:       A_qᵀ row-major ‖ requant_constants(shift) ‖ B_qᵀ row-major = EZKL's "hashed" params
    adapter, packed:      pack(A_qᵀ row-major ‖ B_qᵀ row-major, weight bits)       (zkref only)

The plain adapter message is what EZKL hashes for the statement's graph (backends/ezkl/graph.py): every constant of
the graph in graph order — torch's export stores A_qᵀ, then the requantisation's constants, then B_qᵀ — so the
digest also binds the shift. A digest alone does not fix the shapes (a packed x of 30 values and the same x followed by −128
hash alike, and adapters of different shapes can share a message): digests are only ever read together with a
`LoRAStatement`, whose id fixes the shapes. Spec: specs/commitments.md.
"""
from __future__ import annotations

import numpy as np

from zkref.primitives.field import P
from zkref.primitives.packing import pack
from zkref.primitives.poseidon import poseidon_hash_fast
from zkref.primitives.ranges import INT8, Z_BITS_DEFAULT, IntRange, as_int_matrix, check_shift, check_z_bits

__all__ = ["activations_message", "adapter_message", "adapter_message_index", "activations_digest", "adapter_digest",
           "requant_constants"]


def _felts(values: np.ndarray) -> list[int]:
    return [int(v) % P for v in values.reshape(-1).tolist()]


def requant_constants(shift: int, z_bits: int = Z_BITS_DEFAULT) -> tuple[int, ...]:
    """The requantisation's constants as the statement's graph holds them, in graph order (signed integers).

    shift 0: the clamp bounds of int{z_bits} (-128, 127 for int8). shift s ≥ 1: the sign comparison's 0, the rounding
    offset 2^(s-1), then the clamp bounds at the scale of z (-128·2^s, 127·2^s for int8) — the graph computes
    clamp(floor((z + 2^(s-1) − [z<0]) / 2^s)), every step constrained exactly (specs/ezkl-backend.md, "Why not the
    rebase"). The clamp bounds carry z_bits, so an adapter digest binds the shift and z_q's width.
    """
    shift = check_shift(shift)
    rng = IntRange(check_z_bits(z_bits))
    if shift == 0:
        return (rng.lo, rng.hi)
    return (0, 1 << (shift - 1), rng.lo << shift, rng.hi << shift)


def _adapter(A_q: object, B_q: object, weight_bits: int) -> tuple[np.ndarray, np.ndarray]:
    A = as_int_matrix("A_q", A_q, IntRange(weight_bits))
    B = as_int_matrix("B_q", B_q, IntRange(weight_bits))
    if A.shape[0] != B.shape[1]:
        raise ValueError(f"lora_A is r×d_in and lora_B d_out×r: ranks differ (A_q {A.shape}, B_q {B.shape})")
    return A, B


def activations_message(x_q: object, *, packed: bool, bits: int = INT8.bits) -> list[int]:
    """The field elements an activations commitment hashes (x_q is T × d_in, `bits` wide: int8 by default)."""
    x = as_int_matrix("x_q", x_q, IntRange(bits))
    return pack(x, bits) if packed else _felts(x)


def adapter_message(A_q: object, B_q: object, *, shift: int, packed: bool, weight_bits: int = 4,
                    z_bits: int = Z_BITS_DEFAULT) -> list[int]:
    """The field elements an adapter commitment hashes (lora_A r × d_in, lora_B d_out × r, `weight_bits` wide)."""
    A, B = _adapter(A_q, B_q, weight_bits)
    if packed:
        return pack(np.concatenate([A.T.reshape(-1), B.T.reshape(-1)]), weight_bits)
    return _felts(A.T) + [v % P for v in requant_constants(shift, z_bits)] + _felts(B.T)


def adapter_message_index(rank: int, d_in: int, d_out: int, *, packed: bool, shift: int = 0
                          ) -> tuple[np.ndarray, np.ndarray, int]:
    """Where each weight sits in the (unpacked) adapter value sequence: (index of A[o, j], index of B[o, j], offset of
    the requant constants or -1 when packed). Circuits use it to absorb weight cells at their message positions."""
    o, j = np.meshgrid(np.arange(rank), np.arange(d_in), indexing="ij")
    a_index = j * rank + o                                    # A_qᵀ row-major
    b_offset = rank * d_in + (0 if packed else len(requant_constants(shift)))
    o, j = np.meshgrid(np.arange(d_out), np.arange(rank), indexing="ij")
    b_index = b_offset + j * d_out + o                        # B_qᵀ row-major
    return a_index, b_index, (-1 if packed else rank * d_in)


def activations_digest(x_q: object, *, packed: bool, bits: int = INT8.bits) -> int:
    """Poseidon over `activations_message`: the public x digest of a hashed statement."""
    return poseidon_hash_fast(activations_message(x_q, packed=packed, bits=bits))


def adapter_digest(A_q: object, B_q: object, *, shift: int, packed: bool, weight_bits: int = 4,
                   z_bits: int = Z_BITS_DEFAULT) -> int:
    """Poseidon over `adapter_message`: the public adapter digest of a hashed statement."""
    return poseidon_hash_fast(adapter_message(A_q, B_q, shift=shift, packed=packed, weight_bits=weight_bits,
                                              z_bits=z_bits))
