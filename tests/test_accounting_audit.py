"""Cost accounting (analytic and from a witness) and the under-constrained audit."""
import json

import pytest

from zkref.plonkish.accounting import account, cost_of_layout
from zkref.plonkish.audit import audit
from zkref.examples.plonkish import FibonacciCircuit, LookupBenchCircuit, RangeSumCircuit, SquaresCircuit
from zkref.plonkish.mock_prover import MockProver, VerificationError


def test_analytic_layout_matches_the_witness_layout():
    circuit = RangeSumCircuit(values=tuple(range(12)))
    analytic = account(circuit)
    witnessed = cost_of_layout(MockProver(circuit, circuit.public_inputs()).layout, "RangeSumCircuit")
    assert analytic.to_dict() == witnessed.to_dict()


def test_accounting_figures_for_the_range_sum():
    cost = account(RangeSumCircuit(values=(1, 2, 3), bits=4))
    assert cost.rows_used == 16  # the 16-row table dominates the 4-row region
    assert cost.table_rows == 16 and cost.tables == {"range": 16}
    assert (cost.advice_columns, cost.fixed_columns, cost.selector_columns, cost.instance_columns) == (2, 2, 2, 1)
    assert cost.lookup_arguments == 1 and cost.lookup_queries == 3
    assert cost.copy_constraints == 2  # acc[0] to the constant, acc[3] to the public total
    assert cost.max_gate_degree == 2 and cost.degree == 5
    assert cost.k == 5 and cost.total_rows == 22
    assert json.loads(cost.to_json())["k"] == 5


def test_k_grows_with_rows_and_accounts_big_circuits_analytically():
    cost = account(LookupBenchCircuit(rows=(1 << 20) - 100))
    assert cost.k == 20 and cost.lookup_queries == 8 * ((1 << 20) - 100)
    assert cost.max_gate_degree == 3
    assert account(LookupBenchCircuit(rows=(1 << 20))).k == 21


def test_proof_size_formula():
    cs_cost = account(FibonacciCircuit(10))
    p = cs_cost.proof
    # 1 advice column; degree 3 → permutation chunks of degree-2 = 1 column, so 2 chunks for (f, public);
    # vanishing: random poly + degree-1 = 2 quotient pieces
    assert (p.advice_commitments, p.lookup_commitments, p.permutation_commitments, p.vanishing_commitments,
            p.multiopen_commitments) == (1, 0, 2, 3, 2)
    # f at prev/cur/next; one selector; 2 sigmas + 2 chunks x 2 + 1 last-row link; random poly
    assert (p.advice_evals, p.fixed_evals, p.permutation_evals, p.lookup_evals, p.vanishing_evals) == (3, 1, 7, 0, 1)
    assert p.bytes == 32 * (1 + 0 + 2 + 3 + 2) + 32 * (3 + 1 + 7 + 0 + 1)


def test_audit_flags_the_planted_cell_and_nothing_in_the_correct_chip():
    broken = SquaresCircuit(xs=(2, 3, 5, 7), broken=True)
    report = audit(broken, broken.public_inputs())
    assert [(c.column, c.row, c.region, c.offset) for c in report.unconstrained] == [("y", 3, "squares", 3)]
    assert not report.ok and "y@row 3" in report.render()
    for circuit in (SquaresCircuit(), FibonacciCircuit(12), RangeSumCircuit()):
        assert audit(circuit, circuit.public_inputs()).unconstrained == []


def test_audit_sampling_is_seeded_and_reported():
    circuit = FibonacciCircuit(40)
    report = audit(circuit, circuit.public_inputs(), sample=10, seed=3)
    assert report.sampled and report.cells_checked == 10 and report.cells_total == 40 and report.ok


def test_audit_refuses_an_unsatisfied_circuit():
    with pytest.raises(VerificationError):
        audit(FibonacciCircuit(10), [[1, 1, 0]])


@pytest.mark.parametrize("bad", [0, -3, True])
def test_audit_rejects_a_meaningless_sample(bad):
    with pytest.raises(ValueError, match="sample"):
        audit(FibonacciCircuit(10), FibonacciCircuit(10).public_inputs(), sample=bad)
