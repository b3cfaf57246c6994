"""zkref.accuracy: a model whose LoRA deltas are the statements' dequantised outputs, against the float peft model."""
import numpy as np
import pytest

from zkref.accuracy import measure, proven_deltas, quantise_adapter
from zkref.lora.statement import evaluate
from zkref.models.peft_loading import capture_module_io, load_peft_model
from zkref.models.tiny_model import build_tiny_gpt2, save_random_lora
from zkref.pipeline import Precision


@pytest.fixture(scope="module")
def peft_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("acc")
    base = build_tiny_gpt2(tmp / "base", n_layer=1, n_embd=32, n_head=2, vocab_size=64)
    adapter = save_random_lora(base, tmp / "adapter", r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"],
                               fan_in_fan_out=True, lora_dropout=0.0)
    model, _ = load_peft_model(base, adapter)
    return model


def test_the_hooked_delta_is_the_statements_dequantised_output(peft_model):
    import torch

    ids = [3, 9, 27, 14, 5, 61]
    q = quantise_adapter(peft_model, ids, Precision(4, False))
    captured = capture_module_io(peft_model, ids)
    outputs = {}
    layers = {n: m for n, m in peft_model.named_modules() if n.endswith("attn.c_attn") and hasattr(m, "lora_A")}
    (name,) = [n for n in q if n.endswith("attn.c_attn")]
    (layer,) = layers.values()
    with torch.no_grad(), proven_deltas(peft_model, q) as errors:
        # registered after proven_deltas' hook, so it sees the replaced output
        handle = layer.register_forward_hook(lambda m, a, out: outputs.setdefault("out", out.detach()))
        try:
            peft_model(input_ids=torch.as_tensor([ids]))
        finally:
            handle.remove()
    c = captured[name]
    w = q[name].witness(q[name].quantize_x(c.x))
    expected = c.base_out + q[name].dequantize(evaluate(q[name].statement(len(ids)), w).y_q)
    np.testing.assert_allclose(outputs["out"][0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert errors.max_error[name] == pytest.approx(np.abs(expected - c.base_out - c.delta).max(), rel=1e-4)
    assert q[name].check(c.x, evaluate(q[name].statement(len(ids)), w).y_q).within_bound


def test_outside_the_block_the_model_is_the_float_one(peft_model):
    import torch

    ids = torch.as_tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = peft_model(input_ids=ids).logits
        with proven_deltas(peft_model, quantise_adapter(peft_model, [1, 2, 3, 4], Precision(4, False))):
            during = peft_model(input_ids=ids).logits
        after = peft_model(input_ids=ids).logits
    assert torch.equal(before, after) and not torch.equal(before, during)


def test_measure_reports_every_module_and_int8_is_closer(peft_model):
    calibration, held_out = [5, 17, 33, 2, 40, 8, 11, 63], [[7, 3, 19, 44, 2, 9], [1, 50, 22, 6, 31, 12]]
    acc4 = measure(peft_model, quantise_adapter(peft_model, calibration, Precision(4, False)), held_out)
    acc8 = measure(peft_model, quantise_adapter(peft_model, calibration, Precision(8, False)), held_out)
    assert len(acc4.module_relative_error) == 2 and 0 <= acc4.top1_agreement <= 1
    assert all(ratio >= 1 for acc in (acc4, acc8) for ratio in acc.bound_over_error.values())  # the bound holds
    assert acc8.max_logit_error < acc4.max_logit_error
    assert acc8.max_module_relative_error < acc4.max_module_relative_error
    with pytest.raises(ValueError, match="two tokens"):
        measure(peft_model, {}, [[1]])
