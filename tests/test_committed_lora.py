"""The LoRA statement with x private and x, A_q, B_q bound by in-circuit Poseidon commitments (plain and packed)."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zkref.plonkish.accounting import account, cost_of_layout
from zkref.plonkish.audit import audit
from zkref.cli.main import main
from zkref.lora.commitments import (activations_commitment, activations_commitment_packed, adapter_commitment,
                               adapter_commitment_packed)
from zkref.lora.committed import CommittedLoRACircuit
from zkref.plonkish.failures import ConstraintNotSatisfied, CopyConstraintFailure, InstanceMismatch, LookupFailure
from zkref.lora.circuit import LoRACircuit
from zkref.plonkish.mock_prover import MockProver
from zkref.lora.report import build_report


def lora(d_in, d_out, rank, tokens, lanes=4, strategy="table", seed=0):
    rng = np.random.default_rng(seed)
    return LoRACircuit(d_in, d_out, rank, tokens, lanes, strategy, None, rng.integers(-8, 8, (rank, d_in)),
                       rng.integers(-8, 8, (d_out, rank)), rng.integers(-128, 128, (tokens, d_in)))


def prover_for(circuit):
    return MockProver(circuit, circuit.public_inputs())


@settings(max_examples=12)
@given(st.integers(1, 16), st.integers(1, 12), st.integers(1, 4), st.integers(1, 2), st.integers(1, 8),
       st.sampled_from(["table", "gate"]), st.sampled_from(["plain", "packed"]), st.integers(0, 1000))
def test_committed_circuit_proves_and_its_digests_equal_the_reference(d_in, d_out, rank, tokens, lanes, strategy,
                                                                         commit, seed):
    inner = lora(d_in, d_out, rank, tokens, lanes, strategy, seed)
    circuit = CommittedLoRACircuit(inner, commit)
    prover = prover_for(circuit)
    assert prover.verify() == []
    if commit == "plain":
        expected = [activations_commitment(inner.x_q), adapter_commitment(inner.A_q, inner.B_q)]
    else:
        expected = [activations_commitment_packed(inner.x_q), adapter_commitment_packed(inner.A_q, inner.B_q)]
    assert circuit.public_inputs()[0] == expected
    assert circuit.public_inputs()[1] == inner.y_q.reshape(-1).tolist()


@pytest.mark.parametrize("commit", ["plain", "packed"])
def test_tampering_a_weight_the_mac_uses_is_caught(commit):
    prover = prover_for(CommittedLoRACircuit(lora(6, 5, 2, 1, lanes=4), commit))
    row = next(r for r in prover.assigned_advice_cells() if r[0].name == "mac.w1")[1][0]
    prover.set_cell("mac.w1", int(row), (prover.cell("mac.w1", int(row)) + 1) % 8)
    failures = prover.verify()
    names = {getattr(f, "lookup", None) or getattr(f, "gate", None) for f in failures}
    assert any(isinstance(f, CopyConstraintFailure) for f in failures)  # the hash no longer sees the MAC's weight
    assert any(isinstance(f, (LookupFailure, ConstraintNotSatisfied)) for f in failures), names


@pytest.mark.parametrize("commit", ["plain", "packed"])
def test_tampering_the_public_adapter_digest_is_an_instance_mismatch(commit):
    circuit = CommittedLoRACircuit(lora(5, 4, 2, 1), commit)
    public = circuit.public_inputs()
    public[0][1] = (public[0][1] + 1)
    failures = MockProver(circuit, public).verify()
    assert [(type(f), f.instance_column, f.instance_row) for f in failures] == [(InstanceMismatch, "commitments", 1)]


def test_the_hashed_activations_are_the_ones_multiplied():
    prover = prover_for(CommittedLoRACircuit(lora(5, 4, 2, 1), "plain"))
    prover.set_cell("x", 2, prover.cell("x", 2) + 1)
    kinds = {type(f) for f in prover.verify()}
    assert CopyConstraintFailure in kinds  # both the MAC's and the sponge's copies of x[2] now disagree


@pytest.mark.parametrize("commit", ["plain", "packed"])
def test_audit_finds_no_under_constrained_cell(commit):
    circuit = CommittedLoRACircuit(lora(4, 3, 2, 1, lanes=2), commit)
    report = audit(circuit, circuit.public_inputs(), sample=400, seed=1)
    assert report.unconstrained == [], report.render()


@pytest.mark.parametrize("commit", ["plain", "packed"])
def test_analytic_accounting_equals_witness_accounting(commit):
    circuit = CommittedLoRACircuit(lora(9, 7, 3, 2), commit)
    analytic = account(CommittedLoRACircuit(LoRACircuit(9, 7, 3, 2, 4, "table", circuit.lora.shift), commit),
                       "c")
    assert cost_of_layout(prover_for(circuit).layout, "c").to_dict() == analytic.to_dict()


def test_packed_commitments_are_cheaper_and_reported():
    plain = account(CommittedLoRACircuit(LoRACircuit(64, 64, 4), "plain"))
    packed = account(CommittedLoRACircuit(LoRACircuit(64, 64, 4), "packed"))
    bare = account(LoRACircuit(64, 64, 4))
    assert packed.rows_used < plain.rows_used and bare.k <= packed.k <= plain.k
    # plain: 64 rows per absorbed element: 64 activations + 512 weights
    assert {c.chip: c.rows for c in plain.chips}["Poseidon"] == 64 * 64 + 1 + 64 * 512 + 1
    report = build_report(d_in=64, d_out=64, rank=4, commitments=True)
    assert report.strategies["lowrank-table+plain"].rows == plain.rows_used
    assert report.strategies["lowrank-table+packed"].rows == packed.rows_used


def test_cli_mock_and_report_with_commitments(capsys):
    assert main(["mock", "--d-in", "8", "--d-out", "6", "--rank", "2", "--commit", "packed", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["satisfied"] and doc["commit"] == "packed"
    assert main(["report", "--d-in", "32", "--d-out", "32", "--rank", "4", "--commitments", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {"lowrank-table+plain", "lowrank-table+packed"} <= set(doc["strategies"])


def test_bad_commit_mode():
    with pytest.raises(ValueError, match="commit"):
        CommittedLoRACircuit(lora(4, 4, 2, 1), "sha256")
