"""Tiny models and adapters built locally (no hub): the demo's and tests' embedded default model, and fixtures.

The models are randomly initialised, saved with `save_pretrained` (safetensors) and loaded back through transformers'
real loading code; adapters are peft LoRAs whose lora_B is randomised (peft initialises it to zero, which would make
every delta zero). `save_random_lora` writes an adapter directory exactly as a peft user's `save_pretrained` does,
for any LoraConfig, so zkref.models.peft_loading can be tested on real adapter directories.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TINY_GPT2 = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=32, bos_token_id=0, eos_token_id=0)
TINY_LLAMA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=64, max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
                  pad_token_id=0, tie_word_embeddings=False)
"""A Llama-architecture model (grouped-query attention: 4 query heads, 2 key/value heads) of 32 hidden units."""


def build_tiny_gpt2(model_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """Create and save a randomly initialised GPT-2 (safetensors) in `model_dir`; returns the directory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(**(TINY_GPT2 | overrides))
    model = GPT2LMHeadModel(config)
    model_dir = Path(model_dir)
    model.save_pretrained(model_dir, safe_serialization=True)
    return model_dir


def build_tiny_llama(model_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """Create and save a randomly initialised LlamaForCausalLM (safetensors) in `model_dir`; returns the directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**(TINY_LLAMA | overrides)))
    model_dir = Path(model_dir)
    model.save_pretrained(model_dir, safe_serialization=True)
    return model_dir


def save_random_lora(base_dir: str | Path, adapter_dir: str | Path, seed: int = 0, std: float = 0.05,
                     **lora_config: Any) -> Path:
    """Attach a peft LoRA (LoraConfig(**lora_config)) to the saved base model, randomise A and B, save_pretrained.

    The base model is loaded with transformers' AutoModelForCausalLM from local files only; the adapter directory
    then holds adapter_config.json and adapter_model.safetensors, as for any peft user.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True, use_safetensors=True)
    peft_model = get_peft_model(model, LoraConfig(**lora_config))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    adapter_dir = Path(adapter_dir)
    peft_model.save_pretrained(adapter_dir, safe_serialization=True)
    return adapter_dir


@dataclass
class CapturedLoRA:
    """One LoRA module's float weights (PEFT layout) and the activations that reached it.

    `scaling` is peft's own scaling[adapter] (alpha/r, or alpha/√r with rsLoRA); `alpha` is peft's lora_alpha.
    """

    module: str
    lora_A: np.ndarray  # r × d_in
    lora_B: np.ndarray  # d_out × r
    alpha: float
    rank: int
    x: np.ndarray  # T × d_in: the module's input for each token
    delta: np.ndarray  # T × d_out: what peft's module added to its base layer's output (float, for comparison)
    scaling: float  # what peft multiplies B·A·x by


def load_with_lora(model_dir: str | Path, rank: int = 4, alpha: float = 8.0, seed: int = 0,
                   target: str = "c_attn"):
    """Load the saved model through transformers and wrap it with a peft LoRA adapter whose weights are random."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(model_dir)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=[target], fan_in_fan_out=True, lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    peft_model.eval()
    return peft_model


def capture_lora_io(peft_model, token_ids: list[int], layer: int = 0, target: str = "c_attn") -> CapturedLoRA:
    """Run the model on `token_ids` and capture one LoRA module's input and peft's delta for each token."""
    import torch

    module = None
    for name, mod in peft_model.named_modules():
        if name.endswith(f"h.{layer}.attn.{target}") and hasattr(mod, "lora_A"):
            module, module_name = mod, name
    if module is None:
        raise ValueError(f"no LoRA module {target} in layer {layer}")
    seen: dict = {}

    def hook(mod, inputs, output):
        seen["x"] = inputs[0].detach()
        seen["out"] = output.detach()

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            peft_model(torch.tensor([token_ids]))
    finally:
        handle.remove()
    adapter = module.active_adapters[0]
    A = module.lora_A[adapter].weight.detach().double().numpy()
    B = module.lora_B[adapter].weight.detach().double().numpy()
    scale = float(module.scaling[adapter])
    with torch.no_grad():
        base = module.base_layer(seen["x"])
    x = seen["x"][0].double().numpy()
    delta = (seen["out"] - base)[0].double().numpy()
    return CapturedLoRA(module_name, A, B, float(module.lora_alpha[adapter]), A.shape[0], x, delta, scale)
