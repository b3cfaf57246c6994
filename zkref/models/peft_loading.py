"""Every LoRA layer exactly as peft built it: load a local base model and peft adapters, read back A, B and scaling.

A base model (transformers, local safetensors only) and one or more adapters saved by peft's `save_pretrained` are
loaded through `AutoModelForCausalLM.from_pretrained` and `PeftModel.from_pretrained` / `load_adapter`. The LoRA
weights are then taken from the modules peft built (`peft.tuners.lora.LoraLayer`), never from hand-parsed safetensors
key names, together with `scaling[adapter]` as peft computed it (lora_alpha / r, lora_alpha / √r with `use_rslora`,
per module with `rank_pattern` / `alpha_pattern`). For every accepted module the forward pass adds exactly

    delta = scaling · x · Aᵀ · Bᵀ        x: T × d_in (the module's input), A: r × d_in, B: d_out × r

to the base layer's output. That holds for GPT-2's `Conv1D` too: peft sizes lora_A / lora_B from the Conv1D weight
(stored d_in × d_out) and runs them as `nn.Linear` layers on the module's input; `fan_in_fan_out=True` only transposes
the delta *weight* (B·A)ᵀ when it is merged into the Conv1D weight, which zkref never does.

Refused with ValueError, before or after loading (the statement proves only y = scaling · B · A · x added to an
unchanged base model):
- adapters that are not LoRA (peft_type other than "LORA"), or whose weights are not `adapter_model.safetensors`
  (a pickled `adapter_model.bin` is never loaded: it could run code when unpickled);
- adapters that change the base model: `bias` other than "none" (base-layer biases are trained and overwritten),
  `modules_to_save` (whole modules replaced), `trainable_token_indices` (embedding rows replaced), `layer_replication`
  (layers duplicated), and `init_lora_weights` schemes that rewrite the base weights when the adapter is built
  (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA) — the client runs the base model it holds, bound by its digest;
- layers whose output is not scaling · x·Aᵀ·Bᵀ: LoRA variants (DoRA's magnitude rescaling, aLoRA, Arrow, BD-LoRA,
  VeLoRA, MonteCLoRA, KaSA, …), `lora_bias` (an extra bias on lora_B), merged adapters (the delta is inside W);
- LoRA layers that are not a plain `Linear` over `nn.Linear` / transformers `Conv1D`: embedding LoRA (a table lookup,
  not a product with the activations), Conv1d/2d/3d LoRA (convolutions), MultiheadAttention, `target_parameters`
  (ParamWrapper on raw parameters), quantised bitsandbytes/GPTQ/AWQ layers;
- anything that does not load completely: target modules absent from the base model, shape mismatches, adapter
  tensors the model has no place for or LoRA parameters the file does not hold, an adapter whose adapter_config
  records another model class (`auto_mapping.base_model_class`) — all signs of an adapter for another base model;
- config keys this peft version does not know that are set (peft would drop them with a warning; one may switch on
  a feature these layers would silently ignore).

Written here rather than left to peft: the bounded read and the refusal checks of adapter_config.json (peft reads it
unbounded and accepts all of the above), and the check that the weights are safetensors (peft falls back to
unpickling adapter_model.bin, and to the hub when a local file is missing). The config parsed here is handed to
`PeftModel.from_pretrained(config=…)` / `add_adapter`, so peft never reads the JSON itself.

Sizes are bounded: JSON configs ≤ 1 MiB, each adapter file ≤ `max_adapter_bytes`, safetensors headers checked by
`zkref.models.digest.read_safetensors_header` (bounded header, offsets inside the file) before peft opens the file.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zkref.models.digest import read_safetensors_header

__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "MAX_JSON_BYTES", "MAX_ADAPTER_BYTES", "MAX_TOKENS",
    "LoRAModule", "LoadedAdapter", "CapturedIO",
    "load_base_model", "load_peft_model", "lora_layers", "lora_modules", "capture_module_io", "read_adapter_config",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MAX_JSON_BYTES = 1 << 20
"""adapter_config.json / config.json larger than this are refused before parsing (real ones are a few KB)."""
MAX_ADAPTER_BYTES = 8 << 30
"""Default bound on adapter_model.safetensors (r = 64 on every linear layer of a 70B model is ~3 GB in fp32)."""
MAX_TOKENS = 8192
"""capture_module_io runs one sequence of at most this many tokens."""

_PICKLED_WEIGHTS = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth", "adapter_model.ckpt")
_PEFT_PREFIX = "base_model.model."
_ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_SAFE_INITS: tuple[object, ...] = (True, False, "gaussian", "eva", "orthogonal", "mica")
"""init_lora_weights values known to leave the base weights untouched when peft builds the layer (peft 0.21:
pissa*, olora, corda, loftq and lora_ga assign to base_layer.weight; the rest only initialise A and B, which the
saved weights then overwrite). Anything else is refused rather than guessed."""
_BASE_CHANGING_FIELDS = {
    "modules_to_save": "whole modules are trained and replaced by the adapter's copies",
    "trainable_token_indices": "rows of the embedding matrix are trained and replaced",
    "layer_replication": "base layers are duplicated, so the model is no longer the base model",
}


# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------

def _frozen_array(a: np.ndarray) -> np.ndarray:
    out = np.array(a, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class LoRAModule:
    """One LoRA layer of one adapter, as peft built it: delta = scaling · x · Aᵀ · Bᵀ on the module's input x.

    `name` is the module's path in the base model (peft's "base_model.model." prefix removed), e.g.
    "transformer.h.0.attn.c_attn" or "model.layers.0.self_attn.q_proj". Arrays are float64 copies, read-only.
    """

    name: str
    adapter: str
    lora_A: np.ndarray
    """r × d_in (peft's lora_A[adapter].weight)."""
    lora_B: np.ndarray
    """d_out × r (peft's lora_B[adapter].weight)."""
    scaling: float
    """peft's scaling[adapter]: what its forward multiplies B·A·x by."""
    lora_alpha: float
    rank: int
    d_in: int
    d_out: int
    use_rslora: bool
    fan_in_fan_out: bool
    """True for transformers Conv1D (weight stored d_in × d_out); affects merging only, not the forward."""
    base_layer: str
    """"Linear" (torch.nn.Linear) or "Conv1D" (transformers.pytorch_utils.Conv1D)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lora_A", _frozen_array(self.lora_A))
        object.__setattr__(self, "lora_B", _frozen_array(self.lora_B))
        if self.lora_A.shape != (self.rank, self.d_in) or self.lora_B.shape != (self.d_out, self.rank):
            raise ValueError(f"{self.name}: lora_A {self.lora_A.shape} / lora_B {self.lora_B.shape} do not match "
                             f"r={self.rank}, d_in={self.d_in}, d_out={self.d_out}")
        if not (math.isfinite(self.scaling) and np.isfinite(self.lora_A).all() and np.isfinite(self.lora_B).all()):
            raise ValueError(f"{self.name}: non-finite LoRA weights or scaling")

    def delta(self, x: np.ndarray) -> np.ndarray:
        """scaling · x · Aᵀ · Bᵀ in float64 for x of shape T × d_in (or d_in): what peft adds to the base output."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.d_in:
            raise ValueError(f"{self.name}: x has {x.shape[-1]} features, the module takes {self.d_in}")
        return self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)


