"""MockProver: satisfied examples pass; every failure type is triggered by a deliberate mistake and named correctly."""
import pytest
from hypothesis import given, settings, strategies as st

from zkref.plonkish.constraint_system import ConstraintSystem
from zkref.examples.plonkish import FibonacciCircuit, LookupBenchCircuit, RangeSumCircuit, SquaresCircuit
from zkref.plonkish.failures import (CellNotAssigned, ConstraintNotSatisfied, CopyConstraintFailure, InstanceMismatch,
                            LookupFailure, NotEnoughRows)
from zkref.primitives.field import P
from zkref.plonkish.mock_prover import MockProver, VerificationError


def prove(circuit, instances=None, k=None):
    return MockProver(circuit, circuit.public_inputs() if instances is None else instances, k=k)


@pytest.mark.parametrize("circuit", [FibonacciCircuit(20), RangeSumCircuit(), SquaresCircuit(),
                                     LookupBenchCircuit(rows=100)])
def test_examples_are_satisfied(circuit):
    instances = circuit.public_inputs() if hasattr(circuit, "public_inputs") else []
    prover = MockProver(circuit, instances)
    assert prover.verify() == []
    prover.assert_satisfied()


def test_constraint_failure_names_gate_constraint_region_row_and_values():
    prover = prove(FibonacciCircuit(10))
    prover.set_cell("f", 5, prover.cell("f", 5) + 1)
    failures = prover.verify()
    assert failures and all(isinstance(f, ConstraintNotSatisfied) for f in failures)
    assert {f.row for f in failures} == {4, 5, 6}  # rows whose prev/cur/next touches row 5
    f = failures[0]
    assert (f.gate, f.constraint, f.region, f.offset) == ("fibonacci", "f[next] = f + f[prev]", "fibonacci", 4)
    assert dict(f.cell_values)["f[next]"] == 9 and dict(f.cell_values)["q_fib"] == 1
    with pytest.raises(VerificationError) as exc:
        prover.assert_satisfied()
    text = str(exc.value)
    assert "gate 'fibonacci'" in text and "row 4" in text and "f[prev] = 3" in text


def test_lookup_failure_names_lookup_table_row_and_inputs():
    prover = prove(RangeSumCircuit(values=(3, 1, 4), bits=4))
    prover.set_cell("value", 1, 16)  # out of [0, 16)
    kinds = {type(f) for f in prover.verify()}
    lookups = [f for f in prover.verify() if isinstance(f, LookupFailure)]
    assert lookups == [LookupFailure("value in range", "range", "running sum", 1, 1, (16,))]
    assert ConstraintNotSatisfied in kinds  # the running sum notices too


def test_out_of_range_witness_is_caught_by_the_lookup():
    circuit = RangeSumCircuit(values=(3, 99, 4), bits=4)
    failures = prove(circuit).verify()
    assert [type(f) for f in failures] == [LookupFailure]
    assert failures[0].inputs == (99,)


def test_copy_failure_names_both_cells():
    prover = prove(RangeSumCircuit(values=(1, 2)))
    prover.set_cell("acc", 0, 5)  # acc[0] is copied to the constant 0
    copies = [f for f in prover.verify() if isinstance(f, CopyConstraintFailure)]
    assert len(copies) == 1
    c = copies[0]
    assert (c.left.column, c.left.row, c.left.region, c.left.offset, c.left_value) == ("acc", 0, "running sum", 0, 5)
    assert (c.right.column, c.right_value) == ("constants", 0)


def test_instance_mismatch_names_public_input_and_cell():
    circuit = FibonacciCircuit(10)
    failures = prove(circuit, [[1, 1, 56]]).verify()
    assert failures == [InstanceMismatch("public", 2, 56, failures[0].cell, 55)]
    assert (failures[0].cell.column, failures[0].cell.row, failures[0].cell.region) == ("f", 9, "fibonacci")


class ForgetfulCircuit:
    """A gate on rows 0..3 querying b, but b is only assigned on rows 0..2."""

    def configure(self, cs: ConstraintSystem):
        a, b = cs.advice_column("a"), cs.advice_column("b")
        q = cs.selector("q")
        cs.create_gate("double", [("b = 2a", q.expr() * (b.cur() - 2 * a.cur()))])
        return a, b, q

    def synthesize(self, config, layouter):
        a, b, q = config

        def assign(region):
            region.assign_advice(a, 0, [0, 0, 0, 0])
            region.assign_advice(b, 0, [0, 0, 0])
            region.enable_selector(q, 0, count=4)

        layouter.assign_region("doubling", assign)

    def public_inputs(self):
        return []


def test_cell_not_assigned_is_named():
    failures = prove(ForgetfulCircuit()).verify()
    assert failures == [CellNotAssigned("double", "doubling", 3, 3, "b", 3)]


def test_not_enough_rows_for_k():
    failures = prove(RangeSumCircuit(), k=4).verify()
    assert isinstance(failures[0], NotEnoughRows)
    assert failures[0].needed == 16 and failures[0].usable == 16 - 6 and failures[0].k == 4


