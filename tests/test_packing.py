"""zkref.packing: layout (specs/commitments.md), round trips, and rejection of everything that is not a packing."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkref.primitives.field import P
from zkref.primitives.packing import elements_needed, pack, per_element, unpack


@st.composite
def packings(draw, bits_strategy=st.integers(min_value=1, max_value=32)):
    bits = draw(bits_strategy)
    half = 1 << (bits - 1)
    value = st.one_of(st.sampled_from([-half, half - 1, 0, -1 if bits > 1 else 0]),
                      st.integers(min_value=-half, max_value=half - 1))
    return bits, draw(st.lists(value, max_size=400))


@settings(max_examples=200, deadline=None)
@given(packings())
def test_round_trip_any_width(case):
    bits, values = case
    packed = pack(values, bits)
    assert len(packed) == elements_needed(len(values), bits)
    assert all(0 <= e < 2**252 < P for e in packed)
    out = unpack(packed, bits, len(values))
    assert out.dtype == np.int64 and out.tolist() == values


@settings(max_examples=200, deadline=None)
@given(packings(st.sampled_from([4, 8])))
def test_round_trip_int4_int8_matches_the_digit_formula(case):
    bits, values = case
    m = 252 // bits
    expected = [sum((v + (1 << (bits - 1))) << (bits * i) for i, v in enumerate(values[j: j + m]))
                for j in range(0, len(values), m)]
    assert pack(values, bits) == expected
    assert pack(np.array(values, dtype=np.int64).reshape(-1, 1), bits) == expected  # flattened row-major


def test_layout_examples():
    assert per_element(4) == 63 and per_element(8) == 31 and per_element(1) == 252 and per_element(32) == 7
    assert pack([-8, 7, 0], 4) == [0x8F0]  # digits 0, 15, 8 little-endian
    assert pack([-128, 127], 8) == [0xFF00]
    assert pack(list(range(-4, 4)) * 20, 3)[0] % 8 == 0  # first digit: -4 + 4
    full = pack([7] * 63 + [-8], 4)
    assert full == [2**252 - 1, 0]  # 63 digits of 15 fill 252 bits exactly; then one digit 0
    assert pack([], 4) == [] and unpack([], 4, 0).tolist() == []
    assert elements_needed(0, 8) == 0 and elements_needed(31, 8) == 1 and elements_needed(32, 8) == 2


def test_accepts_integer_valued_floats_and_small_dtypes():
    assert pack(np.array([-8.0, 7.0]), 4) == pack([-8, 7], 4)
    assert pack(np.array([-128, 127], dtype=np.int8), 8) == pack([-128, 127], 8)


@pytest.mark.parametrize("bits,values", [(4, [8]), (4, [-9]), (8, [128]), (8, [-129]), (1, [1]), (32, [2**31])])
def test_rejects_out_of_range_values(bits, values):
    with pytest.raises(ValueError, match="signed bits"):
        pack(values, bits)


@pytest.mark.parametrize("bad", [[0.5], [True], ["1"], np.array([np.nan]), [2**70]])
def test_rejects_non_integers(bad):
    with pytest.raises(ValueError):
        pack(bad, 8)


@pytest.mark.parametrize("bits", [0, 33, -1, True, 4.0, None])
def test_rejects_bad_widths(bits):
    with pytest.raises(ValueError, match="bits"):
        pack([0], bits)
    with pytest.raises(ValueError, match="bits"):
        unpack([0], bits, 1)


def test_unpack_rejects_garbage():
    good = pack([1, -2, 3], 8)
    with pytest.raises(ValueError, match="pack into"):
        unpack(good, 8, 32)  # wrong count: would need 2 elements
    with pytest.raises(ValueError, match="pack into"):
        unpack(good + [0], 8, 3)
    with pytest.raises(ValueError):
        unpack(good, 8, -1)
    with pytest.raises(ValueError, match="field element"):
        unpack([P], 8, 3)
    with pytest.raises(ValueError, match="above bit"):
        unpack([1 << 252], 4, 5)
    with pytest.raises(ValueError, match="above bit"):
        unpack([1 << 248], 8, 31)  # 31 int8 digits use bits 0..247
    with pytest.raises(ValueError, match="beyond"):
        unpack([good[0] | (1 << (8 * 3))], 8, 3)  # a fourth digit where only three were declared
    with pytest.raises(ValueError, match="int"):
        unpack([1.0], 8, 1)