@dataclass(frozen=True)
class LoadedAdapter:
    """One adapter loaded into the peft model: where it came from and its LoRA modules in model order."""

    name: str
    directory: Path
    use_rslora: bool
    modules: tuple[LoRAModule, ...]

    @property
    def module_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modules)


@dataclass(frozen=True, eq=False)
class CapturedIO:
    """What one LoRA module saw and produced on a real forward pass (batch 1, T tokens), float64, read-only.

    delta = output − base_out: what peft's module added to its base layer's output.
    """

    name: str
    adapter: str
    x: np.ndarray
    """T × d_in: the module's input."""
    delta: np.ndarray
    """T × d_out."""
    base_out: np.ndarray
    """T × d_out: the base layer alone on x (W·x + b)."""

    def __post_init__(self) -> None:
        for field_name in ("x", "delta", "base_out"):
            object.__setattr__(self, field_name, _frozen_array(getattr(self, field_name)))


# ----------------------------------------------------------------------------------------------------------------------
# Bounded reads and directory checks
# ----------------------------------------------------------------------------------------------------------------------

def _read_json(path: Path, what: str) -> dict[str, Any]:
    """Parse a JSON object from `path`, refusing anything over MAX_JSON_BYTES before reading it."""
    if not path.is_file():
        raise ValueError(f"{path.parent} has no {path.name}: it is not a {what} directory")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ValueError(f"{path}: {size:,} bytes exceeds the {MAX_JSON_BYTES:,}-byte bound for a {what} config")
    with open(path, "rb") as f:
        raw = f.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise ValueError(f"{path}: grew past {MAX_JSON_BYTES:,} bytes while being read")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not UTF-8 JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _existing_dir(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{what} directory {p} does not exist (only local directories are read; nothing is "
                         "downloaded)")
    if not p.is_dir():
        raise ValueError(f"{what} path {p} is not a directory")
    return p


def read_adapter_config(adapter_dir: str | os.PathLike) -> dict[str, Any]:
    """Validate an adapter directory and return its adapter_config.json (bounded read) after every refusal check.

    Checks: the directory exists; adapter_config.json is a JSON object ≤ 1 MiB with peft_type "LORA" and none of the
    base-model-changing options; the weights are adapter_model.safetensors (never a pickle), with a sound header.
    """
    d = _existing_dir(adapter_dir, "adapter")
    config = _read_json(d / ADAPTER_CONFIG, "peft adapter")
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise ValueError(f"{d}: peft_type is {peft_type!r}; only plain LoRA adapters (peft_type 'LORA') are "
                         "supported (other PEFT methods do not compute scaling · B·A·x)")
    bias = config.get("bias", "none")
    if bias != "none":
        raise ValueError(f"{d}: bias={bias!r} trains the base layers' biases and the adapter overwrites them, so the "
                         "model would no longer be the base model the client runs (and its digest binds); "
                         "only bias='none' is supported")
    for field_name, why in _BASE_CHANGING_FIELDS.items():
        if config.get(field_name):
            raise ValueError(f"{d}: {field_name}={config[field_name]!r} is refused: {why}")
    init = config.get("init_lora_weights", True)
    if not any(init is s or (isinstance(s, str) and init == s) for s in _SAFE_INITS):
        raise ValueError(f"{d}: init_lora_weights={init!r} is refused: PiSSA, OLoRA, CorDA, LoftQ and LoRA-GA rewrite "
                         "the base weights when peft builds the layer, so the model would no longer be the base "
                         "model (convert such an adapter to plain LoRA when saving it: peft's "
                         "path_initial_model_for_weight_conversion)")
    weights = d / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickles = [n for n in _PICKLED_WEIGHTS if (d / n).exists()]
        if pickles:
            raise ValueError(f"{d} holds pickled adapter weights ({', '.join(pickles)}) and no {ADAPTER_WEIGHTS}: "
                             "zkref never unpickles (a pickle can run code when loaded). Re-save the adapter with "
                             "save_pretrained(dir, safe_serialization=True) in a trusted environment.")
        raise ValueError(f"{d} has no {ADAPTER_WEIGHTS}")
    return config


def _check_adapter_weights(adapter_dir: Path, max_adapter_bytes: int) -> None:
    weights = adapter_dir / ADAPTER_WEIGHTS
    size = weights.stat().st_size
    if size > max_adapter_bytes:
        raise ValueError(f"{weights}: {size:,} bytes exceeds max_adapter_bytes={max_adapter_bytes:,}")
    entries = read_safetensors_header(weights)  # bounded header, dtypes known, offsets inside the file, no overlap
    if not entries:
        raise ValueError(f"{weights} holds no tensors")


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------

def load_base_model(base_dir: str | os.PathLike, *, dtype: Any = None):
    """Load a causal LM from a local directory with transformers: safetensors only, no hub, no remote code.

    dtype: a torch dtype (default torch.float32; torch.float64 makes captured deltas match the float64 formula to
    ~1e-12, at twice the memory).
    """
    import torch
    from transformers import AutoModelForCausalLM

    d = _existing_dir(base_dir, "base model")
    config = _read_json(d / "config.json", "transformers model")
    if not isinstance(config.get("model_type"), str):
        raise ValueError(f"{d}/config.json has no model_type")
    if not any(p.is_file() for p in d.glob("*.safetensors")):
        raise ValueError(f"{d} holds no *.safetensors weights (pickled checkpoints are never loaded)")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            d, local_files_only=True, use_safetensors=True, trust_remote_code=False,
            dtype=torch.float32 if dtype is None else dtype)
    except (OSError, KeyError) as e:  # transformers' "no file named …" / unknown model_type
        raise ValueError(f"cannot load the base model in {d} with transformers: {e}") from e
    model.eval()
    return model


