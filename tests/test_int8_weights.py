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
