"""The LoRA statement (zkref.lora.statement): identity, the one semantics, public values and their instance vector."""
import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from backends import get_backend
from backends.base import AdapterAnchor
from zkref.lora.statement import (FORMAT, ActivationBinding, AdapterBinding, LoRAPublic, LoRAShape, LoRAStatement,
                                  LoRAWitness, OutputBinding, check_public, decode_instances, encode_instances,
                                  evaluate, instance_layout, instance_length, public_values)
from zkref.primitives.field import P

BASE = LoRAStatement(shape=LoRAShape(d_in=6, d_out=5, rank=2, tokens=2), shift=4)


def witness(shape: LoRAShape, seed: int = 0) -> LoRAWitness:
    rng = np.random.default_rng(seed)
    return LoRAWitness(A_q=rng.integers(-8, 8, shape.a_shape), B_q=rng.integers(-8, 8, shape.b_shape),
                       x_q=rng.integers(-128, 128, shape.x_shape))


# ------------------------------------------------------------------------------------------------------ identity
def variants(base: LoRAStatement) -> dict[str, LoRAStatement]:
    """One statement per field changed: every field of the canonical encoding."""
    s = base.shape
    return {
        "d_in": dataclasses.replace(base, shape=dataclasses.replace(s, d_in=s.d_in + 1)),
        "d_out": dataclasses.replace(base, shape=dataclasses.replace(s, d_out=s.d_out + 1)),
        "rank": dataclasses.replace(base, shape=dataclasses.replace(s, rank=s.rank + 1)),
        "tokens": dataclasses.replace(base, shape=dataclasses.replace(s, tokens=s.tokens + 1)),
        "shift": dataclasses.replace(base, shift=base.shift + 1),
        "x_binding": dataclasses.replace(base, x_binding=ActivationBinding.HASHED),
        "adapter_binding": dataclasses.replace(base, adapter_binding=AdapterBinding.UNBOUND),
        "y_binding": dataclasses.replace(base, y_binding=OutputBinding.POLYCOMMIT),
        "weight_bits": dataclasses.replace(base, weight_bits=8),
        "z_bits": dataclasses.replace(base, z_bits=12),
        "activation_bits": dataclasses.replace(base, activation_bits=12),
        "weight_bits_12": dataclasses.replace(base, weight_bits=12),
    }


def test_the_id_changes_with_every_field_and_only_with_them():
    ids = {name: st_.id for name, st_ in variants(BASE).items()}
    assert len(set(ids.values()) | {BASE.id}) == len(ids) + 1
    same = LoRAStatement(shape=LoRAShape(d_in=6, d_out=5, rank=2, tokens=2), shift=4,
                         x_binding="public", adapter_binding="fixed")
    assert same.id == BASE.id and len(BASE.id) == 32
    # every binding mode of every field is distinct
    all_ids = {dataclasses.replace(BASE, x_binding=x, adapter_binding=a, y_binding=y).id
               for x in ActivationBinding for a in AdapterBinding for y in OutputBinding}
    assert len(all_ids) == len(ActivationBinding) * len(AdapterBinding) * len(OutputBinding)


def test_canonical_encoding_round_trips_and_names_its_format():
    for st_ in [BASE, *variants(BASE).values()]:
        doc = json.loads(st_.canonical_bytes())
        assert doc["format"] == FORMAT and doc["weight_bits"] == st_.weight_bits
        assert doc["activation_bits"] == st_.activation_bits
        assert LoRAStatement.from_canonical(doc) == st_
        assert LoRAStatement.from_canonical(doc).id == st_.id


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.pop("shift"), "missing"), (lambda d: d.update(extra=1), "unexpected"),
    (lambda d: d.update(format="zkref-lora-statement/0"), "format"), (lambda d: d.update(d_in=0), "d_in"),
    (lambda d: d.update(x_binding="sha256"), "x_binding"), (lambda d: d.update(weight_bits=3), "weight_bits"), (lambda d: d.update(weight_bits=6), "weight_bits"),
    (lambda d: d.update(activation_bits=17), "activation bits"), (lambda d: d.update(activation_bits=7), "activation"),
    (lambda d: d.update(activation_bits=True), "activation bits"), (lambda d: d.update(shift=True), "shift"),
    (lambda d: d.update(requant="round-half-away-then-clamp-int08"), "requantisation rule"),
    (lambda d: d.update(requant="round-half-away-then-clamp-int7"), "requantisation rule"),
    (lambda d: d.update(requant="round-half-away-then-clamp-int17"), "requantisation rule"),
    (lambda d: d.update(requant="round-half-away-then-clamp-int12 "), "requantisation rule"),
    (lambda d: d.update(requant="round-half-away-then-clamp-int١٢"), "requantisation rule"),
    (lambda d: d.update(requant=12), "requantisation rule"),
])
def test_decoding_a_statement_is_strict(mutate, match):
    doc = BASE.canonical()
    mutate(doc)
    with pytest.raises(ValueError, match=match):
        LoRAStatement.from_canonical(doc)