def _check_adapter_name(name: object) -> str:
    if not isinstance(name, str) or not _ADAPTER_NAME.fullmatch(name):
        raise ValueError(f"adapter name {name!r} must be 1-64 characters of letters, digits, '_' and '-'")
    if name in "lora_":  # peft inserts the name after the "lora_" prefix; a substring of it breaks key matching
        raise ValueError(f"adapter name {name!r} is a substring of peft's 'lora_' prefix; choose another")
    return name


def _lora_config(config: dict[str, Any], adapter_dir: Path):
    """A LoraConfig from the validated JSON (peft's own parsing path, minus its unbounded file read).

    Keys this peft version does not know are dropped when they are off (null, false, empty), as peft itself does; a
    key that is set is refused: it may switch on a feature (a new LoRA variant) that these layers would silently
    ignore, computing something other than what the adapter was trained to compute.
    """
    import dataclasses

    from peft import LoraConfig

    known = {f.name for f in dataclasses.fields(LoraConfig)}
    unknown_set = sorted(k for k, v in config.items() if k not in known and k != "runtime_config" and v)
    if unknown_set:
        raise ValueError(f"{adapter_dir}: adapter_config.json sets {unknown_set}, unknown to this peft version; "
                         "upgrade peft rather than load the adapter without them")
    data = {k: v for k, v in config.items() if k in known}
    try:
        cfg = LoraConfig.from_peft_type(**LoraConfig.check_kwargs(**data))
    except (TypeError, ValueError) as e:  # peft's own validation of the values
        raise ValueError(f"{adapter_dir}: adapter_config.json is not a valid LoraConfig: {e}") from e
    cfg.inference_mode = True
    return cfg


