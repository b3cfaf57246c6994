"""Configuration mistakes are CircuitErrors raised at once, not failures found later."""
import pytest

from zkref.plonkish.constraint_system import CircuitError, ConstraintSystem
from zkref.plonkish.layout import synthesize


def test_duplicate_names_and_arity_errors():
    cs = ConstraintSystem()
    a = cs.advice_column("a")
    with pytest.raises(CircuitError):
        cs.advice_column("a")
    t = cs.lookup_table("t", ["x", "y"])
    with pytest.raises(CircuitError, match="2-column table"):
        cs.lookup("bad arity", [a.cur()], t)
    with pytest.raises(CircuitError):
        cs.create_gate("empty", [])
    with pytest.raises(CircuitError):
        cs.enable_constant(a)
    other = ConstraintSystem().advice_column("b")
    with pytest.raises(CircuitError, match="another constraint system"):
        cs.create_gate("foreign", [("x", other.cur())])


def test_degrees_follow_halo2():
    cs = ConstraintSystem()
    a, b = cs.advice_column("a"), cs.advice_column("b")
    q = cs.selector("q")
    cs.create_gate("cubic", [("c", q.expr() * (a.cur() * b.cur() - a.next()))])
    assert cs.degree() == 3
    t = cs.lookup_table("t", ["x"])
    cs.lookup("l", [q.expr() * a.cur()], t)
    assert cs.lookups[0].degree() == 5  # 2 + input degree 2 + table degree 1
    assert cs.degree() == 5
    assert cs.advice_queries()[a] == {0, 1}
    assert cs.blinding_factors() == 5 and cs.blinding_rows() == 6


class _CopyWithoutEquality:
    def configure(self, cs):
        return cs.advice_column("a"), cs.advice_column("b")

    def synthesize(self, config, layouter):
        a, b = config

        def assign(region):
            x = region.assign_advice(a, 0, [1])
            y = region.assign_advice(b, 0, [1])
            region.constrain_equal(x, y)

        layouter.assign_region("r", assign)


def test_copy_on_column_without_equality_is_a_circuit_error():
    with pytest.raises(CircuitError, match="not equality-enabled"):
        synthesize(_CopyWithoutEquality(), with_values=True)