def test_unbound_adapters_are_labelled_wherever_shown():
    assert "UNBOUND" in dataclasses.replace(BASE, adapter_binding="unbound").describe()
    assert "UNBOUND" not in BASE.describe()


# ------------------------------------------------------------------------------------------------------ semantics
def plain_evaluate(A, B, x, shift):
    def requant(v):
        q = v if shift == 0 else ((abs(v) + (1 << (shift - 1))) >> shift) * (1 if v >= 0 else -1)
        return max(-128, min(127, q))
    z = [[sum(int(a) * int(v) for a, v in zip(row, tok)) for row in A] for tok in x]
    zq = [[requant(v) for v in zt] for zt in z]
    return z, zq, [[sum(int(b) * v for b, v in zip(row, zt)) for row in B] for zt in zq]


@settings(max_examples=60)
@given(st.integers(1, 12), st.integers(1, 8), st.integers(1, 4), st.integers(1, 3), st.integers(0, 12),
       st.integers(0, 2**31))
def test_evaluate_is_exact_integer_arithmetic(d_in, d_out, rank, tokens, shift, seed):
    shape = LoRAShape(d_in=d_in, d_out=d_out, rank=rank, tokens=tokens)
    w = witness(shape, seed)
    trace = evaluate(LoRAStatement(shape=shape, shift=shift), w)
    z, zq, y = plain_evaluate(w.A_q, w.B_q, w.x_q, shift)
    assert trace.z.tolist() == z and trace.z_q.tolist() == zq and trace.y_q.tolist() == y


def test_evaluate_ties_negatives_and_clamping():
    shape = LoRAShape(d_in=1, d_out=1, rank=6, tokens=1)
    A = np.array([[1], [-1], [3], [-3], [7], [-8]])
    w = LoRAWitness(A_q=A, B_q=np.ones((1, 6), dtype=int), x_q=np.array([[2]]))
    trace = evaluate(LoRAStatement(shape=shape, shift=2), w)
    # z = 2, -2, 6, -6, 14, -16 over 4: ties .5 → away from zero
    assert trace.z_q.tolist() == [[1, -1, 2, -2, 4, -4]]
    big = LoRAWitness(A_q=np.full((1, 4), -8), B_q=np.ones((1, 1), dtype=int), x_q=np.full((1, 4), -128))
    t2 = evaluate(LoRAStatement(shape=big.shape, shift=0), big)
    assert t2.z_q.tolist() == [[127]] and t2.clamped == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(A_q=np.zeros((2, 3)), B_q=np.zeros((4, 3)), x_q=np.zeros((1, 3))), "ranks differ"),
    (dict(A_q=np.zeros((2, 3)), B_q=np.zeros((4, 2)), x_q=np.zeros((1, 4))), "x_q must be"),
    (dict(A_q=np.full((2, 3), -32769), B_q=np.zeros((4, 2)), x_q=np.zeros((1, 3))), "A_q values"),
    (dict(A_q=np.zeros((2, 3)), B_q=np.zeros((4, 2)), x_q=np.full((1, 3), 32768)), "x_q values"),
    (dict(A_q=np.zeros((2, 3)), B_q=np.zeros((4, 2)), x_q=np.zeros(3)), "2-D"),
])
def test_witness_is_validated_once_with_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoRAWitness(**kwargs)


