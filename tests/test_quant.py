"""Quantisation semantics: rounding, integer requantisation, exact integer forward pass, and the error bound."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from zkref.chips.requant import requant_reference
from zkref.lora.quantisation import SHIFT_HEADROOM_BITS, Dequantisation, QuantizedLoRA, ScaleMode, lora_delta_float
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


@settings(max_examples=80)
@given(shapes, st.booleans(), st.sampled_from([4, 8]), st.sampled_from([8, 12, 16]),
       st.sampled_from(list(ScaleMode)), st.booleans(), st.integers(0, 2**32 - 1))
def test_dequantised_output_is_within_the_bound_of_the_float_delta(shape, per_channel, weight_bits, z_bits, x_mode,
                                                                    other_call, seed):
    """Both bounds hold for every precision, on the calibration activations and on another call (which may clip x or
    clamp z_q); the tight bound is never above the a-priori one."""
    d_in, d_out, r, T = shape
    rng = np.random.default_rng(seed)
    A = rng.normal(0, 0.3, (r, d_in)) * rng.uniform(0.1, 2, (r, 1))
    B = rng.normal(0, 0.3, (d_out, r))
    x = rng.normal(0, 1.5, (T, d_in))
    scaling = float(rng.choice([1.0, 8.0, 16.0])) / float(rng.choice([r, np.sqrt(r)]))  # alpha/r or rsLoRA's
    q = QuantizedLoRA.from_float(A, B, scaling=scaling, x_calibration=x, per_channel=per_channel,
                                 weight_bits=weight_bits, z_bits=z_bits, x_mode=x_mode)
    if other_call:
        x = rng.normal(0, 3.0, (T, d_in)) * rng.uniform(0, 2, (T, 1))
    qx = q.quantize_activations(x)
    z, z_q, y_q = forward(q, qx.x_q)
    # the integer pass is exact: compare with Python ints
    xq = q.quantize_x(x).tolist()
    z_ref = [[sum(a * b for a, b in zip(row, arow)) for arow in q.A_q.tolist()] for row in xq]
    assert z.tolist() == z_ref
    assert y_q.tolist() == [[sum(a * b for a, b in zip(zr, brow)) for brow in q.B_q.tolist()] for zr in z_q.tolist()]
    ref = lora_delta_float(x, A, B, scaling)
    err = np.abs(q.dequantize(y_q, qx.scales) - ref)
    bound, worst = q.error_bound(x), q.worst_case_error_bound(x)
    assert np.all(err <= bound), float((err - bound).max())
    assert np.all(err <= worst) and np.all(bound <= worst * (1 + 1e-6) + 1e-9 * np.abs(ref).max())


def test_per_token_scales_quantise_each_token_to_its_own_range_and_come_back():
    x = np.array([[0.5, -1.27, 0.0], [100.0, 40.0, -25.0], [0.0, 0.0, 0.0]])
    d = Dequantisation(2.0, 0.5, (1.0, 3.0), 1.0, 3, ScaleMode.PER_TOKEN)
    qx = d.quantize(x)
    assert qx.x_q.tolist() == [[50, -127, 0], [127, 51, -32], [0, 0, 0]]
    assert np.allclose(qx.scales, [0.01, 100 / 127, 0.0]) and qx.scales[2] == np.finfo(np.float64).tiny
    y_q = np.array([[1, 2], [3, 4], [5, 6]])
    assert np.allclose(d.apply(y_q, qx.scales), 2.0 * 0.5 * 8 * qx.scales[:, None] * [1.0, 3.0] * y_q)
    with pytest.raises(ValueError, match="each token's scale"):
        d.apply(y_q)
    with pytest.raises(ValueError, match="3 positive"):
        d.apply(y_q, qx.scales[:2])
    per_tensor = Dequantisation(2.0, 0.5, (1.0, 3.0), 0.5, 3)
    assert per_tensor.quantize(x).scales.tolist() == [0.5, 0.5, 0.5]
    assert np.allclose(per_tensor.apply(y_q), 2.0 * 0.5 * 0.5 * 8 * np.array([1.0, 3.0]) * y_q)
    with pytest.raises(ValueError, match="per-tensor"):
        per_tensor.apply(y_q, qx.scales)
    with pytest.raises(ValueError, match="x_mode"):
        Dequantisation(2.0, 0.5, (1.0,), 0.5, 3, "per-row")
    assert d.to_json()["x_mode"] == "per-token" and per_tensor.to_json()["x_mode"] == "per-tensor"


def test_per_token_scales_help_activations_of_very_different_sizes():
    """Tokens 100× apart: one calibrated scale rounds the small token to a few levels, its own scale does not."""
    rng = np.random.default_rng(4)
    A, B = rng.normal(0, 0.3, (8, 64)), rng.normal(0, 0.3, (32, 8))
    x = rng.normal(0, 1, (6, 64)) * np.array([[100.0], [1.0], [1.0], [100.0], [1.0], [1.0]])
    errors = {}
    for mode in ScaleMode:
        q = QuantizedLoRA.from_float(A, B, scaling=2.0, x_calibration=x, weight_bits=8, z_bits=16, x_mode=mode)
        qx = q.quantize_activations(x)
        ref = lora_delta_float(x, A, B, 2.0)
        errors[mode] = (np.abs(q.dequantize(forward(q, qx.x_q)[2], qx.scales) - ref) / np.abs(ref).max(axis=1,
                                                                                                  keepdims=True)).max()
    assert errors[ScaleMode.PER_TOKEN] < errors[ScaleMode.PER_TENSOR] / 10, errors


def test_a_wider_intermediate_cuts_the_requantisation_error_and_the_tight_bound_follows_it():
    rng = np.random.default_rng(0)
    A, B, x = rng.normal(0, 0.3, (8, 64)), rng.normal(0, 0.3, (64, 8)), rng.normal(0, 1, (4, 64))
    ratio = {}
    for z_bits in (8, 16):
        q = QuantizedLoRA.from_float(A, B, scaling=2.0, x_calibration=x, weight_bits=8, per_channel=True,
                                     z_bits=z_bits)
        err = np.abs(q.dequantize(forward(q, q.quantize_x(x))[2]) - lora_delta_float(x, A, B, 2.0))
        ratio[z_bits] = q.error_bound(x).max() / err.max()
        assert q.statement(4).z_bits == z_bits
        assert q.shift == choose_shift((q.quantize_x(x) @ q.A_q.T) << SHIFT_HEADROOM_BITS, z_bits)
        assert evaluate(q.statement(4), q.witness(q.quantize_x(x))).z_q.max() < (1 << (z_bits - 1 - SHIFT_HEADROOM_BITS))
    assert ratio[16] <= 1.5 and ratio[8] > ratio[16], ratio   # the requantisation's worst case is what remains


def test_bound_is_rigorous_but_not_absurdly_loose():
    rng = np.random.default_rng(0)
    A, B, x = rng.normal(0, 0.3, (8, 64)), rng.normal(0, 0.3, (64, 8)), rng.normal(0, 1, (2, 64))
    for per_channel in (False, True):
        q = QuantizedLoRA.from_float(A, B, scaling=2.0, x_calibration=x, per_channel=per_channel)
        err = np.abs(q.dequantize(forward(q, q.quantize_x(x))[2]) - lora_delta_float(x, A, B, 2.0))
        bound, worst = q.error_bound(x), q.worst_case_error_bound(x)
        assert np.all(err <= bound) and np.all(err <= worst)
        assert err.max() >= worst.max() / 20  # the triangle-inequality bound stays within ~an order of magnitude
        assert err.max() >= bound.max() / 3   # the tight one within 3×


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


@pytest.mark.parametrize("group", [16, 32, 40])
def test_group_wise_int4_is_an_exact_int12_statement_within_both_bounds(group):
    """lora_A scaled per (row, group of input columns): A_q = S⊙A4 with integer S in [1, 255] constant over each
    group and int4 digits A4, proven as int12 weights; both bounds hold and zkref's circuit is satisfied."""
    from backends import get_backend

    rng = np.random.default_rng(group)
    A = rng.normal(0, 0.3, (4, 96)) * rng.uniform(0.05, 3, (1, 96))     # columns of very different sizes
    B, x = rng.normal(0, 0.3, (24, 4)), rng.normal(0, 1, (3, 96))
    q = QuantizedLoRA.from_float(A, B, scaling=2.0, x_calibration=x, per_channel=True, z_bits=16, group_size=group)
    S = np.rint(q.A_step * 255).astype(np.int64)
    for start in range(0, 96, group):
        block = S[:, start:start + group]
        assert (block == block[:, :1]).all() and block.min() >= 1 and block.max() <= 255
    A4 = q.A_q // S
    assert np.array_equal(A4 * S, q.A_q) and np.abs(A4).max() <= 7
    assert np.abs(q.A_eff - q.A_q / 255).max() <= (q.A_step / 2).max() + 1e-12   # no digit clipped
    st_ = q.statement(3)
    assert st_.weight_bits == 12 and q.group_size == group and int(np.abs(q.B_q).max()) <= 7   # B stays int4
    qx = q.quantize_activations(x)
    err = np.abs(q.dequantize(forward(q, qx.x_q)[2], qx.scales) - lora_delta_float(x, A, B, 2.0))
    assert (err <= q.error_bound(x)).all() and (err <= q.worst_case_error_bound(x)).all()
    result = get_backend("zkref").prove(st_, q.witness(qx.x_q))
    assert np.array_equal(result.public.y_q, forward(q, qx.x_q)[2])
    with pytest.raises(ValueError, match="group-wise"):
        QuantizedLoRA.from_float(A, B, scaling=2.0, x_calibration=x, per_channel=False, group_size=group)



def test_an_all_zero_token_does_not_inflate_the_per_token_bound():
    """A padding token (x = 0) is 0 at any scale; its tiny scale keeps its requantisation term, and the bound, at 0."""
    rng = np.random.default_rng(11)
    A, B = rng.normal(0, 0.3, (4, 32)), rng.normal(0, 0.3, (16, 4))
    x = rng.normal(0, 1, (3, 32))
    x[1] = 0.0
    q = QuantizedLoRA.from_float(A, B, scaling=2.0, x_calibration=x, weight_bits=8, z_bits=16, x_mode="per-token")
    bound = q.error_bound(x)
    assert bound[1].max() < 1e-250 and (bound[[0, 2]] > 1e-6).all()
    qx = q.quantize_activations(x)
    assert not qx.x_q[1].any() and not q.dequantize(forward(q, qx.x_q)[2], qx.scales)[1].any()
