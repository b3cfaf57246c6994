"""Named module shapes and whole models for cost reports: the shapes the README and benchmarks quote."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModuleShape:
    """A linear layer adapted by LoRA: d_in → d_out, appearing `count` times."""

    name: str
    d_in: int
    d_out: int
    count: int = 1


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    modules: tuple[ModuleShape, ...]


def _llama3_70b() -> tuple[ModuleShape, ...]:
    shapes = {"q_proj": (8192, 8192), "k_proj": (8192, 1024), "v_proj": (8192, 1024), "o_proj": (8192, 8192)}
    return tuple(ModuleShape(f"model.layers.{i}.self_attn.{m}", *shapes[m]) for i in range(80) for m in shapes)


def _llama3_8b_all() -> tuple[ModuleShape, ...]:
    """Every attention and MLP projection of Llama-3-8B's 32 layers (hidden 4096, GQA k/v 1024, MLP 14336)."""
    attn = {"q_proj": (4096, 4096), "k_proj": (4096, 1024), "v_proj": (4096, 1024), "o_proj": (4096, 4096)}
    mlp = {"gate_proj": (4096, 14336), "up_proj": (4096, 14336), "down_proj": (14336, 4096)}
    return tuple(module for i in range(32) for module in
                 [ModuleShape(f"model.layers.{i}.self_attn.{m}", *attn[m]) for m in attn]
                 + [ModuleShape(f"model.layers.{i}.mlp.{m}", *mlp[m]) for m in mlp])


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("gpt2-small-c_attn", "GPT-2 small attention c_attn (768 → 2304)", (ModuleShape("c_attn", 768, 2304),)),
    Preset("llama3-8b-q_proj", "Llama-3-8B q_proj (4096 → 4096)", (ModuleShape("q_proj", 4096, 4096),)),
    Preset("llama3-8b-v_proj", "Llama-3-8B v_proj (4096 → 1024, GQA)", (ModuleShape("v_proj", 4096, 1024),)),
    Preset("llama3-8b", "Llama-3-8B, 32 layers × q,k,v,o,gate,up,down (224 modules)", _llama3_8b_all()),
    Preset("llama3-70b", "Llama-3-70B, 80 layers × q,k,v,o (hidden 8192; q/o 8192→8192, k/v 8192→1024)",
           _llama3_70b()),
)}
