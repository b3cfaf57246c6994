"""The embedded default model: built locally, loaded through transformers, LoRA'd with peft (no hub access)."""
import json

import numpy as np
import pytest

from zkref.models.tiny_model import (TINY_LLAMA, build_tiny_gpt2, build_tiny_llama, capture_lora_io, load_with_lora,
                                     save_random_lora)


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    model_dir = build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))
    assert (model_dir / "model.safetensors").exists()
    return capture_lora_io(load_with_lora(model_dir, rank=4, alpha=8.0), [5, 6, 7])


def test_peft_delta_is_s_times_B_A_x(captured):
    c = captured
    assert c.lora_A.shape == (4, 64) and c.lora_B.shape == (192, 4)  # PEFT: A is r×d_in, B is d_out×r
    assert (c.alpha, c.rank, c.scaling) == (8.0, 4, 2.0)  # peft's scaling, read from the module (alpha/r here)
    expected = c.scaling * c.x @ c.lora_A.T @ c.lora_B.T
    np.testing.assert_allclose(c.delta, expected, atol=1e-5)
    assert np.abs(c.delta).max() > 1e-3  # the adapter really changes the output


def test_tiny_llama_and_saved_adapter(tmp_path):
    llama = build_tiny_llama(tmp_path / "llama")
    config = json.loads((llama / "config.json").read_text())
    assert config["model_type"] == "llama" and config["hidden_size"] == TINY_LLAMA["hidden_size"]
    adapter = save_random_lora(llama, tmp_path / "adapter", r=2, lora_alpha=4, use_rslora=True,
                               target_modules=["q_proj"])
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert (saved["r"], saved["use_rslora"], saved["target_modules"]) == (2, True, ["q_proj"])
    assert (adapter / "adapter_model.safetensors").exists() and not (adapter / "adapter_model.bin").exists()
