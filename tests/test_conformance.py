"""One statement, every backend (gnark's "one circuit, every backend"): the same public values as `evaluate()`, and
the same rejections of tampered witnesses, for the zkref mock backend and the EZKL backend.

Random small statements (hypothesis) include exact ties, negatives and clamping. zkref runs many examples (mock
proving is milliseconds); EZKL few (each is a real setup and proof). The EZKL half is marked ``ezkl``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import shutil
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import get_backend
from zkref.lora.batch import LoRABatch, batch_public_values
from zkref.lora.circuit import LoRACircuit
from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness, evaluate, public_values
from zkref.plonkish.mock_prover import MockProver
from zkref.primitives.ranges import IntRange
from backends.ezkl import graph as ezkl_graph

BACKENDS = [pytest.param("zkref", id="zkref"), pytest.param("ezkl", id="ezkl", marks=pytest.mark.ezkl)]
EXAMPLES = {"zkref": 40, "ezkl": 8}


@pytest.fixture(scope="session")
def make_backend(ezkl_cache):
    made = {}

    def get(name: str):
        if name not in made:
            if name == "ezkl":
                pytest.importorskip("ezkl")
                made[name] = get_backend("ezkl", cache_dir=ezkl_cache)
            else:
                made[name] = get_backend(name)
        return made[name]

    return get


@st.composite
def cases(draw):
    """(statement, witness): d_in ≤ 8, d_out ≤ 6, rank ≤ 3, tokens ≤ 2, shift ≤ 6 (raised where EZKL's Floor would
    need more than 15 digits), int4/8/12/16 weights, int8/12/16 activations, z_q of 8, 12 or 16 bits; exact ties,
    negatives, clamping (a wide z_q clamps at shift 0 with wide weights)."""
    d_in, d_out = draw(st.integers(1, 8)), draw(st.integers(1, 6))
    r, t, shift = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 6))
    z_bits = draw(st.sampled_from([8, 8, 12, 16]))
    x_bits = draw(st.sampled_from([8, 8, 12, 16]))
    kind = draw(st.sampled_from(["random", "ties", "clamp"]))
    weight_bits = draw(st.sampled_from([8, 12]) if kind == "clamp" and z_bits > 8 else st.sampled_from([4, 4, 8, 12, 16]))
    if kind == "clamp" and z_bits > 8:
        shift = 0                                    # at shift 0, |z| ≤ d_in·127² clamps int12, and int16 for d_in ≥ 3
    statement = LoRAStatement(shape=LoRAShape(d_in=d_in, d_out=d_out, rank=r, tokens=t), shift=shift,
                              weight_bits=weight_bits, z_bits=z_bits, activation_bits=x_bits)
    while ezkl_graph.unsupported_reason(statement):  # EZKL: a base-2^shift Floor of a wide range needs > 15 digits
        statement = dataclasses.replace(statement, shift=statement.shift + 1)
    shift = statement.shift
    ints = lambda lo, hi, n: draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))  # noqa: E731
    w, a = IntRange(weight_bits), IntRange(x_bits)
    A = np.array(ints(w.lo, w.hi, r * d_in)).reshape(r, d_in)
    B = np.array(ints(w.lo, w.hi, d_out * r)).reshape(d_out, r)
    x = np.array(ints(a.lo, a.hi, t * d_in)).reshape(t, d_in)
    if kind == "ties" and shift:
        x[:, :] = 0                                  # z[t, o] = A[o, 0]·x[t, 0] = ±odd·2^(shift-1): exact ties
        x[:, 0] = [(1 << (shift - 1)) * (-1) ** i for i in range(t)]
        A[:, 0] = [draw(st.sampled_from([-7, -5, -3, -1, 1, 3, 5, 7])) for _ in range(r)]
    elif kind == "clamp":
        x[:, :] = draw(st.sampled_from([-128, 127]))
        A[:, :] = draw(st.sampled_from([w.lo, w.hi]))
    return statement, LoRAWitness(A_q=A, B_q=B, x_q=x)


@pytest.mark.parametrize("name", BACKENDS)
def test_public_values_equal_evaluate(make_backend, name):
    backend = make_backend(name)

    @settings(max_examples=EXAMPLES[name], deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cases())
    def check(case):
        statement, witness = case
        result = backend.prove(statement, witness)
        expected = public_values(statement, witness)
        assert result.public.equals(expected)
        assert np.array_equal(result.public.y_q, evaluate(statement, witness).y_q)
        assert backend.verify(statement, result.public, result.proof, anchor=backend.anchor(statement, witness))

    check()


@st.composite
def batch_cases(draw):
    """A batch of 2–3 random members from `cases` (mixed shapes and shifts, ties, clamping) with their witnesses."""
    drawn = [draw(cases()) for _ in range(draw(st.integers(2, 3)))]
    return LoRABatch.of([(f"m{i}", s) for i, (s, _) in enumerate(drawn)]), [w for _, w in drawn]


BATCH_EXAMPLES = {"zkref": 15, "ezkl": 3}


@pytest.mark.parametrize("name", BACKENDS)
def test_batch_public_values_equal_evaluate(make_backend, name):
    """A batch (several statements, one proof): every backend's public values are each member's `evaluate()`."""
    backend = make_backend(name)

    @settings(max_examples=BATCH_EXAMPLES[name], deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batch_cases())
    def check(case):
        batch, witnesses = case
        result = backend.prove_batch(batch, witnesses)
        expected = batch_public_values(batch, witnesses)
        assert all(a.equals(b) for a, b in zip(result.publics, expected))
        anchor = backend.anchor_batch(batch, witnesses)
        assert backend.verify_batch(batch, result.publics, result.proof, anchor=anchor)

    check()


@pytest.mark.ezkl
def test_backends_agree_on_a_batch(make_backend):
    statements = [_fixed(case) for case in FIXED_CASES]
    batch = LoRABatch.of([(case, s) for case, (s, _) in zip(FIXED_CASES, statements)])
    witnesses = [w for _, w in statements]
    results = {name: make_backend(name).prove_batch(batch, witnesses) for name in ("zkref", "ezkl")}
    assert all(a.equals(b) for a, b in zip(results["zkref"].publics, results["ezkl"].publics))
    assert list(results["zkref"].proof.instances) == list(results["ezkl"].proof.instances)


FIXED_CASES = {
    "ties-negatives": (3, lambda w: w),
    "clamping": (1, lambda w: LoRAWitness(A_q=np.full_like(w.A_q, 7), B_q=w.B_q, x_q=np.full_like(w.x_q, 127))),
    "shift-0": (0, lambda w: w),
}
WIDE_CASES = {  # (z_bits, shift, weight_bits, activation_bits): wide z_q with ties and negatives, clamping at its
    "wide-12": (12, 4, 8, 8),            # width, and wide weights and activations
    "wide-16-clamping": (16, 0, 8, 8),
    "int12-x12-z16": (16, 8, 12, 12),
}


def _wide(case: str) -> tuple[LoRAStatement, LoRAWitness]:
    """int8 (or wider) weights, a z_q of 12 or 16 bits: exact ties, or |z| beyond int16 at shift 0."""
    z_bits, shift, weight_bits, x_bits = WIDE_CASES[case]
    rng = np.random.default_rng(5)
    w, a = IntRange(weight_bits), IntRange(x_bits)
    A, B = rng.integers(w.lo, w.hi + 1, (3, 8)), rng.integers(w.lo, w.hi + 1, (6, 3))
    x = rng.integers(a.lo, a.hi + 1, (2, 8))
    if shift == 0:
        x[0, :], A[0, :] = 127, 127                   # z[0, 0] = 8·127² > 32767: clamped
    else:
        x[1, :] = 0                                   # z[1, o] = A[o, 0]·2^(s-1), A[o, 0] odd: exact ties
        x[1, 0] = 1 << (shift - 1)
        A[:, 0] = [37, -55, 101]
    statement = LoRAStatement(shape=LoRAShape(d_in=8, d_out=6, rank=3, tokens=2), shift=shift,
                              weight_bits=weight_bits, z_bits=z_bits, activation_bits=x_bits)
    return statement, LoRAWitness(A_q=A, B_q=B, x_q=x)


def _fixed(case: str) -> tuple[LoRAStatement, LoRAWitness]:
    if case in WIDE_CASES:
        return _wide(case)
    shift, transform = FIXED_CASES[case]
    rng = np.random.default_rng(3)
    A, B, x = rng.integers(-8, 8, (3, 8)), rng.integers(-8, 8, (6, 3)), rng.integers(-128, 128, (2, 8))
    if shift:
        x[0, :] = 0
        x[0, 0] = 1 << (shift - 1)
        A[:, 0] = [1, -1, 3]
    statement = LoRAStatement(shape=LoRAShape(d_in=8, d_out=6, rank=3, tokens=2), shift=shift)
    return statement, transform(LoRAWitness(A_q=A, B_q=B, x_q=x))


@pytest.mark.ezkl
@pytest.mark.parametrize("case", list(FIXED_CASES) + list(WIDE_CASES))
def test_backends_agree_with_each_other(make_backend, case):
    statement, witness = _fixed(case)
    trace = evaluate(statement, witness)
    assert case != "clamping" or trace.clamped == trace.z.size
    assert "clamping" not in case or trace.clamped > 0
    assert statement.z_bits == 8 or int(np.abs(trace.z_q).max()) > 127     # a wide z_q beyond int8
    results = {name: make_backend(name).prove(statement, witness) for name in ("zkref", "ezkl")}
    assert results["zkref"].public.equals(results["ezkl"].public)
    assert results["ezkl"].public.equals(public_values(statement, witness, trace))


# ----------------------------------------------------------------------------------------------------------------------
# Tampered witnesses: every backend rejects
# ----------------------------------------------------------------------------------------------------------------------

def _ezkl_evil_proof_verifies(backend, statement, witness, *, offset=0, a_override=None, z_bits=None) -> bool:
    """A dishonest EZKL prover: the statement's graph with the rounding offset moved (z_q off by one at ties) or one
    weight changed, compiled with the honest settings and proven with the HONEST proving key; verified with the
    honest verifying key. `z_bits` (default the statement's) is the width the evil graph clamps z_q to."""
    import ezkl
    import torch

    from backends.ezkl import graph

    prep = backend.prepare(statement, witness)
    s = statement.shift
    A = np.asarray(witness.A_q if a_override is None else a_override)
    q = IntRange(statement.z_bits if z_bits is None else z_bits)

    packing, free = graph.output_packing(statement), graph.boolean_free_requant(statement)

    class Evil(torch.nn.Module):
        """graph.statement_module with the rounding offset or a weight changed: the same ops, so the same layout."""

        def __init__(self):
            super().__init__()
            self.A = graph.frozen_parameter(A)
            self.B = graph.frozen_parameter(packing.pack_b(witness.B_q) if packing.cols > 1 else witness.B_q)
            if packing.tokens > 1:
                self.W = graph.frozen_parameter(packing.token_matrix(statement.shape.tokens))

        def forward(self, x):
            z = x @ self.A.t()
            if free:
                a = graph.floor_by_rebase(graph.rounding_input(z, s, lo=q.lo, offset=offset), s) if s else z - q.lo
                z = graph.clamp_by_relu(a, q.lo, q.hi)
            else:
                if s:
                    z = torch.floor(graph.rounding_input(z, s, offset=offset))
                z = torch.clamp(z, q.lo, q.hi)
            if packing.tokens > 1:
                z = graph.pack_tokens(z, self.W)
            return z @ self.B.t()

    work = prep.circuit_dir.parent / f"evil-{offset}-{a_override is not None}-{z_bits}"
    work.mkdir(exist_ok=True)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Evil(), (torch.zeros(witness.x_q.shape),), buf, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)
    (work / "m.onnx").write_bytes(buf.getvalue())
    settings_path = str(prep.circuit_dir / "settings.json")
    ezkl.compile_circuit(str(work / "m.onnx"), str(work / "m.compiled"), settings_path)
    (work / "in.json").write_text(json.dumps(graph.input_data(witness.x_q, s)))
    ezkl.gen_witness(str(work / "in.json"), str(work / "m.compiled"), str(work / "w.json"))
    ezkl.prove(str(work / "w.json"), str(work / "m.compiled"), str(prep.keys_dir / "pk.key"),
               proof_path=str(work / "p.json"), srs_path=str(prep.srs_path))
    try:
        return bool(ezkl.verify(str(work / "p.json"), settings_path, str(prep.keys_dir / "vk.key"),
                                srs_path=str(prep.srs_path)))
    except RuntimeError:
        return False
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _zkref_failures(statement, witness, tamper) -> list:
    circuit = LoRACircuit(statement=statement, witness=witness)
    prover = MockProver(circuit, circuit.public_inputs())
    tamper(prover)
    return prover.verify()


