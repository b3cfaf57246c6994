"""int8 weights: the statement, zkref's two-digit table layout and the gate layout, tampering, quantisation error."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zkref.chips.mul_table import low_nibble_table_columns
from zkref.lora.circuit import LoRACircuit, LoRALayout
from zkref.lora.quantisation import QuantizedLoRA, lora_delta_float
from zkref.lora.statement import LoRAStatement, LoRAWitness, evaluate
from zkref.plonkish.accounting import account, cost_of_layout
from zkref.plonkish.failures import LookupFailure
from zkref.plonkish.mock_prover import MockProver


def circuit(seed, d_in, d_out, rank, tokens, lanes, products, adapter="fixed", shift=12):
    rng = np.random.default_rng(seed)
    w = LoRAWitness(A_q=rng.integers(-128, 128, (rank, d_in)), B_q=rng.integers(-128, 128, (d_out, rank)),
                    x_q=rng.integers(-128, 128, (tokens, d_in)))
    statement = LoRAStatement(shape=w.shape, shift=shift, weight_bits=8, adapter_binding=adapter)
    return LoRACircuit(statement=statement, witness=w, layout=LoRALayout(lanes=lanes, products=products))


def test_every_int8_weight_is_sixteen_high_digits_plus_a_low_digit():
    w = np.arange(-128, 128)
    hi, lo = w >> 4, w & 15
    assert hi.min() == -8 and hi.max() == 7 and lo.min() == 0 and lo.max() == 15
    assert np.array_equal(16 * hi + lo, w)
    l, a, p = low_nibble_table_columns()
    assert len(l) == 4096 and np.array_equal(p, l * a)


@settings(max_examples=25)
@given(st.integers(0, 2**31), st.integers(1, 20), st.integers(1, 12), st.integers(1, 4), st.integers(1, 2),
       st.integers(1, 8), st.sampled_from(["table", "gate"]), st.integers(0, 20))
def test_int8_statements_prove_and_equal_the_semantics(seed, d_in, d_out, rank, tokens, lanes, products, shift):
    c = circuit(seed, d_in, d_out, rank, tokens, lanes, products, shift=shift)
    prover = MockProver(c, c.public_inputs())
    assert prover.verify() == []
    trace = evaluate(c.statement, c.witness)
    y = [[sum(int(b) * int(v) for b, v in zip(row, zq)) for row in c.witness.B_q] for zq in trace.z_q]
    assert trace.y_q.tolist() == y
    assert cost_of_layout(prover.layout, "c").to_dict() == account(
        LoRACircuit(statement=c.statement, layout=c.layout), "c").to_dict()


def test_a_tampered_low_digit_product_is_named():
    c = circuit(1, 10, 6, 2, 1, 4, "table")
    prover = MockProver(c, c.public_inputs())
    prover.set_cell("mac.pl2", 0, prover.cell("mac.pl2", 0) + 1)
    names = {f.lookup for f in prover.verify() if isinstance(f, LookupFailure)}
    assert "mac lane 2: wl·a = pl" in names


def test_a_private_int8_adapter_needs_products_by_gate():
    with pytest.raises(ValueError, match="int8 weights by table lookups"):
        circuit(0, 4, 4, 2, 1, 4, "table", adapter="unbound")
    c = circuit(0, 4, 4, 2, 1, 4, "gate", adapter="hashed")
    assert MockProver(c, c.public_inputs()).verify() == []


def test_int8_weights_cut_the_quantisation_error():
    rng = np.random.default_rng(2)
    A, B, x = rng.normal(0, 0.3, (8, 64)), rng.normal(0, 0.3, (48, 8)), rng.normal(0, 1, (3, 64))
    errors = {}
    for bits in (4, 8):
        q = QuantizedLoRA.from_float(A, B, scaling=2.0, x_calibration=x, weight_bits=bits)
        assert q.statement(3).weight_bits == bits
        w = q.witness(q.quantize_x(x))
        ref = lora_delta_float(x, A, B, 2.0)
        errors[bits] = np.abs(q.dequantize(evaluate(q.statement(3), w).y_q) - ref).max() / np.abs(ref).max()
        assert q.check(x, evaluate(q.statement(3), w).y_q).within_bound
    assert errors[8] < errors[4] / 4, errors


@pytest.mark.parametrize("bits", [12, 16])
def test_wider_weights_are_nibble_digits_and_a_tampered_middle_product_is_named(bits):
    """int12/int16 weights: a signed top nibble over unsigned ones, each looked up; a wrong middle product fails."""
    w = np.arange(-(1 << (bits - 1)), 1 << (bits - 1), 97)
    n = bits // 4
    digits = [(w >> (4 * k)) & 15 for k in range(n - 1)] + [w >> (4 * (n - 1))]
    assert digits[-1].min() == -8 and digits[-1].max() == 7
    assert np.array_equal(sum(d * 16 ** k for k, d in enumerate(digits)), w)
    rng = np.random.default_rng(bits)
    wit = LoRAWitness(A_q=rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (2, 10)),
                      B_q=rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (6, 2)), x_q=rng.integers(-128, 128, (1, 10)))
    statement = LoRAStatement(shape=wit.shape, shift=14, weight_bits=bits, z_bits=16)
    c = LoRACircuit(statement=statement, witness=wit, layout=LoRALayout(lanes=4))
    prover = MockProver(c, c.public_inputs())
    assert prover.verify() == []
    prover.set_cell("mac.pm11", 0, prover.cell("mac.pm11", 0) + 1)
    names = {f.lookup for f in prover.verify() if isinstance(f, LookupFailure)}
    assert "mac lane 1: wm1·a = pm1" in names


def test_a_wide_activation_times_a_wide_weight_sums_every_digit_pair():
    """int12 weights × a 16-bit z_q: 3 nibbles × 2 bytes = 6 lookups per product, all in 4096-row tables."""
    rng = np.random.default_rng(9)
    wit = LoRAWitness(A_q=rng.integers(-2048, 2048, (2, 8)), B_q=rng.integers(-2048, 2048, (4, 2)),
                      x_q=rng.integers(-128, 128, (1, 8)))
    statement = LoRAStatement(shape=wit.shape, shift=8, weight_bits=12, z_bits=16)
    c = LoRACircuit(statement=statement, witness=wit, layout=LoRALayout(lanes=4))
    prover = MockProver(c, c.public_inputs())
    assert prover.verify() == []
    lookups = {name for name in (lk.name for lk in prover.cs.lookups) if name.startswith("macz lane 0:")}
    assert lookups == {"macz lane 0: w·ah = p", "macz lane 0: wl·ah = pl", "macz lane 0: wm1·ah = pm1",
                       "macz lane 0: w·al = pu", "macz lane 0: wl·al = plu", "macz lane 0: wm1·al = pm1u"}
    assert all(len(t.columns) == 3 for t in prover.cs.tables if t.name.startswith("mul"))
    assert max(prover.layout.tables[t][1][0].size for t in prover.layout.tables if t.startswith("mul")) == 4096
