"""Activation and adapter commitments (specs/commitments.md): messages, order, packing, ezkl agreement, validation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from zkref.lora.commitments import (activations_digest, activations_message, adapter_digest, adapter_message,
                                    adapter_message_index, requant_constants)
from zkref.primitives.field import P, felt_from_str, felt_to_str
from zkref.primitives.packing import pack
from zkref.primitives.poseidon import poseidon_hash

RNG = np.random.default_rng(7)


def ezkl_hash(felts: list[int]) -> int:
    ezkl = pytest.importorskip("ezkl")
    return felt_from_str(ezkl.poseidon_hash([felt_to_str(v) for v in felts])[0])


def small(shape, bits):
    half = 1 << (bits - 1)
    return RNG.integers(-half, half, size=shape, dtype=np.int64)


def test_activation_message_is_row_major_with_negatives_as_p_minus_v():
    x = np.array([[1, -2, 3], [-4, 5, 0]])
    assert activations_message(x, packed=False) == [1, P - 2, 3, P - 4, 5, 0]
    assert activations_digest(x, packed=False) == poseidon_hash([1, P - 2, 3, P - 4, 5, 0])
    assert activations_digest(x, packed=False) != activations_digest(x[:, ::-1], packed=False)  # order matters


def test_adapter_message_is_A_transposed_then_requant_constants_then_B_transposed():
    A = np.array([[1, 2, 3], [4, 5, -6]])                 # r=2, d_in=3
    B = np.array([[-7, 7], [1, 2], [3, 4], [0, -1]])      # d_out=4, r=2
    values = [1, 4, 2, 5, 3, -6, 0, 16, -(128 << 5), 127 << 5, -7, 1, 3, 0, 7, 2, 4, -1]
    assert adapter_message(A, B, shift=5, packed=False) == [v % P for v in values]
    assert requant_constants(0) == (-128, 127) and requant_constants(5) == (0, 16, -4096, 4064)
    assert adapter_message(A, B, shift=0, packed=False)[6:8] == [P - 128, 127]
    assert adapter_digest(A, B, shift=5, packed=False) == poseidon_hash([v % P for v in values])
    # the digest binds the shift, and the order
    assert adapter_digest(A, B, shift=4, packed=False) != adapter_digest(A, B, shift=5, packed=False)
    assert adapter_digest(A[::-1], B, shift=5, packed=False) != adapter_digest(A, B, shift=5, packed=False)
    packed = [1, 4, 2, 5, 3, -6, -7, 1, 3, 0, 7, 2, 4, -1]
    assert adapter_message(A, B, shift=5, packed=True) == pack(packed, 4)


def test_adapter_message_index_places_every_weight():
    for r, d, m, packed, shift in ((2, 3, 4, False, 3), (3, 5, 2, True, 3), (1, 1, 1, False, 0)):
        A, B = small((r, d), 4), small((m, r), 4)
        a_index, b_index, at = adapter_message_index(r, d, m, packed=packed, shift=shift)
        constants = () if packed else requant_constants(shift)
        seq = np.zeros(r * d + m * r + len(constants), dtype=np.int64)
        seq[a_index.reshape(-1)] = A.reshape(-1)
        seq[b_index.reshape(-1)] = B.reshape(-1)
        if not packed:
            seq[at:at + len(constants)] = constants
            assert [v % P for v in seq.tolist()] == adapter_message(A, B, shift=shift, packed=False)
        else:
            assert pack(seq, 4) == adapter_message(A, B, shift=3, packed=True)


def test_digests_equal_ezkl_poseidon_hash():
    x = small((3, 16), 8)
    A, B = small((4, 16), 4), small((8, 4), 4)
    assert activations_digest(x, packed=False) == ezkl_hash([v % P for v in x.reshape(-1).tolist()])
    assert adapter_digest(A, B, shift=7, packed=False) == ezkl_hash(adapter_message(A, B, shift=7, packed=False))
    assert activations_digest(x, packed=True) == ezkl_hash(pack(x, 8))
    assert adapter_digest(A, B, shift=7, packed=True) == ezkl_hash(pack(np.concatenate([A.T.ravel(), B.T.ravel()]), 4))


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.int8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12)))
def test_packed_activation_digest_is_hash_of_pack(x):
    assert activations_digest(x, packed=True) == poseidon_hash(pack(x.reshape(-1), 8))
    assert activations_digest(x, packed=False) == poseidon_hash([int(v) % P for v in x.reshape(-1)])


def test_packed_adapter_message_packs_the_concatenation_once():
    A, B = small((2, 40), 4), small((50, 2), 4)  # 80 + 100 values: the packing straddles the A/B boundary
    seq = np.concatenate([A.T.reshape(-1), B.T.reshape(-1)])
    assert adapter_message(A, B, shift=0, packed=True) == pack(seq, 4)
    assert adapter_message(A, B, shift=0, packed=True) != pack(A.T, 4) + pack(B.T, 4)


def test_digests_alone_do_not_fix_shapes_which_is_why_the_statement_does():
    # the two collisions the statement id exists for (tests/test_statement.py shows proofs do not transfer)
    x = small((1, 30), 8)
    longer = np.concatenate([x, [[-128]]], axis=1)
    assert activations_digest(x, packed=True) == activations_digest(longer, packed=True)
    A1, B1 = np.array([[1, 2, 3, 4]]), np.array([[5], [6]])      # r=1, 4 → 2
    A2, B2 = np.array([[1, 3], [2, 4]]), np.array([[5, 6]])      # r=2, 2 → 1: same transposed sequence
    assert adapter_message(A1, B1, shift=2, packed=False) == adapter_message(A2, B2, shift=2, packed=False)


def test_dtypes_accepted_consistently():
    x = small((2, 5), 8)
    c = activations_digest(x, packed=False)
    assert activations_digest(x.astype(np.int8), packed=False) == c
    assert activations_digest(x.astype(np.float32), packed=False) == c
    assert activations_digest(x.tolist(), packed=False) == c
    assert activations_digest(x.astype(object), packed=False) == c


@pytest.mark.parametrize("bad", [
    np.array([[0.5, 1.0]]),           # non-integer float
    np.array([[np.nan, 1.0]]),        # NaN
    np.array([1, 2, 3]),              # 1-D
    np.zeros((1, 2, 3), dtype=int),   # 3-D
    np.array([[True, False]]),        # bool
    np.array([["a", "b"]]),           # strings
    np.full((1, 3), -129),            # outside int8
])
@pytest.mark.parametrize("packed", [False, True])
def test_activation_rejects(bad, packed):
    with pytest.raises(ValueError):
        activations_digest(bad, packed=packed)


def test_adapter_rejects_mismatched_rank_out_of_range_and_fractions():
    with pytest.raises(ValueError, match="rank"):
        adapter_digest(np.zeros((4, 8), dtype=int), np.zeros((8, 3), dtype=int), shift=0, packed=False)
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        adapter_digest(np.full((2, 3), 8), np.zeros((3, 2), dtype=int), shift=0, packed=True)
    with pytest.raises(ValueError):
        adapter_digest(np.zeros((2, 3)), np.full((3, 2), 0.25), shift=0, packed=False)
    with pytest.raises(ValueError, match="shift"):
        adapter_digest(np.zeros((2, 3)), np.zeros((3, 2)), shift=41, packed=False)
