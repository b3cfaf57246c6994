"""Activation and adapter commitments (specs/commitments.md): felts, order, packing, ezkl agreement, validation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from zkref.lora.commitments import (activations_commitment, activations_commitment_packed, activations_felts,
                               adapter_commitment, adapter_commitment_packed, adapter_felts, adapter_values)
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


def test_activation_felts_are_row_major_with_negatives_as_p_minus_v():
    x = np.array([[1, -2, 3], [-4, 5, 0]])
    assert activations_felts(x) == [1, P - 2, 3, P - 4, 5, 0]
    assert activations_commitment(x) == poseidon_hash([1, P - 2, 3, P - 4, 5, 0])
    assert activations_commitment(x) != activations_commitment(x[:, ::-1])  # order matters


def test_adapter_felts_are_A_then_B_row_major():
    A = np.array([[1, 2, 3], [4, 5, -6]])          # r=2, d_in=3
    B = np.array([[-7, 8], [9, 10], [11, 12], [0, -1]])  # d_out=4, r=2
    assert adapter_values(A, B).tolist() == [1, 2, 3, 4, 5, -6, -7, 8, 9, 10, 11, 12, 0, -1]
    assert adapter_felts(A, B) == [v % P for v in [1, 2, 3, 4, 5, -6, -7, 8, 9, 10, 11, 12, 0, -1]]
    assert adapter_commitment(A, B) == poseidon_hash(adapter_felts(A, B))
    assert adapter_commitment(A, B) != adapter_commitment(A[::-1], B)


def test_commitments_equal_ezkl_poseidon_hash():
    x = small((3, 16), 8)
    A, B = small((4, 16), 4), small((8, 4), 4)
    assert activations_commitment(x) == ezkl_hash([v % P for v in x.reshape(-1).tolist()])
    felts = [v % P for v in np.concatenate([A.reshape(-1), B.reshape(-1)]).tolist()]
    assert adapter_commitment(A, B) == ezkl_hash(felts)
    assert activations_commitment_packed(x) == ezkl_hash(pack(x, 8))
    assert adapter_commitment_packed(A, B) == ezkl_hash(pack(np.concatenate([A.ravel(), B.ravel()]), 4))


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.int8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12)))
def test_packed_activation_commitment_is_hash_of_pack(x):
    assert activations_commitment_packed(x, bits=8) == poseidon_hash(pack(x.reshape(-1), 8))
    assert activations_commitment(x) == poseidon_hash([int(v) % P for v in x.reshape(-1)])


def test_packed_adapter_commitment_packs_the_concatenation_once():
    A, B = small((2, 40), 4), small((50, 2), 4)  # 80 + 100 values: the packing straddles the A/B boundary
    seq = np.concatenate([A.reshape(-1), B.reshape(-1)])
    assert adapter_commitment_packed(A, B, bits=4) == poseidon_hash(pack(seq, 4))
    assert adapter_commitment_packed(A, B, bits=4) != poseidon_hash(pack(A, 4) + pack(B, 4))


def test_dtypes_accepted_consistently():
    x = small((2, 5), 8)
    c = activations_commitment(x)
    assert activations_commitment(x.astype(np.int8)) == c
    assert activations_commitment(x.astype(np.float32)) == c
    assert activations_commitment(x.tolist()) == c
    assert activations_commitment(x.astype(object)) == c


@pytest.mark.parametrize("bad", [
    np.array([[0.5, 1.0]]),           # non-integer float
    np.array([[np.nan, 1.0]]),        # NaN
    np.array([1, 2, 3]),              # 1-D
    np.zeros((1, 2, 3), dtype=int),   # 3-D
    np.zeros((0, 4), dtype=int),      # empty
    np.array([[True, False]]),        # bool
    np.array([["a", "b"]]),           # strings
])
def test_activation_rejects(bad):
    with pytest.raises(ValueError):
        activations_commitment(bad)
    with pytest.raises(ValueError):
        activations_commitment_packed(bad)


def test_adapter_rejects_mismatched_rank_and_out_of_range_packing():
    with pytest.raises(ValueError, match="rank"):
        adapter_commitment(np.zeros((4, 8), dtype=int), np.zeros((8, 3), dtype=int))
    with pytest.raises(ValueError, match="signed bits"):
        adapter_commitment_packed(np.full((2, 3), 8), np.zeros((3, 2), dtype=int), bits=4)
    with pytest.raises(ValueError, match="signed bits"):
        activations_commitment_packed(np.full((1, 3), -129), bits=8)
    with pytest.raises(ValueError):
        adapter_commitment(np.zeros((2, 3)), np.full((3, 2), 0.25))