def test_instance_count_must_match_columns():
    with pytest.raises(ValueError, match="instance column"):
        MockProver(FibonacciCircuit(5), [])


def test_big_field_values_are_exact():
    a, b = P - 1, P - 2
    circuit = FibonacciCircuit(30, a, b)
    prover = prove(circuit)
    assert prover.verify() == []
    prover.set_cell("f", 7, prover.cell("f", 7) + 1)
    assert prover.verify()


# ---------------------------------------------------------------------------------------------------------- hypothesis
@settings(max_examples=40)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=30))
def test_random_satisfying_witnesses_pass(values):
    assert prove(RangeSumCircuit(values=tuple(values), bits=4)).verify() == []


@settings(max_examples=40)
@given(st.integers(0, P - 1), st.integers(0, P - 1), st.integers(3, 25))
def test_random_fibonacci_witnesses_pass(a, b, n):
    assert prove(FibonacciCircuit(n, a, b)).verify() == []


@settings(max_examples=60)
@given(st.data())
def test_random_single_cell_tampering_fails(data):
    circuit = data.draw(st.sampled_from([FibonacciCircuit(12, 2, 3), RangeSumCircuit(values=(1, 5, 2, 7)),
                                         SquaresCircuit(xs=(3, 4, 5))]))
    prover = prove(circuit)
    cells = [(c, int(r)) for c, rows in prover.assigned_advice_cells() for r in rows]
    col, row = data.draw(st.sampled_from(cells))
    delta = data.draw(st.one_of(st.integers(1, 1000), st.integers(1, P - 1)))
    prover.set_cell(col, row, prover.cell(col, row) + delta)
    assert prover.verify(), f"tampering {col.name}@{row} by {delta} went unnoticed"


def test_lookup_bench_tamper_is_caught_by_lookup():
    prover = MockProver(LookupBenchCircuit(rows=64), [])
    prover.set_cell("a5", 10, 256)
    failures = prover.verify()
    assert [(type(f), f.lookup, f.row) for f in failures] == [(LookupFailure, "a5 is a byte", 10)]


class ConstantsCircuit:
    """Cells tied to constants: each distinct constant takes one row of the constants column."""

    def __init__(self, values=(0, 0, 7, 0, 7), constants=(0, 0, 7, 0, 7)):
        self.values, self.constants = values, constants

    def configure(self, cs: ConstraintSystem):
        a = cs.advice_column("a", equality=True)
        c = cs.fixed_column("c")
        cs.enable_constant(c)
        return a

    def synthesize(self, a, layouter):
        def assign(region):
            cells = region.assign_advice(a, 0, list(self.values))
            region.constrain_constant(cells, list(self.constants))

        layouter.assign_region("constants demo", assign)

    def public_inputs(self):
        return []


def test_constants_are_deduplicated_and_checked():
    prover = prove(ConstantsCircuit())
    assert prover.verify() == []
    region = [r for r in prover.layout.regions if r.name == "constants"][0]
    assert region.height == 2 and prover.layout.copy_count() == 5
    failures = prove(ConstantsCircuit(values=(0, 1, 7, 0, 7))).verify()
    assert [(type(f), f.left.row, f.right.column) for f in failures] == [(CopyConstraintFailure, 1, "c")]


def test_gating_selectors_are_exact():
    cs = ConstraintSystem()
    a, b = cs.advice_column("a"), cs.advice_column("b")
    q1, q2 = cs.selector("q1"), cs.selector("q2")
    assert (q1.expr() * (a.cur() - b.cur())).gating_selectors() == {q1}
    assert (q1.expr() * a.cur() + b.cur()).gating_selectors() == set()
    assert (q1.expr() * (q2.expr() * a.cur())).gating_selectors() == {q1, q2}
    assert (q1.expr() * a.cur() - 3 * (q1.expr() * q2.expr() * b.cur())).gating_selectors() == {q1}


class NoZeroRowTable:
    """A lookup whose table lacks the all-zero tuple: rows with the selector off must fail (halo2 semantics)."""

    def configure(self, cs: ConstraintSystem):
        a = cs.advice_column("a")
        q = cs.selector("q")
        t = cs.lookup_table("odd", ["v"])
        cs.lookup("a is odd", [q.expr() * a.cur()], t)
        return a, q, t

    def synthesize(self, config, layouter):
        a, q, t = config
        layouter.assign_table(t, [[1, 3, 5]])

        def assign(region):
            region.assign_advice(a, 0, [1, 3])
            region.enable_selector(q, 0, count=2)

        layouter.assign_region("odds", assign)

    def public_inputs(self):
        return []


def test_lookup_rows_with_selector_off_are_checked_when_the_table_has_no_zero_row():
    failures = prove(NoZeroRowTable()).verify()
    assert failures and all(isinstance(f, LookupFailure) and f.inputs == (0,) and f.row >= 2 for f in failures)