def _check_loaded_completely(peft_model, adapter: str, adapter_dir: Path) -> None:
    """Every tensor of the adapter file went into the model, and every LoRA parameter came from the file."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    in_model = get_peft_model_state_dict(peft_model, adapter_name=adapter)
    in_file = load_file(str(adapter_dir / ADAPTER_WEIGHTS), device="cpu")
    unexpected, missing = sorted(set(in_file) - set(in_model)), sorted(set(in_model) - set(in_file))
    if unexpected or missing:
        raise ValueError(f"adapter {adapter!r} ({adapter_dir}) does not fit this base model (is it an adapter for "
                         f"another architecture?): tensors with no place in the model {unexpected[:4]}"
                         f"{'…' if len(unexpected) > 4 else ''}, LoRA parameters missing from the file "
                         f"{missing[:4]}{'…' if len(missing) > 4 else ''}")
    for key, stored in in_file.items():
        if not torch.equal(in_model[key].to(torch.float64), stored.to(torch.float64)):
            raise ValueError(f"adapter {adapter!r}: {key} in the model differs from the file after loading")


def load_peft_model(base_dir: str | os.PathLike, adapter_dirs: Mapping[str, str | os.PathLike] | str | os.PathLike,
                    *, dtype: Any = None, max_adapter_bytes: int = MAX_ADAPTER_BYTES):
    """Load a local base model and one or more local peft LoRA adapters; returns (peft_model, {name: LoadedAdapter}).

    adapter_dirs: a directory (adapter name "default") or {name: directory}; the first becomes the active adapter
    (`PeftModel.from_pretrained`), the others are added with `load_adapter`. The model is in eval mode (LoRA dropout
    off). Every refusal of the module docstring raises ValueError naming the adapter and the reason.
    """
    import torch
    from peft import PeftModel

    if isinstance(adapter_dirs, (str, os.PathLike)):
        adapter_dirs = {"default": adapter_dirs}
    if not isinstance(adapter_dirs, Mapping) or not adapter_dirs:
        raise ValueError("adapter_dirs must be a directory or a non-empty {name: directory} mapping")
    if isinstance(max_adapter_bytes, bool) or not isinstance(max_adapter_bytes, int) or max_adapter_bytes < 1:
        raise ValueError(f"max_adapter_bytes must be a positive int, got {max_adapter_bytes!r}")
    prepared = []
    for name, directory in adapter_dirs.items():
        _check_adapter_name(name)
        config = read_adapter_config(directory)
        d = Path(directory)
        _check_adapter_weights(d, max_adapter_bytes)
        prepared.append((name, d, config))

    base = load_base_model(base_dir, dtype=dtype)
    for name, d, config in prepared:
        trained_on = (config.get("auto_mapping") or {}).get("base_model_class")
        if trained_on is not None and trained_on != type(base).__name__:
            raise ValueError(f"adapter {name!r} ({d}) was saved from a {trained_on}, but the base model in "
                             f"{base_dir} loads as a {type(base).__name__}")

    peft_model = None
    for name, d, config in prepared:
        lora_config = _lora_config(config, d)
        try:
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(base, d, adapter_name=name, config=lora_config,
                                                       is_trainable=False, torch_device="cpu")
            else:
                # add_adapter with the config read above, then load_adapter finds the name present and loads only the
                # (already checked) safetensors weights: peft never re-reads the JSON or looks for a .bin.
                peft_model.add_adapter(name, lora_config)
                peft_model.load_adapter(d, adapter_name=name, is_trainable=False, torch_device="cpu")
        except (RuntimeError, ValueError, KeyError) as e:  # target modules not found, size mismatch, …
            raise ValueError(f"adapter {name!r} ({d}) does not load onto the base model in {base_dir}: {e}") from e
        _check_loaded_completely(peft_model, name, d)
    assert peft_model is not None
    _activate(peft_model, prepared[0][0])
    peft_model.eval()
    with torch.no_grad():
        adapters = {name: LoadedAdapter(name=name, directory=d, use_rslora=bool(config.get("use_rslora", False)),
                                        modules=tuple(lora_modules(peft_model, adapter=name)))
                    for name, d, config in prepared}
    for a in adapters.values():
        if not a.modules:
            raise ValueError(f"adapter {a.name!r} ({a.directory}) has no LoRA modules")
    return peft_model, adapters


# ----------------------------------------------------------------------------------------------------------------------
# Walking peft's modules
# ----------------------------------------------------------------------------------------------------------------------

def _base_name(peft_name: str) -> str:
    return peft_name[len(_PEFT_PREFIX):] if peft_name.startswith(_PEFT_PREFIX) else peft_name


def _activate(peft_model, adapters: str | list[str]) -> None:
    """Make exactly `adapters` active, frozen (inference_mode: no parameter starts requiring grad)."""
    peft_model.base_model.set_adapter(adapters, inference_mode=True)


def _resolve_adapter(peft_model, adapter: str | None) -> str:
    names = list(getattr(peft_model, "peft_config", {}) or {})
    if not names:
        raise ValueError("not a peft model (no peft_config)")
    if adapter is None:
        active = peft_model.active_adapters if hasattr(peft_model, "active_adapters") else [peft_model.active_adapter]
        if len(active) != 1:
            raise ValueError(f"{len(active)} adapters are active ({active}); name one")
        return active[0]
    if adapter not in names:
        raise ValueError(f"no adapter {adapter!r}; loaded: {names}")
    return adapter


def _plain_linear_module(module, name: str, adapter: str) -> LoRAModule:
    """Read one peft LoRA Linear, refusing every configuration whose forward is not base(x) + scaling·B·A·x."""
    import torch
    from peft.tuners.lora import layer as lora_layer
    from transformers.pytorch_utils import Conv1D

    where = f"{name} (adapter {adapter!r})"
    if type(module) is not lora_layer.Linear:
        kind = type(module).__name__
        why = {"Embedding": "embedding LoRA is a table lookup of token ids, not a product with the activations",
               "Conv1d": "convolution LoRA", "Conv2d": "convolution LoRA", "Conv3d": "convolution LoRA",
               "MultiheadAttention": "LoRA inside nn.MultiheadAttention's fused projections",
               "ParamWrapper": "target_parameters LoRA on a raw parameter (no linear module to observe)"}.get(
                   kind, "not a plain LoRA Linear (quantised or otherwise specialised layer)")
        raise ValueError(f"{where}: peft built a lora.{kind} layer, refused: {why}; only lora.Linear over "
                         "nn.Linear / Conv1D is supported")
    variant = getattr(module, "lora_variant", {}).get(adapter)
    if variant is not None or module.use_dora.get(adapter, False):
        vname = type(variant).__name__ if variant is not None else "DoRA"
        extra = (" (DoRA rescales each column of W + scaling·B·A by a learned magnitude, so the output is not "
                 "W·x + scaling·B·A·x)" if "Dora" in vname or variant is None else "")
        raise ValueError(f"{where}: LoRA variant {vname} refused{extra}; only plain LoRA is proven")
    if module.lora_bias.get(adapter, False) or module.lora_B[adapter].bias is not None:
        raise ValueError(f"{where}: lora_bias=True adds scaling·b to the output, which the statement does not have")
    if adapter in module.merged_adapters:
        raise ValueError(f"{where}: the adapter is merged into the base weight; unmerge it first")
    if module.disable_adapters:
        raise ValueError(f"{where}: adapters are disabled on this module")
    base = module.get_base_layer()
    if isinstance(base, Conv1D):
        kind, d_in, d_out, expect_fifo = "Conv1D", base.weight.shape[0], base.weight.shape[1], True
    elif isinstance(base, torch.nn.Linear):
        kind, d_in, d_out, expect_fifo = "Linear", base.in_features, base.out_features, False
    else:
        raise ValueError(f"{where}: base layer {type(base).__name__} is neither nn.Linear nor Conv1D")
    if bool(module.fan_in_fan_out) != expect_fifo:
        raise ValueError(f"{where}: fan_in_fan_out={module.fan_in_fan_out} on a {kind} base layer is inconsistent")
    A = module.lora_A[adapter].weight.detach().to("cpu", torch.float64).numpy()
    B = module.lora_B[adapter].weight.detach().to("cpu", torch.float64).numpy()
    return LoRAModule(name=name, adapter=adapter, lora_A=A, lora_B=B, scaling=float(module.scaling[adapter]),
                      lora_alpha=float(module.lora_alpha[adapter]), rank=int(module.r[adapter]), d_in=int(d_in),
                      d_out=int(d_out), use_rslora=bool(module.use_rslora.get(adapter, False)),
                      fan_in_fan_out=bool(module.fan_in_fan_out), base_layer=kind)


def _adapter_layers(peft_model, adapter: str):
    from peft.tuners.lora import LoraLayer

    for peft_name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        holds = any(adapter in getattr(module, attr, {}) for attr in
                    ("lora_A", "lora_embedding_A", "lora_magnitude_vector", "r"))
        if holds:
            yield _base_name(peft_name), module


def lora_layers(peft_model, adapter: str | None = None) -> dict[str, Any]:
    """The torch LoRA layers of `adapter` (default: the active one) by base-model path, each checked to be plain
    LoRA (the same refusals as `lora_modules`): for hooking a forward pass."""
    adapter = _resolve_adapter(peft_model, adapter)
    layers = dict(_adapter_layers(peft_model, adapter))
    for name, module in layers.items():
        _plain_linear_module(module, name, adapter)
    return layers


def lora_modules(peft_model, adapter: str | None = None) -> list[LoRAModule]:
    """Every LoRA layer of `adapter` (default: the active one) in model order, refusing what is not plain LoRA."""
    adapter = _resolve_adapter(peft_model, adapter)
    return [_plain_linear_module(module, name, adapter) for name, module in _adapter_layers(peft_model, adapter)]


# ----------------------------------------------------------------------------------------------------------------------
# Capturing activations
# ----------------------------------------------------------------------------------------------------------------------

def _token_tensor(input_ids: Sequence[int] | Any, vocab_size: int | None):
    import torch

    try:
        arr = np.asarray(input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids)
    except (TypeError, ValueError) as e:  # ragged nesting and the like
        raise ValueError(f"input_ids must be a 1-D integer sequence: {e}") from e
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"input_ids must be a non-empty 1-D integer sequence (batch 1), got {arr.dtype} "
                         f"of shape {arr.shape}")
    if arr.size > MAX_TOKENS:
        raise ValueError(f"{arr.size} tokens exceeds MAX_TOKENS={MAX_TOKENS}")
    if int(arr.min()) < 0 or (vocab_size is not None and int(arr.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    return torch.as_tensor(arr.astype(np.int64))[None, :]


def capture_module_io(peft_model, input_ids: Sequence[int] | Any, module_names: Iterable[str] | None = None, *,
                      adapter: str | None = None) -> dict[str, CapturedIO]:
    """Run the model once on `input_ids` (batch 1, T tokens) and capture x, delta and base_out of LoRA modules.

    module_names: base-model module paths as in LoRAModule.name (default: every module of the adapter). The adapter
    (default: the active one) is made the only active adapter for this forward pass, so delta is its contribution
    alone. Forward hooks record the module's input x and output; base_out re-runs the base layer on x.
    """
    import torch

    adapter = _resolve_adapter(peft_model, adapter)
    layers = dict(_adapter_layers(peft_model, adapter))
    names = list(layers) if module_names is None else list(module_names)
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ValueError(f"no LoRA module of adapter {adapter!r} named {unknown[:4]}; it has {list(layers)[:4]}…")
    if not names:
        raise ValueError("no modules to capture")
    for n in names:
        _plain_linear_module(layers[n], n, adapter)  # the same refusals as lora_modules
    vocab = getattr(getattr(peft_model, "config", None), "vocab_size", None)
    ids = _token_tensor(input_ids, vocab)

    seen: dict[str, list[tuple[Any, Any]]] = {n: [] for n in names}

    def make_hook(n: str):
        def hook(_module, args, kwargs, output):
            x = args[0] if args else kwargs.get("x", kwargs.get("input"))
            if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor):
                raise ValueError(f"{n}: could not observe the module's tensor input and output")
            seen[n].append((x.detach(), output.detach()))
        return hook

    previous = list(peft_model.active_adapters)
    was_training = peft_model.training
    handles = [layers[n].register_forward_hook(make_hook(n), with_kwargs=True) for n in names]
    try:
        _activate(peft_model, adapter)
        peft_model.eval()
        with torch.no_grad():
            peft_model(input_ids=ids)
            result = {}
            for n in names:
                calls = seen[n]
                if len(calls) != 1:
                    raise ValueError(f"{n} ran {len(calls)} times in one forward pass; expected exactly once")
                x, out = calls[0]
                base_out = layers[n].get_base_layer()(x)
                result[n] = CapturedIO(name=n, adapter=adapter, x=x[0].to(torch.float64).numpy(),
                                       delta=(out - base_out)[0].to(torch.float64).numpy(),
                                       base_out=base_out[0].to(torch.float64).numpy())
    finally:
        for h in handles:
            h.remove()
        _activate(peft_model, previous)
        peft_model.train(was_training)
    return result
