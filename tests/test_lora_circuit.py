"""LoRACircuit and DenseCircuit: exact integer outputs, mock proofs, audit, tampering, accounting, validation."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zkref.plonkish.accounting import account, cost_of_layout
from zkref.plonkish.audit import audit
from zkref.plonkish.failures import ConstraintNotSatisfied, CopyConstraintFailure, InstanceMismatch, LookupFailure
from zkref.lora.circuit import DenseCircuit, LoRACircuit, calibrate_shift, formula_cost
from zkref.plonkish.mock_prover import MockProver


def random_lora(rng, d_in, d_out, rank, tokens, lanes, strategy, shift=None):
    A = rng.integers(-8, 8, (rank, d_in))
    B = rng.integers(-8, 8, (d_out, rank))
    x = rng.integers(-128, 128, (tokens, d_in))
    return LoRACircuit(d_in, d_out, rank, tokens, lanes, strategy, shift, A, B, x)


def plain_reference(A, B, x, shift):
    """The statement with Python ints only (no numpy rounding helpers)."""
    def requant(v):
        if shift == 0:
            q = v
        else:
            q = (abs(v) + (1 << (shift - 1))) >> shift
            q = q if v >= 0 else -q
        return max(-128, min(127, q))

    z = [[sum(int(a) * int(xi) for a, xi in zip(row, tok)) for row in A] for tok in x]
    zq = [[requant(v) for v in zt] for zt in z]
    return [[sum(int(b) * v for b, v in zip(row, zt)) for row in B] for zt in zq]


def names(failures):
    out = set()
    for f in failures:
        out.add(f.gate if isinstance(f, ConstraintNotSatisfied) else f.lookup if isinstance(f, LookupFailure)
                else type(f).__name__)
    return out


# ---------------------------------------------------------------------------------------------------- correctness
@settings(max_examples=80)
@given(st.data())
def test_random_shapes_prove_and_match_the_integer_reference(data):
    d_in = data.draw(st.integers(1, 64), label="d_in")
    d_out = data.draw(st.integers(1, 64), label="d_out")
    rank = data.draw(st.integers(1, 8), label="rank")
    tokens = data.draw(st.integers(1, 4), label="tokens")
    lanes = data.draw(st.integers(1, 16), label="lanes")
    strategy = data.draw(st.sampled_from(["table", "gate"]), label="strategy")
    shift = data.draw(st.one_of(st.none(), st.integers(0, 14)), label="shift")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    circuit = random_lora(rng, d_in, d_out, rank, tokens, lanes, strategy, shift)
    expected = plain_reference(circuit.A_q, circuit.B_q, circuit.x_q, circuit.shift)
    assert circuit.y_q.tolist() == expected
    public = circuit.public_inputs()
    assert public[1] == [v for row in expected for v in row]
    prover = MockProver(circuit, public)
    assert prover.verify() == []
    witnessed = cost_of_layout(prover.layout, "LoRACircuit").to_dict()
    assert account(circuit).to_dict() == witnessed == formula_cost(circuit).to_dict()


@settings(max_examples=30)
@given(st.integers(1, 48), st.integers(1, 48), st.integers(1, 3), st.integers(1, 16), st.sampled_from(["table", "gate"]),
       st.integers(0, 2**32 - 1))
def test_dense_circuit_proves_the_exact_product(d_in, d_out, tokens, lanes, strategy, seed):
    rng = np.random.default_rng(seed)
    W = rng.integers(-8, 8, (d_out, d_in))
    x = rng.integers(-128, 128, (tokens, d_in))
    circuit = DenseCircuit(d_in, d_out, tokens, lanes, W, x, strategy)
    assert circuit.y_q.tolist() == [[sum(int(w) * int(v) for w, v in zip(row, tok)) for row in W] for tok in x]
    prover = MockProver(circuit, circuit.public_inputs())
    assert prover.verify() == []
    assert account(circuit).to_dict() == cost_of_layout(prover.layout, "DenseCircuit").to_dict() \
        == formula_cost(circuit).to_dict()


def test_extreme_values_saturate_and_prove():
    d = 16
    A = np.full((2, d), -8)
    B = np.array([[7, -8], [-8, 7], [0, 0]])
    x = np.array([[-128] * d, [127] * d])
    for shift in (0, 3, 20):
        c = LoRACircuit(d, 3, 2, 2, 8, "table", shift, A, B, x)
        assert MockProver(c, c.public_inputs()).verify() == []
    assert LoRACircuit(d, 3, 2, 2, 8, "table", 0, A, B, x).reference().z_q.tolist() == [[127, 127], [-128, -128]]


def test_calibrated_shift_avoids_clamping():
    z = np.array([[1000, -5000, 17]])
    s = calibrate_shift(z)
    assert s == 6 and np.abs(np.round(z / 2**s)).max() <= 127 and np.abs(np.round(z / 2 ** (s - 1))).max() > 127
    assert calibrate_shift(np.array([[127, -127]])) == 0


def test_dequantised_output_is_within_the_documented_error_bound_of_torch():
    torch = pytest.importorskip("torch")
    from zkref.primitives.quant import QuantizedLoRA

    rng = np.random.default_rng(3)
    for d_in, d_out, rank, tokens in ((32, 24, 4, 3), (64, 16, 8, 1), (17, 5, 2, 2)):
        A = rng.standard_normal((rank, d_in)) * 0.05
        B = rng.standard_normal((d_out, rank)) * 0.05
        x = rng.standard_normal((tokens, d_in))
        alpha = 2.0 * rank
        q = QuantizedLoRA.from_float(A, B, alpha, x)
        circuit = LoRACircuit(d_in, d_out, rank, tokens, 8, "table", q.shift, q.A_q, q.B_q, q.quantize_x(x))
        assert MockProver(circuit, circuit.public_inputs()).verify() == []
        y = q.dequantize(circuit.y_q)
        with torch.no_grad():
            ref = (alpha / rank) * (torch.tensor(x) @ torch.tensor(A).T @ torch.tensor(B).T)
        err = np.abs(y - ref.numpy())
        bound = q.error_bound(x)
        assert (err <= bound).all(), (err.max(), bound.max())
        assert q.check(x, circuit.y_q)["within_bound"]
        # the dequantisation scale is right: int4 per-tensor rounding leaves ~20% relative RMS error, not more
        r = ref.numpy()
        assert np.sqrt(((y - r) ** 2).mean()) < 0.4 * np.sqrt((r ** 2).mean())


# ---------------------------------------------------------------------------------------------------- audit
@pytest.mark.parametrize("strategy", ["table", "gate"])
@pytest.mark.parametrize("d_in,d_out,rank,tokens,lanes", [(5, 3, 3, 2, 4), (8, 2, 2, 1, 8), (3, 4, 2, 2, 1)])
def test_lora_and_dense_circuits_pass_the_audit(strategy, d_in, d_out, rank, tokens, lanes):
    rng = np.random.default_rng(d_in * 7 + lanes)
    circuit = random_lora(rng, d_in, d_out, rank, tokens, lanes, strategy, shift=3)
    report = audit(circuit, circuit.public_inputs())
    assert report.ok, report.render()
    dense = DenseCircuit(d_in, d_out, tokens, lanes, rng.integers(-8, 8, (d_out, d_in)), circuit.x_q, strategy)
    report = audit(dense, dense.public_inputs())
    assert report.ok, report.render()


# ---------------------------------------------------------------------------------------------------- tampering
def _prover(strategy="table"):
    rng = np.random.default_rng(11)
    circuit = random_lora(rng, 10, 6, 3, 2, 4, strategy, shift=4)
    return circuit, MockProver(circuit, circuit.public_inputs())


def _stage2_row(circuit):
    # stage 1 occupies T·r·ceil(d_in/L) rows of the MAC columns, stage 2 follows
    return circuit.tokens * circuit.rank * -(-circuit.d_in // circuit.lanes)


def test_tampered_lane_product_is_named_by_its_lookup():
    circuit, prover = _prover()
    prover.set_cell("mac.p1", 0, prover.cell("mac.p1", 0) + 3)
    failures = prover.verify()
    assert {"mac lane 1: w·a = p", "mac start"} <= names(failures)
    assert next(f for f in failures if isinstance(f, LookupFailure)).region == "z = A_q·x"


def test_tampered_stage2_product_is_named_by_its_lookup():
    circuit, prover = _prover()
    row = _stage2_row(circuit)
    prover.set_cell("mac.p0", row, prover.cell("mac.p0", row) - 1)
    failures = prover.verify()
    assert "mac lane 0: w·a = p" in names(failures)
    assert next(f for f in failures if isinstance(f, LookupFailure)).region == "y = B_q·z_q"


@pytest.mark.parametrize("strategy", ["table", "gate"])
def test_tampered_accumulator_is_named_by_the_gate(strategy):
    circuit, prover = _prover(strategy)
    prover.set_cell("mac.acc", 1, prover.cell("mac.acc", 1) + 1)
    assert "mac accumulate" in names(prover.verify())


def test_tampered_requant_remainder_is_named_by_the_bucket_lookup():
    circuit, prover = _prover()
    prover.set_cell("requant.rem", 0, prover.cell("requant.rem", 0) + 1)
    assert "requant bucket: lo(z_q) <= z <= hi(z_q)" in names(prover.verify())


def test_tampered_requant_output_breaks_the_bucket_and_the_copy_onward():
    circuit, prover = _prover()
    prover.set_cell("requant.zq", 0, prover.cell("requant.zq", 0) + 1)
    failures = prover.verify()
    assert "requant bucket: lo(z_q) <= z <= hi(z_q)" in names(failures)
    assert any(isinstance(f, CopyConstraintFailure) for f in failures)


def test_tampered_output_and_public_inputs_are_caught():
    circuit, prover = _prover()
    y = circuit.public_inputs()[1]
    y[4] += 1
    failures = MockProver(circuit, [circuit.public_inputs()[0], y]).verify()
    assert [type(f) for f in failures] == [InstanceMismatch] and failures[0].instance_column == "y"
    # a different public x (the activation cells follow it) no longer gives the public y
    x = circuit.x_q.copy()
    x[0] = -x[0] - 1
    other = LoRACircuit(10, 6, 3, 2, 4, "table", 4, circuit.A_q, circuit.B_q, x)
    assert other.y_q.tolist() != circuit.y_q.tolist()
    failures = MockProver(circuit, [x.reshape(-1).tolist(), circuit.public_inputs()[1]]).verify()
    assert failures and {type(f) for f in failures} == {InstanceMismatch}
    assert {f.instance_column for f in failures} == {"y"}


def test_weights_are_tied_across_tokens():
    circuit, prover = _prover()
    rows_per_token = circuit.rank * -(-circuit.d_in // circuit.lanes)
    prover.set_cell("mac.w2", rows_per_token, prover.cell("mac.w2", rows_per_token) + 1)
    assert any(isinstance(f, CopyConstraintFailure) and f.left.column == "mac.w2" for f in prover.verify())


# ---------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs,match", [
    (dict(d_in=0, d_out=4, rank=2), "d_in"), (dict(d_in=4, d_out=4, rank=2, lanes=0), "lanes"),
    (dict(d_in=4, d_out=4, rank=2, lanes=17), "lanes"), (dict(d_in=4, d_out=4, rank=2, strategy="fft"), "strategy"),
    (dict(d_in=4, d_out=4, rank=2, shift=-1), "shift"), (dict(d_in=4, d_out=4, rank=2, shift=41), "shift"),
    (dict(d_in=4, d_out=4, rank=2, A_q=np.zeros((2, 5))), "shape"),
    (dict(d_in=4, d_out=4, rank=2, A_q=np.full((2, 4), 8)), r"\[-8, 7\]"),
    (dict(d_in=4, d_out=4, rank=2, x_q=np.full((1, 4), 128)), r"\[-128, 127\]"),
    (dict(d_in=4, d_out=4, rank=2, x_q=np.full((1, 4), np.nan)), "NaN"),
    (dict(d_in=4, d_out=4, rank=2, x_q=np.full((1, 4), 0.5)), "integers"),
    (dict(d_in=4, d_out=4, rank=2, B_q=[[1, 2], [3]]), "rectangular"),
    (dict(d_in=4, d_out=4, rank=2, B_q=np.array([["a"] * 2] * 4)), "integers"),
])
def test_bad_inputs_raise_clear_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoRACircuit(**kwargs)


def test_analytic_only_circuits_refuse_public_inputs():
    with pytest.raises(ValueError, match="analytic"):
        LoRACircuit(8, 8, 2).public_inputs()
    with pytest.raises(ValueError, match="analytic"):
        DenseCircuit(8, 8).public_inputs()
    assert account(LoRACircuit(4096, 4096, 16)).k == 15