TAMPERS = ["wrong z_q", "wrong y", "x out of range", "weight out of range"]


@pytest.mark.parametrize("tamper", TAMPERS)
@pytest.mark.parametrize("name", BACKENDS)
def test_tampered_witnesses_are_rejected(make_backend, name, tamper):
    backend = make_backend(name)
    statement, witness = _fixed("ties-negatives")
    result = backend.prove(statement, witness)
    public = result.public
    anchor = backend.anchor(statement, witness)
    if tamper == "wrong z_q":                    # the tie z = 4 at shift 3 requantised to 2 (zkref) or 0 (EZKL), not 1
        if name == "zkref":
            failures = _zkref_failures(statement, witness,
                                       lambda p: p.set_cell("requant.zq", 0, p.cell("requant.zq", 0) + 1))
            assert any("requant" in str(f) for f in failures)
        else:
            assert _ezkl_evil_proof_verifies(backend, statement, witness)        # control: the honest constants
            assert not _ezkl_evil_proof_verifies(backend, statement, witness, offset=-1)   # the tie 4/8 → 0, not 1
    elif tamper == "wrong y":
        y = public.y_q.copy()
        y[0, 0] += 1
        verdict = backend.verify(statement, dataclasses.replace(public, y_q=y), result.proof, anchor=anchor)
        assert not verdict and "instances differ" in verdict.reason
    elif tamper == "x out of range":
        x = public.x_q.copy()
        x[0, 1] = 200
        verdict = backend.verify(statement, dataclasses.replace(public, x_q=x), result.proof, anchor=anchor)
        assert not verdict and "public values do not fit" in verdict.reason
    else:                                        # a weight of 9 is not int4
        A = witness.A_q.copy()
        A[0, 1] = 9
        bad = LoRAWitness(A_q=A, B_q=witness.B_q, x_q=witness.x_q)
        with pytest.raises(ValueError):
            backend.prove(statement, bad)
        if name == "zkref":                      # a mock "proof" carrying the weight
            data = json.loads(result.proof.data)
            data["witnesses"][0]["A_q"][0][1] = 9
            verdict = backend.verify(statement, public, dataclasses.replace(result.proof,
                                                                            data=json.dumps(data).encode()),
                                     anchor=anchor)
            assert not verdict
        else:                                    # a circuit holding the weight: not the honest verifying key
            assert not _ezkl_evil_proof_verifies(backend, statement, witness, a_override=A)


