"""zkref's layout of each binding mode: hashed (plain, EZKL's) and packed commitments, a fixed or unbound adapter."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zkref.lora.circuit import LoRACircuit, LoRALayout
from zkref.lora.report import build_report
from zkref.lora.statement import (LoRAShape, LoRAStatement, LoRAWitness, encode_instances, instance_layout,
                                  public_values)
from zkref.plonkish.accounting import account, cost_of_layout
from zkref.plonkish.audit import audit
from zkref.plonkish.failures import ConstraintNotSatisfied, CopyConstraintFailure, InstanceMismatch, LookupFailure
from zkref.plonkish.mock_prover import MockProver


def circuit_for(d_in, d_out, rank, tokens, lanes=4, strategy="table", seed=0, x="hashed", adapter="hashed",
                shift=5, with_witness=True):
    rng = np.random.default_rng(seed)
    w = LoRAWitness(A_q=rng.integers(-8, 8, (rank, d_in)), B_q=rng.integers(-8, 8, (d_out, rank)),
                    x_q=rng.integers(-128, 128, (tokens, d_in)))
    statement = LoRAStatement(shape=w.shape, shift=shift, x_binding=x, adapter_binding=adapter)
    return LoRACircuit(statement=statement, witness=w if with_witness else None,
                       layout=LoRALayout(lanes=lanes, products=strategy))


def prover_for(circuit):
    return MockProver(circuit, circuit.public_inputs())


def offset(circuit, name):
    return next(seg.offset for seg in instance_layout(circuit.statement) if seg.name == name)


@settings(max_examples=12)
@given(st.integers(1, 16), st.integers(1, 12), st.integers(1, 4), st.integers(1, 2), st.integers(1, 8),
       st.sampled_from(["table", "gate"]), st.sampled_from(["public", "hashed", "hashed-packed"]),
       st.sampled_from(["fixed", "hashed", "hashed-packed", "unbound"]), st.integers(0, 1000))
def test_every_binding_proves_and_its_public_values_are_the_statements(d_in, d_out, rank, tokens, lanes, strategy,
                                                                        x, adapter, seed):
    circuit = circuit_for(d_in, d_out, rank, tokens, lanes, strategy, seed, x, adapter)
    prover = prover_for(circuit)
    assert prover.verify() == []
    public = public_values(circuit.statement, circuit.witness)
    assert circuit.public_inputs() == [encode_instances(circuit.statement, public)]


@pytest.mark.parametrize("adapter", ["hashed", "hashed-packed"])
def test_tampering_a_weight_the_mac_uses_is_caught(adapter):
    prover = prover_for(circuit_for(6, 5, 2, 1, lanes=4, adapter=adapter))
    row = next(r for r in prover.assigned_advice_cells() if r[0].name == "mac.w1")[1][0]
    prover.set_cell("mac.w1", int(row), (prover.cell("mac.w1", int(row)) + 1) % 8)
    failures = prover.verify()
    names = {getattr(f, "lookup", None) or getattr(f, "gate", None) for f in failures}
    assert any(isinstance(f, CopyConstraintFailure) for f in failures)  # the hash no longer sees the MAC's weight
    assert any(isinstance(f, (LookupFailure, ConstraintNotSatisfied)) for f in failures), names


@pytest.mark.parametrize("adapter", ["hashed", "hashed-packed"])
def test_tampering_the_public_adapter_digest_is_an_instance_mismatch(adapter):
    circuit = circuit_for(5, 4, 2, 1, adapter=adapter)
    public = circuit.public_inputs()
    row = offset(circuit, "adapter_digest")
    public[0][row] = public[0][row] + 1
    failures = MockProver(circuit, public).verify()
    assert [(type(f), f.instance_column, f.instance_row) for f in failures] == [(InstanceMismatch, "public", row)]


def test_the_hashed_activations_are_the_ones_multiplied():
    prover = prover_for(circuit_for(5, 4, 2, 1))
    prover.set_cell("x", 2, prover.cell("x", 2) + 1)
    kinds = {type(f) for f in prover.verify()}
    assert CopyConstraintFailure in kinds  # both the MAC's and the sponge's copies of x[2] now disagree


def test_the_plain_adapter_hash_absorbs_the_requant_constants_so_it_binds_the_shift():
    prover = prover_for(circuit_for(4, 3, 2, 1, x="public", adapter="hashed"))
    col = prover.column("adapter.constants")
    prover.set_cell(col, int(np.nonzero(prover.assigned[col])[0][0]), 5)
    assert any(isinstance(f, CopyConstraintFailure) for f in prover.verify())


@pytest.mark.parametrize("x,adapter", [("hashed", "hashed"), ("hashed-packed", "hashed-packed"),
                                       ("public", "unbound")])
def test_audit_finds_no_under_constrained_cell(x, adapter):
    circuit = circuit_for(4, 3, 2, 1, lanes=2, x=x, adapter=adapter)
    report = audit(circuit, circuit.public_inputs(), sample=400, seed=1)
    assert report.unconstrained == [], report.render()


@pytest.mark.parametrize("x,adapter", [("hashed", "hashed"), ("hashed-packed", "hashed-packed"),
                                       ("public", "fixed")])
def test_analytic_accounting_equals_witness_accounting(x, adapter):
    circuit = circuit_for(9, 7, 3, 2, x=x, adapter=adapter)
    analytic = account(circuit_for(9, 7, 3, 2, x=x, adapter=adapter, with_witness=False), "c")
    assert cost_of_layout(prover_for(circuit).layout, "c").to_dict() == analytic.to_dict()


def _statement(x, adapter):
    return LoRAStatement(shape=LoRAShape(d_in=64, d_out=64, rank=4), shift=0, x_binding=x, adapter_binding=adapter)


def test_packed_commitments_are_cheaper_and_reported():
    plain = account(LoRACircuit(statement=_statement("hashed", "hashed")))
    packed = account(LoRACircuit(statement=_statement("hashed-packed", "hashed-packed")))
    bare = account(LoRACircuit(statement=_statement("public", "fixed")))
    assert packed.rows_used < plain.rows_used and bare.k <= packed.k <= plain.k
    # plain: 64 rows per absorbed element: 64 activations + 512 weights + the requantisation's 2 constants (shift 0)
    assert {c.chip: c.rows for c in plain.chips}["Poseidon"] == 64 * 64 + 1 + 64 * (512 + 2) + 1
    report = build_report(d_in=64, d_out=64, rank=4, commitments=True)
    assert report.strategies["lowrank-table+plain"].rows == plain.rows_used
    assert report.strategies["lowrank-table+packed"].rows == packed.rows_used