def test_the_statement_checks_its_own_weight_width():
    w = LoRAWitness(A_q=np.full((2, 6), -9), B_q=np.zeros((5, 2)), x_q=np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"int4 \[-8, 7\]"):
        evaluate(BASE, w)
    wide = dataclasses.replace(BASE, weight_bits=8)
    assert evaluate(wide, w).z.tolist() == [[0, 0], [0, 0]] and wide.id != BASE.id
    assert wide.z_bounds == (6 * -128 * 127, 6 * 128 * 128)


def test_a_witness_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        evaluate(dataclasses.replace(BASE, shape=LoRAShape(d_in=6, d_out=5, rank=2, tokens=3)), witness(BASE.shape))


# ------------------------------------------------------------------------------------------------------ public values
@pytest.mark.parametrize("x", list(ActivationBinding))
@pytest.mark.parametrize("adapter", list(AdapterBinding))
@pytest.mark.parametrize("y", list(OutputBinding))
def test_instances_round_trip_for_every_binding(x, adapter, y):
    statement = dataclasses.replace(BASE, x_binding=x, adapter_binding=adapter, y_binding=y)
    w = witness(statement.shape, 3)
    public = public_values(statement, w)
    vector = encode_instances(statement, public)
    assert len(vector) == instance_length(statement) == sum(seg.length for seg in instance_layout(statement))
    kzg = {"x_q": w.x_q if x is ActivationBinding.POLYCOMMIT else None,
           "y_q": public.y_q if y is OutputBinding.POLYCOMMIT else None}
    assert decode_instances(statement, vector, **kzg).equals(public)
    assert LoRAPublic.from_json(statement, json.loads(json.dumps(public.to_json()))).equals(public)


def test_wrong_length_instances_are_rejected():
    w = witness(BASE.shape)
    vector = encode_instances(BASE, public_values(BASE, w))
    for bad in (vector + [0], vector[:-1], []):
        with pytest.raises(ValueError, match="public instances"):
            decode_instances(BASE, bad)
    with pytest.raises(ValueError, match="field element"):
        decode_instances(BASE, vector[:-1] + [P])


def test_out_of_range_public_values_are_rejected():
    w = witness(BASE.shape)
    public = public_values(BASE, w)
    lo, hi = BASE.y_bounds
    y = public.y_q.copy()
    y[0, 0] = hi + 1
    with pytest.raises(ValueError, match="outside"):
        check_public(BASE, LoRAPublic(y_q=y, x_q=public.x_q))
    vector = encode_instances(BASE, public)
    vector[0] = 128  # x_q[0, 0] = 128 is not int8
    with pytest.raises(ValueError, match="int8"):
        decode_instances(BASE, vector)
    vector[0] = P // 2  # a huge field element where an int8 belongs
    with pytest.raises(ValueError):
        decode_instances(BASE, vector)
    with pytest.raises(ValueError, match="must not be part"):
        check_public(dataclasses.replace(BASE, x_binding="hashed"), public)


# ------------------------------------------------------------------------------------------------------ proofs
def test_a_proof_does_not_verify_under_a_statement_with_another_shift_shape_or_binding():
    backend = get_backend("zkref")
    w = witness(BASE.shape)
    result = backend.prove(BASE, w)
    assert backend.verify(BASE, result.public, result.proof, anchor=backend.anchor(BASE, w))
    for name, other in variants(BASE).items():
        if not backend.supports(other):
            continue
        pinned = AdapterAnchor(backend="zkref", statement_id=other.id, vk_hash=result.proof.vk_hash)  # worst case
        verdict = backend.verify(other, result.public, result.proof, anchor=pinned)
        assert not verdict and ("statement" in verdict.reason or "public" in verdict.reason), (name, verdict)


