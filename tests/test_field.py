"""The BN254 field helpers: felt strings (EZKL's encoding), signed views, vectorised arrays."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from zkref.primitives.field import (P, as_field_array, canonical, felt_from_str, felt_to_str, field_equal, gf, is_zero, signed,
                         to_field)

field_elements = st.one_of(st.integers(0, 1000), st.integers(P - 1000, P - 1), st.integers(0, P - 1))


@given(field_elements)
def test_felt_string_round_trips(v):
    s = felt_to_str(v)
    assert len(s) == 64 and s == s.lower()
    assert felt_from_str(s) == v


def test_felt_string_is_little_endian():
    assert felt_to_str(1) == "01" + "00" * 31
    assert felt_to_str(256) == "0001" + "00" * 30


@pytest.mark.parametrize("bad", [
    "", "00", "0" * 63, "0" * 65, "0x" + "0" * 62, "zz" + "0" * 62, " " * 64,
    felt_to_str(P - 1)[:-2] + "ff",  # value >= p (top byte 0xff)
    (P).to_bytes(32, "little").hex(),  # exactly p: not canonical
])
def test_malformed_felt_strings_raise_value_error(bad):
    with pytest.raises(ValueError):
        felt_from_str(bad)


@pytest.mark.parametrize("bad", [None, 12, b"00" * 32])
def test_non_string_felts_raise_value_error(bad):
    with pytest.raises(ValueError):
        felt_from_str(bad)


@pytest.mark.parametrize("bad", [-1, P, 2**300, 1.0, True, "1"])
def test_felt_to_str_rejects_non_elements(bad):
    with pytest.raises(ValueError):
        felt_to_str(bad)


def test_matches_ezkl_encoding_of_negatives():
    ezkl = pytest.importorskip("ezkl")
    for v in (-1, -5, 0, 7, -128, 127):
        assert ezkl.float_to_felt(float(v), 0, ezkl.PyInputType.F64) == felt_to_str(v % P)
        assert ezkl.felt_to_int(felt_to_str(v % P)) == v


@given(st.integers(-(2**200), 2**200))
def test_signed_view_inverts_reduction(v):
    small = abs(v) < P // 2
    if small:
        assert signed(to_field(v)) == v


def test_galois_field_object_agrees_with_python_ints():
    F = gf()
    a, b = F(P - 3), F(12345)
    assert int(a * b) == (P - 3) * 12345 % P
    assert int(a ** -1) * (P - 3) % P == 1


@given(st.lists(st.integers(-(2**70), 2**70), min_size=1, max_size=20))
def test_field_arrays_pick_the_exact_representation(values):
    arr = as_field_array(np.array(values, dtype=object))
    assert [int(v) % P for v in canonical(arr)] == [v % P for v in values]
    assert arr.dtype == (np.int64 if all(abs(v) < 2**62 for v in values) else object)
    assert field_equal(arr, canonical(arr)).all()
    assert is_zero(as_field_array(np.array([0, P], dtype=object))).all()


@pytest.mark.parametrize("bad", [[1.5], [float("nan")], [float("inf")], ["a"]])
def test_field_arrays_reject_non_integers(bad):
    with pytest.raises(ValueError):
        as_field_array(np.array(bad, dtype=object) if bad == ["a"] else np.array(bad))
