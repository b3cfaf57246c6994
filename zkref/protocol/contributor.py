"""The contributor's side before any call: load base model and adapter, calibrate once, fix every statement.

At startup the contributor
1. loads its base model and peft adapter from local directories (zkref.models.peft_loading: every LoRA layer as peft
   built it, with peft's own scaling — alpha/r, alpha/√r for rsLoRA, rank_pattern/alpha_pattern);
2. runs its OWN calibration prompt through the peft model and captures each module's input activations;
3. quantises each module once (zkref.pipeline.calibrate): A_q, B_q (int4, or int8), and from the calibration activations the
   activation scale scale_x and the requantisation shift — fixed from then on, never from a client's values
   (whoever picks the shift at proving time picks the output scale);
4. digests the base model (zkref.models.digest), so clients can check they run the same one.

The result, `Contributor`, holds only integers and scales (no torch model): what the server needs to answer calls
(`ServedModule.evaluate`) and to state what each call's proof proves (`ServedModule.statement`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from zkref.lora.quantisation import QuantizedLoRA
from zkref.lora.statement import LoRAStatement, LoRAWitness, evaluate
from zkref.models.digest import ModelDigest
from zkref.pipeline import PRECISIONS, Bindings, Precision, calibrate
from zkref.protocol import messages as m

DEFAULT_CALIBRATION_TOKENS = 16
CALIBRATION_SEED = 20240917
"""Seed of the default calibration prompt (token ids drawn uniformly from the vocabulary), so it is reproducible."""


@dataclass(frozen=True, kw_only=True, eq=False)
class ServedModule:
    """One LoRA module as served: peft's parameters, the quantised adapter and the bindings of its statements."""

    name: str
    adapter: str
    base_layer: str
    lora_alpha: float
    use_rslora: bool
    quantised: QuantizedLoRA
    bindings: Bindings

    @property
    def d_in(self) -> int:
        return self.quantised.d_in

    @property
    def d_out(self) -> int:
        return self.quantised.d_out

    def statement(self, tokens: int) -> LoRAStatement:
        return self.quantised.statement(tokens, x_binding=self.bindings.x, adapter_binding=self.bindings.adapter,
                                        y_binding=self.bindings.y)

    def witness(self, x_q: np.ndarray) -> LoRAWitness:
        return self.quantised.witness(x_q)

    def evaluate(self, x_q: np.ndarray) -> tuple[LoRAStatement, np.ndarray]:
        """The statement of this call and its output y_q (zkref.lora.statement.evaluate, exact integers)."""
        witness = self.witness(x_q)
        statement = self.statement(witness.shape.tokens)
        return statement, evaluate(statement, witness).y_q

    def info(self) -> m.ModuleInfo:
        q = self.quantised
        return m.ModuleInfo(name=self.name, adapter=self.adapter, base_layer=self.base_layer, d_in=q.d_in,
                            d_out=q.d_out, rank=q.rank, lora_alpha=self.lora_alpha, scaling=q.scaling,
                            use_rslora=self.use_rslora, statement=m.StatementTemplate.of(self.statement(1)),
                            dequantisation=m.DequantisationInfo.of(q.dequantisation))


@dataclass(frozen=True, kw_only=True, eq=False)
class Contributor:
    """What a contributor serves: its modules (by name, in model order), base-model digest and calibration."""

    modules: dict[str, ServedModule]
    base_digest: ModelDigest
    calibration_ids: tuple[int, ...]
    shift_source: str
    vocab_size: int | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def calibration_info(self) -> m.CalibrationInfo:
        what = ("the smallest shift with no clamping on these activations" if self.shift_source == "calibration"
                else "a shift fixed by the contributor")
        note = (f"Fixed ONCE at startup, before any call: each module's activation scale scale_x = max|x|/127 over the "
                f"contributor's own calibration prompt ({len(self.calibration_ids)} tokens, ids below) run through "
                f"its peft model, and its requantisation shift is {what}. Client activations never change them.")
        return m.CalibrationInfo(token_ids=list(self.calibration_ids), shift_source=self.shift_source, note=note)

    def base_model_info(self) -> m.BaseModelInfo:
        d = self.base_digest
        return m.BaseModelInfo(digest=d.hex, format_version=d.format_version, n_tensors=d.n_tensors,
                               n_parameters=d.n_parameters)


