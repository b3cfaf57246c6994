"""The in-circuit Poseidon sponge and packing chips: digests equal the reference, tampering is named, audit is clean."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zkref.plonkish.accounting import account
from zkref.plonkish.audit import audit
from zkref.examples.commitment import CommitmentCircuit
from zkref.lora.commitments import adapter_digest, adapter_message
from zkref.plonkish.failures import ConstraintNotSatisfied, CopyConstraintFailure, InstanceMismatch
from zkref.primitives.field import P
from zkref.plonkish.mock_prover import MockProver
from zkref.primitives.poseidon import poseidon_hash


def prover_for(circuit):
    return MockProver(circuit, circuit.public_inputs())


@settings(max_examples=25)
@given(st.lists(st.one_of(st.integers(0, 3), st.integers(P - 3, P - 1), st.integers(0, P - 1)), min_size=1,
                max_size=4))
def test_chip_digest_equals_reference(values):
    circuit = CommitmentCircuit(values=tuple(values))
    prover = prover_for(circuit)
    assert prover.verify() == []
    assert prover.instances[0][0] % P == poseidon_hash(values) == circuit.digest()


@settings(max_examples=15)
@given(st.lists(st.integers(-8, 7), min_size=1, max_size=150), st.sampled_from([4, 8]))
def test_packed_chip_digest_equals_packed_commitment(values, bits):
    circuit = CommitmentCircuit(values=tuple(values), bits=bits)
    assert prover_for(circuit).verify() == []


def test_adapter_commitments_proven_in_circuit():
    rng = np.random.default_rng(1)
    A, B = rng.integers(-8, 8, (2, 5)), rng.integers(-8, 8, (3, 2))
    plain = CommitmentCircuit(values=tuple(adapter_message(A, B, shift=3, packed=False)))
    packed = CommitmentCircuit(values=tuple(int(v) for v in np.concatenate([A.T.ravel(), B.T.ravel()])), bits=4)
    assert plain.digest() == adapter_digest(A, B, shift=3, packed=False)
    assert packed.digest() == adapter_digest(A, B, shift=3, packed=True)
    assert prover_for(plain).verify() == [] and prover_for(packed).verify() == []


def test_tampered_absorbed_cell_is_named():
    prover = prover_for(CommitmentCircuit(values=(5, 6, 7)))
    prover.set_cell("poseidon.m", 64, 99)  # the second absorbed element, inside the sponge
    failures = prover.verify()
    assert any(isinstance(f, CopyConstraintFailure) and f.right.column == "poseidon.m" and f.right.row == 64
               for f in failures)
    assert any(isinstance(f, ConstraintNotSatisfied) and f.gate == "poseidon absorb round" and f.row == 64
               for f in failures)


@pytest.mark.parametrize("row, gate", [(1, "poseidon full round"), (30, "poseidon partial round"),
                                       (0, "poseidon init")])
def test_tampered_round_cell_is_named(row, gate):
    prover = prover_for(CommitmentCircuit(values=(5, 6)))
    prover.set_cell("poseidon.s1", row, prover.cell("poseidon.s1", row) + 1)
    gates = {f.gate for f in prover.verify() if isinstance(f, ConstraintNotSatisfied)}
    assert gate in gates


def test_tampered_digest_is_an_instance_mismatch():
    prover = prover_for(CommitmentCircuit(values=(5,)))
    prover.set_cell("poseidon.s0", 64, 1)
    assert any(isinstance(f, InstanceMismatch) for f in prover.verify())


def test_tampered_packed_digit_is_caught_by_range_lookup_or_horner():
    prover = prover_for(CommitmentCircuit(values=(1, -2, 3), bits=4))
    prover.set_cell("pack.digit", 1, 8)  # out of int4 range, and breaks the copy
    names = {getattr(f, "lookup", None) or getattr(f, "gate", None) for f in prover.verify()}
    assert "pack digit range" in names and "pack horner step" in names


@pytest.mark.parametrize("bits", [None, 4])
def test_audit_finds_no_under_constrained_cell(bits):
    circuit = CommitmentCircuit(values=(3, -1, 4), bits=bits)
    assert audit(circuit, circuit.public_inputs()).unconstrained == []


def test_accounting_rows_per_permutation_and_packed_saving():
    plain = account(CommitmentCircuit(count=1000))
    packed = account(CommitmentCircuit(count=1000, bits=4))
    poseidon_rows = {c.chip: c.rows for c in plain.chips}["Poseidon"]
    assert poseidon_rows == 64 * 1000 + 1  # 64 rows per permutation, one permutation per absorbed element
    packed_rows = {c.chip: c.rows for c in packed.chips}
    assert packed_rows["Poseidon"] == 64 * 16 + 1 and packed_rows["Pack"] == 1000  # 63 int4 values per element
    assert packed.k < plain.k


def test_out_of_range_value_for_packing_raises():
    with pytest.raises(ValueError):
        prover_for(CommitmentCircuit(values=(1, 8), bits=4))
