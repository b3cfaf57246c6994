"""Quantisation semantics: rounding, integer requantisation, exact integer forward pass, and the error bound."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zkref.chips.requant import requant_reference
from zkref.lora.quantisation import QuantizedLoRA, lora_delta_float
from zkref.lora.statement import evaluate
from zkref.primitives.quant import (choose_shift, div_pow2_round_half_away, quantize_weights, quantize_int8, requantize,
                                    round_half_away, static_shift)


def forward(q, x_q):
    """The statement's trace for a quantised adapter (zkref.lora.statement.evaluate, the one semantics)."""
    w = q.witness(x_q)
    t = evaluate(q.statement(w.shape.tokens), w)
    return t.z, t.z_q, t.y_q


def test_rounding_ties_go_away_from_zero_like_ezkl():
    assert round_half_away(np.array([0.5, -0.5, 1.5, -1.5, 2.5, 0.49, -2.5])).tolist() == [1, -1, 2, -2, 3, 0, -3]
    z = np.array([1, -1, 3, -3, 5, 4, -4, 6, 2, -2])
    assert div_pow2_round_half_away(z, 1).tolist() == [1, -1, 2, -2, 3, 2, -2, 3, 1, -1]


@given(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30), st.integers(0, 20))
def test_integer_division_matches_the_float_definition(zs, shift):
    z = np.array(zs, dtype=np.int64)
    expected = [int(np.sign(v) * np.floor(abs(v) / 2**shift + 0.5)) for v in zs]  # exact in float64 here
    assert div_pow2_round_half_away(z, shift).tolist() == expected


@given(st.lists(st.integers(-(2**24), 2**24), min_size=1, max_size=30), st.integers(0, 20))
def test_requantize_clamps_and_agrees_with_the_chip_reference(zs, shift):
    z = np.array(zs, dtype=np.int64)
    r = requantize(z, shift)
    assert r.z_q.min() >= -128 and r.z_q.max() <= 127
    assert r.z_q.tolist() == requant_reference(z, shift).tolist()
    assert r.clamped == int(np.count_nonzero(np.abs(div_pow2_round_half_away(z, shift)) > r.z_q.__abs__()))


def test_shift_choice():
    z = np.array([-5000, 127, 300])
    s = choose_shift(z)
    assert requantize(z, s).clamped == 0 and requantize(z, s - 1).clamped > 0
    assert requantize(np.array([-64 * 1024, 64 * 1024]), static_shift(64)).clamped == 0


def test_weight_quantisation_is_symmetric_int4():
    w = np.array([[0.7, -0.35, 0.0], [0.07, 0.0, -0.07]])
    q = quantize_weights(w)
    assert q.values.tolist() == [[7, -4, 0], [1, 0, -1]] and np.isclose(q.scale, 0.1)
    qc = quantize_weights(w, per_channel=True)
    assert qc.values.tolist() == [[7, -4, 0], [7, 0, -7]] and np.allclose(qc.scale, [0.1, 0.01])
    assert quantize_weights(np.zeros((2, 2)), per_channel=True).scale.tolist() == [1.0, 1.0]


def test_weight_quantisation_int8_uses_127_levels():
    w = np.array([[1.27, -0.635, 0.005, -1.27]])
    q = quantize_weights(w, bits=8)
    assert q.values.tolist() == [[127, -64, 1, -127]] and np.isclose(q.scale, 0.01)
    with pytest.raises(ValueError, match="bits"):
        quantize_weights(w, bits=0)


@pytest.mark.parametrize("bad", [np.array([[np.nan]]), np.array([[np.inf, 1.0]])])
def test_non_finite_inputs_raise(bad):
    with pytest.raises(ValueError, match="NaN or infinity"):
        quantize_weights(bad)
    with pytest.raises(ValueError, match="NaN or infinity"):
        quantize_int8(bad)


