"""What proving costs in accuracy: a model whose every LoRA delta is the statement's dequantised integer output.

`quantise_adapter` quantises each LoRA layer of a peft model (one precision for all, shift and activation scale fixed
from a calibration prompt, as a contributor does); `proven_deltas` runs the model with each layer's delta replaced
by `QuantizedLoRA.dequantize(evaluate(statement, witness).y_q)` — exactly what a client adds after verifying a proof;
`measure` compares that model with the float peft model: per-module delta error, max logit error, top-1 agreement
and perplexity.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from zkref.lora.quantisation import QuantizedLoRA, lora_delta_float
from zkref.lora.statement import evaluate
from zkref.models.peft_loading import lora_layers
from zkref.pipeline import Precision, calibrate


def quantise_adapter(peft_model, calibration_ids: Sequence[int], precision: Precision, *,
                     adapter: str | None = None) -> dict[str, QuantizedLoRA]:
    """Every LoRA layer quantised at `precision`, its shift and activation scale fixed from the calibration prompt."""
    return {c.name: c.quantised for c in calibrate(peft_model, calibration_ids, precision=precision, adapter=adapter)}


@dataclass
class DeltaErrors:
    """Per module, over every call: the largest |proven − float| delta error, the largest |float delta| and the
    largest proven error bound (`QuantizedLoRA.error_bound`) seen."""

    max_error: dict[str, float] = field(default_factory=dict)
    max_delta: dict[str, float] = field(default_factory=dict)
    max_bound: dict[str, float] = field(default_factory=dict)
    max_worst_case_bound: dict[str, float] = field(default_factory=dict)
    """The a-priori bound (`QuantizedLoRA.worst_case_error_bound`: every rounding at its worst), for comparison."""
    violations: dict[str, int] = field(default_factory=dict)
    """Outputs whose error exceeded the proven bound (0 whenever the bound holds, as it must)."""

    def add(self, name: str, proven: np.ndarray, exact: np.ndarray, bound: np.ndarray | None = None,
            worst_case_bound: np.ndarray | None = None) -> None:
        err = np.abs(proven - exact)
        self.max_error[name] = max(self.max_error.get(name, 0.0), float(err.max(initial=0.0)))
        self.max_delta[name] = max(self.max_delta.get(name, 0.0), float(np.abs(exact).max(initial=0.0)))
        if bound is not None:
            self.max_bound[name] = max(self.max_bound.get(name, 0.0), float(bound.max(initial=0.0)))
            self.violations[name] = self.violations.get(name, 0) + int((err > bound).sum())
        if worst_case_bound is not None:
            self.max_worst_case_bound[name] = max(self.max_worst_case_bound.get(name, 0.0),
                                                  float(worst_case_bound.max(initial=0.0)))

    def relative(self, name: str) -> float:
        return self.max_error[name] / self.max_delta[name] if self.max_delta.get(name) else 0.0


@contextlib.contextmanager
def proven_deltas(peft_model, quantised: dict[str, QuantizedLoRA], *, adapter: str | None = None,
                  errors: DeltaErrors | None = None) -> Iterator[DeltaErrors]:
    """Within the block, every listed LoRA layer outputs base(x) + the statement's dequantised y_q for its x;
    the delta errors of every call are recorded in `errors` (a new record unless given)."""
    import torch

    layers = lora_layers(peft_model, adapter)
    missing = [n for n in quantised if n not in layers]
    if missing:
        raise ValueError(f"no LoRA layer named {missing[:3]} in the model")
    errors = DeltaErrors() if errors is None else errors

    def make_hook(name: str, q: QuantizedLoRA):
        def hook(module, args, output):
            x = args[0]
            base = module.get_base_layer()(x)
            x2 = x.detach().reshape(-1, x.shape[-1]).to(torch.float64).numpy()
            qx = q.quantize_activations(x2)
            w = q.witness(qx.x_q)
            proven = q.dequantize(evaluate(q.statement(w.shape.tokens), w).y_q, qx.scales)
            # the float delta in float64 (peft's B(A x)·s with the same matrices): what the bounds are proven against
            errors.add(name, proven, lora_delta_float(x2, q.A_eff, q.B_eff, q.scaling), q.error_bound(x2),
                       q.worst_case_error_bound(x2))
            return base + torch.as_tensor(proven, dtype=output.dtype).reshape(output.shape)
        return hook

    handles = [layers[n].register_forward_hook(make_hook(n, q)) for n, q in quantised.items()]
    try:
        yield errors
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class ModelAccuracy:
    """The proven model against the float peft model on the same token sequences."""

    module_relative_error: dict[str, float]
    bound_over_error: dict[str, float]
    """Per module: the largest proven error bound ÷ the largest observed error (how tight the bound is)."""
    worst_case_bound_over_error: dict[str, float]
    """The same for the a-priori bound (every rounding at its worst)."""
    bound_violations: int
    """Outputs, over all modules and calls, whose error exceeded the proven bound: 0 unless the bound were wrong."""
    max_logit_error: float
    top1_agreement: float
    perplexity_float: float
    perplexity_proven: float

    @property
    def max_module_relative_error(self) -> float:
        return max(self.module_relative_error.values(), default=0.0)


def _perplexity(logits, ids) -> float:
    import torch

    logp = torch.log_softmax(logits[:-1].to(torch.float64), dim=-1)
    nll = -logp[torch.arange(len(ids) - 1), torch.as_tensor(ids[1:])].mean()
    return float(nll)


def measure(peft_model, quantised: dict[str, QuantizedLoRA], sequences: Sequence[Sequence[int]], *,
            adapter: str | None = None) -> ModelAccuracy:
    """Logits of both models on each sequence: max |logit difference|, top-1 agreement, perplexity of each."""
    import torch

    max_err, agree, total, nll_f, nll_p = 0.0, 0, 0, [], []
    peft_model.eval()
    errors = DeltaErrors()
    for ids in sequences:
        ids = [int(t) for t in ids]
        if len(ids) < 2:
            raise ValueError("each sequence needs at least two tokens (perplexity predicts the next one)")
        batch = torch.as_tensor([ids])
        with torch.no_grad():
            exact = peft_model(input_ids=batch).logits[0]
            with proven_deltas(peft_model, quantised, adapter=adapter, errors=errors):
                proven = peft_model(input_ids=batch).logits[0]
        max_err = max(max_err, float((proven - exact).abs().max()))
        agree += int((proven.argmax(-1) == exact.argmax(-1)).sum())
        total += len(ids)
        nll_f.append(_perplexity(exact, ids))
        nll_p.append(_perplexity(proven, ids))
    return ModelAccuracy({n: errors.relative(n) for n in errors.max_error},
                         {n: errors.max_bound[n] / errors.max_error[n] for n in errors.max_error if errors.max_error[n]},
                         {n: errors.max_worst_case_bound[n] / errors.max_error[n] for n in errors.max_error
                          if errors.max_error[n]},
                         sum(errors.violations.values()),
                         max_err, agree / total,
                         math.exp(float(np.mean(nll_f))), math.exp(float(np.mean(nll_p))))
