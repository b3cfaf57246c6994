"""Protocol messages and tensors on the wire: strict safetensors decoding, bounded pydantic models, conversions."""
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from backends.base import AdapterAnchor, Proof
from zkref.lora.quantisation import Dequantisation
from zkref.lora.statement import LoRAShape, LoRAStatement
from zkref.protocol import messages as m
from zkref.protocol.tensors import Dim, TensorFormatError, TensorSpec, decode_tensors, encode_tensors

X_SPEC = {"x_q": TensorSpec("I8", (Dim(1, 8), Dim.exactly(4)))}


def header_bytes(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_round_trip_with_the_safetensors_package_both_ways():
    rng = np.random.default_rng(0)
    tensors = {"x_q": rng.integers(-128, 128, (3, 4)).astype(np.int8),
               "y": rng.normal(size=(2, 5)), "z": rng.integers(-10**6, 10**6, (5,)).astype(np.int32)}
    ours = encode_tensors(tensors)
    for name, arr in st_load(ours).items():
        assert arr.dtype == tensors[name].dtype and np.array_equal(arr, tensors[name])
    specs = {"x_q": TensorSpec("I8", (Dim.exactly(3), Dim.exactly(4))),
             "y": TensorSpec("F64", (Dim.exactly(2), Dim.exactly(5))), "z": TensorSpec("I32", (Dim.exactly(5),))}
    for blob in (ours, st_save(tensors)):
        back = decode_tensors(blob, specs)
        assert all(np.array_equal(back[k], tensors[k]) for k in tensors)


@pytest.mark.parametrize("blob, expected", [
    (b"", "too short"),
    (struct.pack("<Q", 1 << 40), "exceeds"),
    (struct.pack("<Q", 100) + b"{}", "runs past the end"),
    (header_bytes({"x_q": {"dtype": "I8", "shape": [1, 4], "data_offsets": [0, 4]}}, b"\0" * 4 + b"!"), "trailing"),
    (header_bytes({"x_q": {"dtype": "I16", "shape": [1, 4], "data_offsets": [0, 8]}}, b"\0" * 8), "dtype"),
    (header_bytes({"x_q": {"dtype": "I8", "shape": [1, 5], "data_offsets": [0, 5]}}, b"\0" * 5), "shape"),
    (header_bytes({"x_q": {"dtype": "I8", "shape": [9, 4], "data_offsets": [0, 36]}}, b"\0" * 36), "shape"),
    (header_bytes({"x_q": {"dtype": "I8", "shape": [0, 4], "data_offsets": [0, 0]}}), "shape"),
    (header_bytes({"x_q": {"dtype": "I8", "shape": [True, 4], "data_offsets": [0, 4]}}, b"\0" * 4), "integers"),
    (header_bytes({"x_q": {"dtype": "I8", "shape": [1, 4], "data_offsets": [1, 5]}}, b"\0" * 5), "gap"),
    (header_bytes({"x_q": {"dtype": "I8", "shape": [1, 4], "data_offsets": [0, 3]}}, b"\0" * 4), "data_offsets"),
    (header_bytes({"x": {"dtype": "I8", "shape": [1, 4], "data_offsets": [0, 4]}}, b"\0" * 4), "missing"),
    (header_bytes({"x_q": {"dtype": "I8", "shape": [1, 4], "data_offsets": [0, 4], "extra": 1}}, b"\0" * 4),
     "exactly"),
    (header_bytes({"x_q": {"dtype": "I8", "shape": [1, 4], "data_offsets": [0, 4]}, "__metadata__": {"a": 1}},
                  b"\0" * 4), "__metadata__"),
    (header_bytes([1, 2]), "not a JSON object"),
    (struct.pack("<Q", 2) + b"\xff\xfe", "UTF-8"),
    (struct.pack("<Q", 16) + b'{"a":1,"a":2}   ', "duplicate"),
    (struct.pack("<Q", 8) + b'{"a":NaN', "NaN"),
])
def test_decode_refuses_with_a_reason(blob, expected):
    with pytest.raises(TensorFormatError, match=expected):
        decode_tensors(blob, X_SPEC)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_decode_of_arbitrary_bytes_raises_only_tensor_format_errors(blob):
    try:
        out = decode_tensors(blob, X_SPEC)
    except TensorFormatError:
        return
    assert out["x_q"].dtype == np.int8 and out["x_q"].shape[1] == 4


@settings(max_examples=200)
@given(st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_decode_of_mutated_valid_messages(position, replacement):
    blob = bytearray(encode_tensors({"x_q": np.arange(12, dtype=np.int8).reshape(3, 4)}))
    blob[position:position + len(replacement)] = replacement
    try:
        out = decode_tensors(bytes(blob), X_SPEC)
    except TensorFormatError:
        return
    assert out["x_q"].shape == (3, 4)


def statement() -> LoRAStatement:
    return LoRAStatement(shape=LoRAShape(d_in=4, d_out=3, rank=2, tokens=5), shift=3)


def test_statement_template_rebuilds_the_statement_and_its_id():
    s = statement()
    template = m.StatementTemplate.of(s)
    assert template.statement(5).id == s.id and template.statement(6).id != s.id
    assert set(template.model_dump()) | {"tokens"} == set(s.canonical())


def test_module_info_checks_consistency_and_bounds():
    s = statement()
    deq = Dequantisation(2.0, 0.1, (0.2, 0.3, 0.4), 0.05, 3)
    info = dict(name="model.layers.0.q_proj", adapter="default", base_layer="Linear", d_in=4, d_out=3, rank=2,
                lora_alpha=4.0, scaling=2.0, use_rslora=False, statement=m.StatementTemplate.of(s),
                dequantisation=m.DequantisationInfo.of(deq))
    ok = m.ModuleInfo(**info)
    assert ok.dequantisation.dequantisation(3) == deq
    shared = m.DequantisationInfo.of(Dequantisation(2.0, 0.1, (0.2,) * 3, 0.05, 3))
    assert shared.scale_B == [0.2] and shared.dequantisation(3).scale_B == (0.2, 0.2, 0.2)
    with pytest.raises(ValueError, match="expected 1 or d_out"):
        ok.dequantisation.dequantisation(4)
    for bad in ({"d_out": 4}, {"scaling": 3.0}, {"name": "../etc"}, {"name": "x" * 300}, {"surprise": 1}):
        with pytest.raises(ValidationError):
            m.ModuleInfo(**(info | bad))
    with pytest.raises(ValidationError):
        m.DequantisationInfo(scaling=1.0, scale_A=0.1, scale_B=[float("nan")], scale_x=0.1, shift=3)
    with pytest.raises(ValidationError):  # strict: no strings for numbers
        m.ModuleInfo.model_validate_json(json.dumps(ok.model_dump() | {"d_in": "4"}))


def test_proof_message_round_trip_and_bounds():
    proof = Proof(backend="zkref", statement_id="a" * 32, instances=(0, 1, 2**200), data=b"proof\x00bytes",
                  zero_knowledge=False, vk=b"vk", vk_hash="b" * 64, settings={"lanes": 8}, commitments={},
                  meta={"note": "x"})
    msg = m.ProofMessage.model_validate_json(m.ProofMessage.of(proof).model_dump_json())
    back = msg.proof()
    assert (back.instances, back.data, back.vk, back.settings) == (proof.instances, proof.data, proof.vk,
                                                                    proof.settings)
    with pytest.raises(ValidationError):
        m.ProofMessage(**(msg.model_dump() | {"instances": ["zz" * 32]}))
    with pytest.raises(ValueError, match="base64"):
        m.ProofMessage(**(msg.model_dump() | {"data": "not base64!"})).proof()
    with pytest.raises(ValueError, match="not below p"):
        m.ProofMessage(**(msg.model_dump() | {"instances": ["ff" * 32]})).proof()


def test_anchor_and_call_status_invariants():
    anchor = AdapterAnchor(backend="ezkl", statement_id="c" * 32, vk_hash="d" * 64)
    assert m.AnchorInfo.of(anchor).anchor() == anchor
    base = dict(call_id="e" * 32, module="m", tokens=1, reason="", worker=None, timings={})
    m.CallStatus(**base, status="pending", proof=None, scope=None)
    with pytest.raises(ValidationError, match="proof and its scope are present exactly"):
        m.CallStatus(**base, status="done", proof=None, scope=None)
    with pytest.raises(ValidationError):
        m.CallStatus(**(base | {"call_id": "E" * 32}), status="pending", proof=None, scope=None)