WIDE_TAMPERS = ["wrong wide z_q", "z_q clamped to int8"]


@pytest.mark.parametrize("tamper", WIDE_TAMPERS)
@pytest.mark.parametrize("name", BACKENDS)
def test_tampered_wide_intermediates_are_rejected(make_backend, name, tamper):
    """A z_q of 12 bits moved by one at a tie, or clamped to int8 instead of int12: every backend rejects."""
    backend = make_backend(name)
    statement, witness = _wide("wide-12")
    trace = evaluate(statement, witness)
    if name == "zkref":
        t, o = np.argwhere(np.abs(trace.z_q) > 127)[0]
        row = (int(t) * statement.shape.rank + int(o)) * _limbs(LoRACircuit(statement=statement, witness=witness))
        value = trace.z_q[t, o] + 1 if tamper == "wrong wide z_q" else (127 if trace.z_q[t, o] > 0 else -128)
        failures = _zkref_failures(statement, witness, lambda p: p.set_cell("requant.zq", row, int(value)))
        assert any("requant" in str(f) for f in failures)
    elif tamper == "wrong wide z_q":
        assert _ezkl_evil_proof_verifies(backend, statement, witness)            # control: the honest constants
        assert not _ezkl_evil_proof_verifies(backend, statement, witness, offset=-1)   # the ties round the other way
    else:
        assert not _ezkl_evil_proof_verifies(backend, statement, witness, z_bits=8)


def test_zkref_rejects_a_wide_activation_split_into_other_bytes():
    """zkref multiplies a wide z_q as a = 256·ah + al: al + 256 with ah − 1 keeps the gate but fails the byte lookup."""
    statement, witness = _wide("wide-12")

    def split(p):
        p.set_cell("macz.al0", 0, p.cell("macz.al0", 0) + 256)
        p.set_cell("macz.ah0", 0, p.cell("macz.ah0", 0) - 1)
    failures = _zkref_failures(statement, witness, split)
    assert failures and all("macz lane 0" in str(f) for f in failures)


def _limbs(circuit: LoRACircuit) -> int:
    """Rows of one Requant block in `circuit`."""
    from zkref.plonkish.layout import configure

    _, config = configure(circuit)
    return config.requant.limbs