def test_bad_shapes_and_ranges_raise():
    A, B, x = np.ones((2, 4)), np.ones((3, 2)), np.ones((1, 4))
    with pytest.raises(ValueError, match="ranks differ"):
        QuantizedLoRA.from_float(A, np.ones((3, 3)), scaling=2.0, x_calibration=x)
    with pytest.raises(ValueError, match="T×d_in"):
        QuantizedLoRA.from_float(A, B, scaling=2.0, x_calibration=np.ones((1, 5)))
    with pytest.raises(ValueError, match="scaling"):
        QuantizedLoRA.from_float(A, B, scaling=float("nan"), x_calibration=x)
    with pytest.raises(ValueError, match="scaling"):
        QuantizedLoRA.from_float(A, B, scaling=0, x_calibration=x)
    q = QuantizedLoRA.from_float(A, B, scaling=2.0, x_calibration=x)
    with pytest.raises(ValueError, match=r"\[-128, 127\]"):
        forward(q, np.full((1, 4), 200))
    with pytest.raises(ValueError, match="integers"):
        forward(q, np.full((1, 4), 0.5))
    with pytest.raises(ValueError, match="shift"):
        requantize(np.array([1]), -1)


shapes = st.tuples(st.integers(1, 64), st.integers(1, 64), st.integers(1, 8), st.integers(1, 4))


@settings(max_examples=60)
@given(shapes, st.booleans(), st.integers(0, 2**32 - 1))
def test_dequantised_output_is_within_the_bound_of_the_float_delta(shape, per_channel, seed):
    d_in, d_out, r, T = shape
    rng = np.random.default_rng(seed)
    A = rng.normal(0, 0.3, (r, d_in)) * rng.uniform(0.1, 2, (r, 1))
    B = rng.normal(0, 0.3, (d_out, r))
    x = rng.normal(0, 1.5, (T, d_in))
    scaling = float(rng.choice([1.0, 8.0, 16.0])) / float(rng.choice([r, np.sqrt(r)]))  # alpha/r or rsLoRA's
    q = QuantizedLoRA.from_float(A, B, scaling=scaling, x_calibration=x, per_channel=per_channel)
    z, z_q, y_q = forward(q, q.quantize_x(x))
    # the integer pass is exact: compare with Python ints
    xq = q.quantize_x(x).tolist()
    z_ref = [[sum(a * b for a, b in zip(row, arow)) for arow in q.A_q.tolist()] for row in xq]
    assert z.tolist() == z_ref
    assert y_q.tolist() == [[sum(a * b for a, b in zip(zr, brow)) for brow in q.B_q.tolist()] for zr in z_q.tolist()]
    err = np.abs(q.dequantize(y_q) - lora_delta_float(x, A, B, scaling))
    bound = q.error_bound(x)
    assert np.all(err <= bound), float((err - bound).max())


def test_bound_is_rigorous_but_not_absurdly_loose():
    rng = np.random.default_rng(0)
    A, B, x = rng.normal(0, 0.3, (8, 64)), rng.normal(0, 0.3, (64, 8)), rng.normal(0, 1, (2, 64))
    for per_channel in (False, True):
        q = QuantizedLoRA.from_float(A, B, scaling=2.0, x_calibration=x, per_channel=per_channel)
        err = np.abs(q.dequantize(forward(q, q.quantize_x(x))[2]) - lora_delta_float(x, A, B, 2.0))
        bound = q.error_bound(x)
        assert np.all(err <= bound)
        assert err.max() >= bound.max() / 20  # the triangle-inequality bound stays within ~an order of magnitude


def test_float_reference_matches_peft():
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(6, 5, bias=False)).double()
    model = get_peft_model(base, LoraConfig(r=3, lora_alpha=6, target_modules=["0"], lora_dropout=0.0))
    layer = model.base_model.model[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.copy_(torch.randn(5, 3, dtype=torch.float64))
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        delta = (model(x) - layer.base_layer(x)).numpy()
    A = layer.lora_A["default"].weight.detach().numpy()
    B = layer.lora_B["default"].weight.detach().numpy()
    assert A.shape == (3, 6) and B.shape == (5, 3)
    np.testing.assert_allclose(lora_delta_float(x.numpy(), A, B, 6.0 / 3), delta, rtol=1e-12, atol=1e-12)
