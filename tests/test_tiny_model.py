"""The embedded default model: built locally, loaded through transformers, LoRA'd with peft (no hub access)."""
import numpy as np
import pytest

from zkref.models.tiny_model import build_tiny_gpt2, capture_lora_io, load_with_lora


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    model_dir = build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))
    assert (model_dir / "model.safetensors").exists()
    return capture_lora_io(load_with_lora(model_dir, rank=4, alpha=8.0), [5, 6, 7])


def test_peft_delta_is_s_times_B_A_x(captured):
    c = captured
    assert c.lora_A.shape == (4, 64) and c.lora_B.shape == (192, 4)  # PEFT: A is r×d_in, B is d_out×r
    expected = (c.alpha / c.rank) * c.x @ c.lora_A.T @ c.lora_B.T
    np.testing.assert_allclose(c.delta, expected, atol=1e-5)
    assert np.abs(c.delta).max() > 1e-3  # the adapter really changes the output
