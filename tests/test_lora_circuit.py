"""LoRACircuit and DenseCircuit: exact integer outputs, mock proofs, audit, tampering, accounting, validation."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zkref.plonkish.accounting import account, cost_of_layout
from zkref.plonkish.audit import audit
from zkref.plonkish.failures import ConstraintNotSatisfied, CopyConstraintFailure, InstanceMismatch, LookupFailure
from zkref.lora.circuit import DenseCircuit, LoRACircuit, LoRALayout
from zkref.lora.cost import formula_cost
from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness, evaluate
from zkref.plonkish.mock_prover import MockProver
from zkref.primitives.field import P, encode_signed
from zkref.primitives.quant import choose_shift


def lora_circuit(A, B, x, shift, lanes=8, strategy="table", adapter="fixed"):
    w = LoRAWitness(A_q=A, B_q=B, x_q=x)
    st_ = LoRAStatement(shape=w.shape, shift=shift, adapter_binding=adapter)
    return LoRACircuit(statement=st_, witness=w, layout=LoRALayout(lanes=lanes, products=strategy))


def random_lora(rng, d_in, d_out, rank, tokens, lanes, strategy, shift=None, adapter="fixed"):
    A = rng.integers(-8, 8, (rank, d_in))
    B = rng.integers(-8, 8, (d_out, rank))
    x = rng.integers(-128, 128, (tokens, d_in))
    if shift is None:
        shift = choose_shift(x @ A.T)
    return lora_circuit(A, B, x, shift, lanes, strategy, adapter)


def y_of(circuit):
    return evaluate(circuit.statement, circuit.witness).y_q


def dense(d_in, d_out, tokens, lanes, W, x, strategy, fixed_weights=True):
    return DenseCircuit(d_in=d_in, d_out=d_out, tokens=tokens, layout=LoRALayout(lanes=lanes, products=strategy),
                        W_q=W, x_q=x, fixed_weights=fixed_weights)


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
    adapter = data.draw(st.sampled_from(["fixed", "unbound"]), label="adapter")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    circuit = random_lora(rng, d_in, d_out, rank, tokens, lanes, strategy, shift, adapter)
    w = circuit.witness
    expected = plain_reference(w.A_q, w.B_q, w.x_q, circuit.statement.shift)
    assert y_of(circuit).tolist() == expected
    public = circuit.public_inputs()
    assert public == [encode_signed(w.x_q.reshape(-1).tolist() + [v for row in expected for v in row])]
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
    circuit = dense(d_in, d_out, tokens, lanes, W, x, strategy, fixed_weights=bool(seed % 2))
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
        c = lora_circuit(A, B, x, shift)
        assert MockProver(c, c.public_inputs()).verify() == []
    c = lora_circuit(A, B, x, 0)
    assert evaluate(c.statement, c.witness).z_q.tolist() == [[127, 127], [-128, -128]]


def test_calibrated_shift_avoids_clamping():
    z = np.array([[1000, -5000, 17]])
    s = choose_shift(z)
    assert s == 6 and np.abs(np.round(z / 2**s)).max() <= 127 and np.abs(np.round(z / 2 ** (s - 1))).max() > 127
    assert choose_shift(np.array([[127, -127]])) == 0


def test_dequantised_output_is_within_the_documented_error_bound_of_torch():
    torch = pytest.importorskip("torch")
    from zkref.lora.quantisation import QuantizedLoRA

    rng = np.random.default_rng(3)
    for d_in, d_out, rank, tokens in ((32, 24, 4, 3), (64, 16, 8, 1), (17, 5, 2, 2)):
        A = rng.standard_normal((rank, d_in)) * 0.05
        B = rng.standard_normal((d_out, rank)) * 0.05
        x = rng.standard_normal((tokens, d_in))
        alpha = 2.0 * rank
        q = QuantizedLoRA.from_float(A, B, scaling=alpha / rank, x_calibration=x)
        circuit = LoRACircuit(statement=q.statement(tokens), witness=q.witness(q.quantize_x(x)))
        assert MockProver(circuit, circuit.public_inputs()).verify() == []
        y = q.dequantize(y_of(circuit))
        with torch.no_grad():
            ref = (alpha / rank) * (torch.tensor(x) @ torch.tensor(A).T @ torch.tensor(B).T)
        err = np.abs(y - ref.numpy())
        bound = q.error_bound(x)
        assert (err <= bound).all(), (err.max(), bound.max())
        assert q.check(x, y_of(circuit)).within_bound
        # the dequantisation scale is right: int4 per-tensor rounding leaves ~20% relative RMS error, not more
        r = ref.numpy()
        assert np.sqrt(((y - r) ** 2).mean()) < 0.4 * np.sqrt((r ** 2).mean())


# ---------------------------------------------------------------------------------------------------- audit
@pytest.mark.parametrize("adapter", ["fixed", "unbound"])
@pytest.mark.parametrize("strategy", ["table", "gate"])
@pytest.mark.parametrize("d_in,d_out,rank,tokens,lanes", [(5, 3, 3, 2, 4), (8, 2, 2, 1, 8), (3, 4, 2, 2, 1)])
def test_lora_and_dense_circuits_pass_the_audit(strategy, d_in, d_out, rank, tokens, lanes, adapter):
    rng = np.random.default_rng(d_in * 7 + lanes)
    circuit = random_lora(rng, d_in, d_out, rank, tokens, lanes, strategy, shift=3, adapter=adapter)
    report = audit(circuit, circuit.public_inputs())
    assert report.ok, report.render()
    baseline = dense(d_in, d_out, tokens, lanes, rng.integers(-8, 8, (d_out, d_in)), circuit.witness.x_q, strategy,
                     fixed_weights=adapter == "fixed")
    report = audit(baseline, baseline.public_inputs())
    assert report.ok, report.render()


# ---------------------------------------------------------------------------------------------------- tampering
def _prover(strategy="table", adapter="fixed"):
    rng = np.random.default_rng(11)
    circuit = random_lora(rng, 10, 6, 3, 2, 4, strategy, shift=4, adapter=adapter)
    return circuit, MockProver(circuit, circuit.public_inputs())


def _stage2_row(circuit):
    # stage 1 occupies T·r·ceil(d_in/L) rows of the MAC columns, stage 2 follows
    s = circuit.shape
    return s.tokens * s.rank * -(-s.d_in // circuit.layout.lanes)


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
    n_x = circuit.shape.tokens * circuit.shape.d_in
    public = circuit.public_inputs()[0]
    tampered = list(public)
    tampered[n_x + 4] = (tampered[n_x + 4] + 1) % P
    failures = MockProver(circuit, [tampered]).verify()
    assert [(type(f), f.instance_column, f.instance_row) for f in failures] == [(InstanceMismatch, "public", n_x + 4)]
    # a different public x (the activation cells follow it) no longer gives the public y
    w = circuit.witness
    x = w.x_q.copy()
    x[0] = -x[0] - 1
    other = lora_circuit(w.A_q, w.B_q, x, 4, lanes=4)
    assert y_of(other).tolist() != y_of(circuit).tolist()
    failures = MockProver(circuit, [encode_signed(x.reshape(-1).tolist()) + public[n_x:]]).verify()
    assert failures and {type(f) for f in failures} == {InstanceMismatch}
    assert min(f.instance_row for f in failures) >= n_x  # the y rows no longer match


def test_weights_are_tied_across_tokens():
    circuit, prover = _prover(adapter="unbound")
    rows_per_token = _stage2_row(circuit) // circuit.shape.tokens
    prover.set_cell("mac.w2", rows_per_token, prover.cell("mac.w2", rows_per_token) + 1)
    assert any(isinstance(f, CopyConstraintFailure) and f.left.column == "mac.w2" for f in prover.verify())


def test_a_fixed_adapter_is_in_fixed_columns_and_a_changed_weight_breaks_the_products():
    circuit, prover = _prover(adapter="fixed")
    assert {c.name for c in prover.cs.fixed} >= {f"mac.w{i}" for i in range(4)}
    assert not any(c.name.startswith("mac.w") for c in prover.cs.advice)
    # the verifier's fixed column holds another weight: the lane product no longer matches it
    prover.set_cell("mac.w1", 0, prover.cell("mac.w1", 0) + 1)
    assert "mac lane 1: w·a = p" in names(prover.verify())


# ---------------------------------------------------------------------------------------------------- validation
def _statement(**kw):
    shape = {k: kw.pop(k) for k in ("d_in", "d_out", "rank", "tokens") if k in kw}
    return LoRAStatement(shape=LoRAShape(**{"d_in": 4, "d_out": 4, "rank": 2} | shape), **{"shift": 0} | kw)


def _witness(**kw):
    base = dict(A_q=np.zeros((2, 4), dtype=int), B_q=np.zeros((4, 2), dtype=int), x_q=np.zeros((1, 4), dtype=int))
    return LoRAWitness(**base | kw)


@pytest.mark.parametrize("build,match", [
    (lambda: _statement(d_in=0), "d_in"), (lambda: LoRALayout(lanes=0), "lanes"), (lambda: LoRALayout(lanes=17), "lanes"),
    (lambda: LoRALayout(products="fft"), "products"), (lambda: _statement(shift=-1), "shift"),
    (lambda: _statement(shift=41), "shift"), (lambda: _statement(x_binding="sha256"), "x_binding"),
    (lambda: _witness(A_q=np.zeros((2, 5))), "x_q must be"),
    (lambda: LoRACircuit(statement=_statement(), witness=_witness(A_q=np.full((2, 4), 8))), r"\[-8, 7\]"),
    (lambda: _witness(A_q=np.full((2, 4), 32768)), r"\[-32768, 32767\]"),
    (lambda: _witness(x_q=np.full((1, 4), 32768)), r"\[-32768, 32767\]"),
    (lambda: LoRACircuit(statement=_statement(), witness=_witness(x_q=np.full((1, 4), 128))), r"\[-128, 127\]"),
    (lambda: _witness(x_q=np.full((1, 4), np.nan)), "NaN"),
    (lambda: _witness(x_q=np.full((1, 4), 0.5)), "integers"),
    (lambda: _witness(B_q=[[1, 2], [3]]), "rectangular"),
    (lambda: _witness(B_q=np.array([["a"] * 2] * 4)), "integers"),
    (lambda: LoRACircuit(statement=_statement(d_in=5), witness=_witness()), "does not match"),
    (lambda: LoRACircuit(statement=_statement(x_binding="polycommit")), "polycommit"),
])
def test_bad_inputs_raise_clear_value_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_constructors_are_keyword_only():
    with pytest.raises(TypeError):
        LoRAShape(12, 10, 3, 2)  # d_in and d_out could be swapped silently
    with pytest.raises(TypeError):
        LoRACircuit(_statement())
    with pytest.raises(TypeError):
        DenseCircuit(8, 8)


def test_analytic_only_circuits_refuse_public_inputs():
    with pytest.raises(ValueError, match="analytic"):
        LoRACircuit(statement=_statement()).public_inputs()
    with pytest.raises(ValueError, match="analytic"):
        DenseCircuit(d_in=8, d_out=8).public_inputs()
    assert account(LoRACircuit(statement=_statement(d_in=4096, d_out=4096, rank=16))).k == 15