def default_calibration_ids(vocab_size: int, max_positions: int | None, n: int = DEFAULT_CALIBRATION_TOKENS
                            ) -> tuple[int, ...]:
    """A reproducible calibration prompt: n token ids drawn from the vocabulary with a fixed seed."""
    n = min(n, max_positions) if max_positions else n
    rng = np.random.default_rng(CALIBRATION_SEED)
    return tuple(int(t) for t in rng.integers(0, vocab_size, size=n))


def _max_positions(config) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def load_contributor(*, base_dir: str | os.PathLike, adapter_dir: str | os.PathLike,
                     calibration_ids: Sequence[int] | None = None, shift: int | None = None,
                     per_channel: bool = False, weight_bits: int = 4, precision: Precision | None = None,
                     max_rel_error: float | None = None, bindings: Bindings = Bindings(),
                     digest_workers: int | None = None) -> Contributor:
    """Load, calibrate and quantise every LoRA module of the adapter (see the module docstring).

    calibration_ids: the contributor's calibration prompt (default: `default_calibration_ids`).
    shift: fix the requantisation shift of every module instead of calibrating it (scale_x is still calibrated).
    weight_bits, per_channel: the weight precision (per-output-channel scales cost nothing in-circuit); or
    precision: all of it (zkref.pipeline.Precision: weights, z_q and activation widths, per-token activation
    scales, which calls then carry); or max_rel_error: per module, the cheapest of zkref.pipeline.PRECISIONS whose
    delta error on the calibration prompt is within it (zkref.pipeline.choose_precision).
    bindings: how x, the adapter and y are bound in every statement; an unbound adapter is refused (its proofs
    would hold for ANY adapter, so they would prove nothing about this one).
    """
    from zkref.models.digest import model_digest
    from zkref.models.peft_loading import load_peft_model

    if not bindings.adapter.bound:
        raise ValueError("the adapter binding 'unbound' is refused: any adapter would satisfy the proofs")
    peft_model, _ = load_peft_model(base_dir, {"default": adapter_dir})
    config = peft_model.config
    vocab = getattr(config, "vocab_size", None)
    if calibration_ids is None:
        if not isinstance(vocab, int) or vocab < 1:
            raise ValueError("the base model's config has no vocab_size: pass calibration token ids")
        calibration_ids = default_calibration_ids(vocab, _max_positions(config))
    ids = tuple(int(t) for t in calibration_ids)
    if not ids:
        raise ValueError("the calibration prompt must have at least one token")
    if len(ids) > m.MAX_CALIBRATION_TOKENS:
        raise ValueError(f"the calibration prompt has {len(ids)} tokens; at most {m.MAX_CALIBRATION_TOKENS}")
    limit = _max_positions(config)
    if limit is not None and len(ids) > limit:
        raise ValueError(f"the calibration prompt has {len(ids)} tokens; the model takes at most {limit}")
    modules: dict[str, ServedModule] = {}
    for cal in calibrate(peft_model, ids, precision=precision or Precision(weight_bits, per_channel),
                         max_rel_error=max_rel_error, shift=shift, adapter="default", precisions=PRECISIONS):
        mod = cal.module
        served = ServedModule(name=mod.name, adapter=mod.adapter, base_layer=mod.base_layer,
                              lora_alpha=mod.lora_alpha, use_rslora=mod.use_rslora, quantised=cal.quantised,
                              bindings=bindings)
        served.statement(1)  # bindings and shapes valid for this zkref version
        modules[mod.name] = served
    del peft_model
    digest = model_digest(base_dir, progress=False, workers=digest_workers)
    return Contributor(modules=modules, base_digest=digest, calibration_ids=ids,
                       shift_source="calibration" if shift is None else "fixed",
                       vocab_size=vocab if isinstance(vocab, int) else None)