def test_colliding_digests_do_not_let_a_proof_move_to_another_shape():
    # a packed x of 30 values and the same x followed by -128 hash alike; the statement ids differ
    shape30, shape31 = LoRAShape(d_in=30, d_out=2, rank=1), LoRAShape(d_in=31, d_out=2, rank=1)
    s30 = LoRAStatement(shape=shape30, shift=8, x_binding="hashed-packed")
    s31 = LoRAStatement(shape=shape31, shift=8, x_binding="hashed-packed")
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (1, 30))
    w30 = LoRAWitness(A_q=rng.integers(-8, 8, (1, 30)), B_q=rng.integers(-8, 8, (2, 1)), x_q=x)
    backend = get_backend("zkref")
    result = backend.prove(s30, w30)
    assert result.public.x_digest == public_values(
        s31, LoRAWitness(A_q=np.zeros((1, 31)), B_q=np.zeros((2, 1)), x_q=np.concatenate([x, [[-128]]], axis=1))
    ).x_digest
    verdict = backend.verify(s31, result.public, result.proof, anchor=backend.anchor(s30, w30))
    assert not verdict and "statement" in verdict.reason


# ------------------------------------------------------------------------------------------------------ z_q's width
def test_the_default_int8_intermediate_encodes_as_before_z_bits_existed():
    """z_bits lives in the requantisation rule's name: the default statement's encoding, and so its id, is unchanged."""
    doc = BASE.canonical()
    assert doc["requant"] == "round-half-away-then-clamp-int8" and "z_bits" not in doc
    assert BASE.id == "5c6d55647dc5e703d0b8b59ef63052b8"       # the id before z_bits (commit be86960)
    wide = dataclasses.replace(BASE, z_bits=16)
    assert wide.canonical()["requant"] == "round-half-away-then-clamp-int16" and wide.id != BASE.id
    assert LoRAStatement.from_canonical(wide.canonical()) == wide


@pytest.mark.parametrize("bits", [7, 17, True, 12.0])
def test_z_bits_outside_8_to_16_are_refused(bits):
    with pytest.raises(ValueError, match="z_bits"):
        dataclasses.replace(BASE, z_bits=bits)


def test_a_wider_intermediate_keeps_what_int8_clamps_and_widens_y_bounds():
    w = LoRAWitness(A_q=[[7, 7]], B_q=[[-8]], x_q=[[127, 127]])               # z = 1778, shift 2: 444.5 → 445
    shape = LoRAShape(d_in=2, d_out=1, rank=1)
    narrow, wide = (LoRAStatement(shape=shape, shift=2, z_bits=b) for b in (8, 12))
    assert evaluate(narrow, w).z_q.tolist() == [[127]] and evaluate(narrow, w).clamped == 1
    assert evaluate(wide, w).z_q.tolist() == [[445]] and evaluate(wide, w).clamped == 0
    assert evaluate(wide, w).y_q.tolist() == [[-3560]]
    assert wide.y_bounds == (-8 * 2047, 8 * 2048) and narrow.y_bounds == (-8 * 127, 8 * 128)
    assert "z_q int12" in wide.describe() and "z_q" not in narrow.describe()


def test_wider_activations_and_weights_are_checked_against_the_statement():
    shape = LoRAShape(d_in=2, d_out=1, rank=1)
    w = LoRAWitness(A_q=[[2047, -2048]], B_q=[[3]], x_q=[[2047, 1000]])          # int12 weights and activations
    narrow = LoRAStatement(shape=shape, shift=4)
    wide = LoRAStatement(shape=shape, shift=4, weight_bits=12, activation_bits=12, z_bits=16)
    with pytest.raises(ValueError, match="A_q must lie in int4"):
        narrow.check_witness(w)
    with pytest.raises(ValueError, match="x_q must lie in int8"):
        dataclasses.replace(wide, activation_bits=8).check_witness(w)
    assert evaluate(wide, w).z.tolist() == [[2047 * 2047 - 2048 * 1000]]
    assert wide.z_bounds == (2 * -2048 * 2047, 2 * 2048 * 2048)
    assert "int12×int12 z_q int16" in wide.describe()
    public = public_values(wide, w)
    check_public(wide, public)
    with pytest.raises(ValueError, match="x_q must lie in int8"):
        check_public(dataclasses.replace(wide, activation_bits=8, weight_bits=16), public)
    assert LoRAPublic.from_json(wide, public.to_json()).equals(public)
