"""The inputs of one proven call, from the command line: weights and activations (files or seeded random), the
shift, per-channel scales and the bindings — or a peft adapter's modules on a prompt; shared by `zkref mock` and
`zkref prove`."""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from zkref.cli.console import quiet_model_loading
from zkref.cli.options import SEED, integer, positive
from zkref.lora.quantisation import ScaleMode
from zkref.lora.statement import (SUPPORTED_WEIGHT_BITS, ActivationBinding, AdapterBinding, LoRAShape, LoRAStatement,
                                  OutputBinding)
from zkref.models.peft_loading import CapturedIO
from zkref.models.tensor_files import load_safetensors
from zkref.pipeline import PRECISIONS, Bindings, CalibratedModule, Precision, Prepared, choose_precision, prepare
from zkref.primitives.ranges import MAX_DIM, MAX_RANK, MAX_SHIFT, MAX_TOKENS, check_int, check_memory

if TYPE_CHECKING:
    from backends.base import Backend

RANDOM_WEIGHT_STD = 0.02
"""Seeded random adapters look like trained LoRA weights (small), activations like layer-normed inputs (std 1)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Shapes or files, quantisation and bindings."""
    shapes = p.add_argument_group("the call (shapes for seeded random tensors, or safetensors files)")
    shapes.add_argument("--d-in", type=integer(1, MAX_DIM), default=None, metavar="N",
                        help="the module's input width d_in (or taken from the files)")
    shapes.add_argument("--d-out", type=integer(1, MAX_DIM), default=None, metavar="M",
                        help="the module's output width d_out (or taken from --weights)")
    shapes.add_argument("--rank", type=integer(1, MAX_RANK), default=None, metavar="R",
                        help="the LoRA rank r (or taken from --weights)")
    shapes.add_argument("--tokens", type=integer(1, MAX_TOKENS), default=None, metavar="T",
                        help="tokens in the call (default: 1, or taken from --activations)")
    shapes.add_argument("--seed", type=SEED, default=0, metavar="N",
                        help="seed of random weights/activations not given as files")
    shapes.add_argument("--weights", default=None, metavar="FILE",
                        help="safetensors file with float lora_A (r×d_in), lora_B (d_out×r)")
    shapes.add_argument("--activations", default=None, metavar="FILE",
                        help="safetensors file with float x (T×d_in or d_in)")
    quant = p.add_argument_group("quantisation")
    quant.add_argument("--alpha", type=positive(), default=None, metavar="A",
                       help="LoRA alpha (default: r, i.e. scaling 1)")
    quant.add_argument("--rslora", action="store_true", help="peft's rsLoRA scaling alpha/√r instead of alpha/r")
    quant.add_argument("--shift", type=integer(0, MAX_SHIFT), default=None, metavar="S",
                       help="requant shift (default: calibrated once from the given activations, and printed)")
    add_precision_arguments(quant, "the given activations")
    add_binding_arguments(p.add_argument_group("bindings: how x, the adapter and y are tied to the proof"))


def add_precision_arguments(group, calibration: str) -> None:
    """The precision options every command shares (`precision_from_args` reads them back)."""
    group.add_argument("--weight-bits", type=int, choices=list(SUPPORTED_WEIGHT_BITS), default=4,
                       help="weight width: int4 (the design note's, cheapest) to int16 (more lookups per product)")
    group.add_argument("--per-channel", action="store_true", help="per-output-channel weight scales (free in-circuit)")
    group.add_argument("--z-bits", type=int, choices=[8, 12, 16], default=8,
                       help="width of the requantised rank-r intermediate z_q (wider: far less rounding error)")
    group.add_argument("--activation-bits", type=int, choices=[8, 12, 16], default=8,
                       help="width of the quantised activations x_q")
    group.add_argument("--per-token-scales", action="store_true",
                       help="each token's activations scaled by their own max|x| (committed as the scale mode; the "
                            "client sends each call's scales) instead of one calibrated scale")
    group.add_argument("--max-rel-error", type=positive(), default=None, metavar="E",
                       help=f"instead: the cheapest precision (zkref.pipeline.PRECISIONS, by predicted proving rows) "
                            f"whose delta error on {calibration} is within E (e.g. 0.01)")


def precision_from_args(args: argparse.Namespace) -> Precision:
    """The precision the options ask for (with --max-rel-error this is only the starting point of the search)."""
    return Precision(args.weight_bits, args.per_channel, z_bits=args.z_bits,
                     x_mode=ScaleMode.PER_TOKEN if args.per_token_scales else ScaleMode.PER_TENSOR,
                     x_bits=args.activation_bits)


def add_binding_arguments(group, *, adapter_choices: list[str] | None = None) -> None:
    """--x-binding, --adapter-binding, --y-binding (and the older --x, --y, kept as hidden aliases)."""
    group.add_argument("--x-binding", choices=[b.value for b in ActivationBinding], default="public",
                       help="activations: public, a Poseidon digest (hashed), or a KZG commitment (polycommit)")
    group.add_argument("--x", dest="x_binding", choices=[b.value for b in ActivationBinding],
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    adapter_choices = adapter_choices or [b.value for b in AdapterBinding]
    unbound = ", or unbound (nothing binds it)" if AdapterBinding.UNBOUND.value in adapter_choices else ""
    group.add_argument("--adapter-binding", default="fixed", choices=adapter_choices,
                       help="the adapter: fixed (in the verifying key), a digest (hashed), or a KZG commitment "
                            f"(polycommit){unbound}")
    group.add_argument("--y-binding", choices=[b.value for b in OutputBinding], default="public",
                       help="the output: public, or a KZG commitment (polycommit)")
    group.add_argument("--y", dest="y_binding", choices=[b.value for b in OutputBinding],
                       default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _dim(args: argparse.Namespace, name: str, from_file: int | None, limit: int) -> int | None:
    given = getattr(args, name)
    if given is not None:
        check_int(name, given, 1, limit)
    if given is not None and from_file is not None and given != from_file:
        raise ValueError(f"--{name.replace('_', '-')} {given} does not match the file's shape ({from_file})")
    return given if given is not None else from_file


PROVISIONAL_SHIFT = 8
"""The shift the budget check assumes before calibration fixes it (calibrated modules here get 8–10); the statement
with its calibrated shift is checked again before it is proven."""


def check_budget(shape: LoRAShape, args: argparse.Namespace, backend: Backend | None) -> None:
    """Refuse, before anything is allocated, a call whose tensors, or whose proof with `backend`, would exceed the
    memory budget (zkref.primitives.ranges.MEMORY_BUDGET) or which the backend cannot prove at all."""
    check_memory(f"the call {shape}", shape.tensor_bytes)
    if backend is None:
        return
    statement = LoRAStatement(shape=shape, shift=args.shift if args.shift is not None else PROVISIONAL_SHIFT,
                              x_binding=args.x_binding, adapter_binding=args.adapter_binding,
                              y_binding=args.y_binding, weight_bits=4 if args.max_rel_error is not None
                              else args.weight_bits, z_bits=args.z_bits, activation_bits=args.activation_bits)
    support = backend.supports(statement)
    if not support:
        raise ValueError(f"backend {backend.name} cannot prove this statement: {support.reason}")


def prepared_from_args(args: argparse.Namespace, backend: Backend | None = None) -> tuple[Prepared, dict]:
    """The call to prove (statement + witness) and a description of where its inputs came from; its size is checked
    against the memory budget (and `backend`'s support) before any tensor is made."""
    A = B = x = None
    if args.weights:
        A, B = load_safetensors(args.weights, ["lora_A", "lora_B"])
        if A.ndim != 2 or B.ndim != 2 or B.shape[1] != A.shape[0]:
            raise ValueError(f"{args.weights}: lora_A must be r×d_in and lora_B d_out×r, got {A.shape} and {B.shape}")
    if args.activations:
        (x,) = load_safetensors(args.activations, ["x"])
        x = x[None, :] if x.ndim == 1 else x
        if x.ndim != 2:
            raise ValueError(f"{args.activations}: x must be d_in or T×d_in, got shape {x.shape}")
    if A is not None and x is not None and x.shape[1] != A.shape[1]:
        raise ValueError(f"x has {x.shape[1]} features but lora_A expects d_in = {A.shape[1]}")
    d_in = _dim(args, "d_in", A.shape[1] if A is not None else (x.shape[1] if x is not None else None), MAX_DIM)
    d_out = _dim(args, "d_out", B.shape[0] if B is not None else None, MAX_DIM)
    rank = _dim(args, "rank", A.shape[0] if A is not None else None, MAX_RANK)
    tokens = _dim(args, "tokens", x.shape[0] if x is not None else None, MAX_TOKENS) or 1
    missing = [n for n, v in (("--d-in", d_in), ("--d-out", d_out), ("--rank", rank)) if v is None]
    if missing:
        raise ValueError(f"give {', '.join(missing)} (or --weights / --activations files to take shapes from)")
    check_budget(LoRAShape(d_in=d_in, d_out=d_out, rank=rank, tokens=tokens), args, backend)
    rng = np.random.default_rng(args.seed)
    info = {"weights": args.weights or f"random (seed {args.seed})",
            "activations": args.activations or f"random (seed {args.seed})"}
    A = A if A is not None else rng.standard_normal((rank, d_in)) * RANDOM_WEIGHT_STD
    B = B if B is not None else rng.standard_normal((d_out, rank)) * RANDOM_WEIGHT_STD
    x = x if x is not None else rng.standard_normal((tokens, d_in))
    alpha = float(args.alpha) if args.alpha is not None else float(rank)
    scaling = alpha / (rank ** 0.5 if args.rslora else rank)
    if args.max_rel_error is not None:
        q, trials = choose_precision(A, B, scaling=scaling, x_calibration=x, max_rel_error=args.max_rel_error,
                                     shift=args.shift, backend=getattr(args, "backend", "zkref"))
        info["precision_trials"] = [{"precision": str(tr.precision), "relative_error": tr.relative_error,
                                     "within": tr.within, "rows": tr.cost_rows} for tr in trials]
    else:
        q = precision_from_args(args).quantise(A, B, scaling=scaling, x_calibration=x, shift=args.shift)
    info["shift"] = "given" if args.shift is not None else "calibrated once from the given activations"
    info["dequantisation"] = q.dequantisation.to_json()
    bindings = Bindings(x=args.x_binding, adapter=args.adapter_binding, y=args.y_binding)
    return prepare(q, x, bindings), info


# ------------------------------------------------------------------------------------------------------------------
# A peft adapter's modules on one prompt (`--base DIR --adapter DIR`)
# ------------------------------------------------------------------------------------------------------------------
def add_adapter_arguments(p: argparse.ArgumentParser):
    """A base model, a peft adapter, which of its modules, the calibration prompt and the call's prompt; returns the
    argument group (a command adds its own adapter options to it)."""
    g = p.add_argument_group("or a peft adapter's modules on one prompt (instead of shapes or tensor files)")
    g.add_argument("--base", default=None, metavar="DIR", help="base model directory (with --adapter)")
    g.add_argument("--adapter", default=None, metavar="DIR",
                   help="a peft adapter directory (save_pretrained): its modules")
    g.add_argument("--module", action="append", default=None, metavar="NAME",
                   help="only this module (repeatable; default: every module of the adapter)")
    g.add_argument("--calibration-ids", default=None, metavar="IDS",
                   help="comma-separated calibration token ids (default: 16 seeded random ids)")
    g.add_argument("--prompt-ids", default=None, metavar="IDS",
                   help="the call's comma-separated token ids (default: the calibration prompt)")
    return g


MAX_ADAPTER_PROMPT_IDS = 4096
"""`zkref mock|prove --adapter`: the longest calibration or call prompt."""


def token_ids(text: str | None, what: str, *, limit: int | None = MAX_ADAPTER_PROMPT_IDS) -> list[int] | None:
    """"1,2,3" → [1, 2, 3] (None when not given); ValueError with a one-line reason for anything else, or for more
    than `limit` ids (None: no limit)."""
    if text is None:
        return None
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated token ids, got {text[:40]!r}") from None
    if not ids or (limit is not None and len(ids) > limit) or min(ids) < 0:
        count = "one or more" if limit is None else f"1..{limit}"
        raise ValueError(f"{what} must hold {count} non-negative token ids")
    return ids


@dataclass(frozen=True, eq=False)
class AdapterCall:
    """A peft adapter's modules calibrated once (shift fixed) and what each saw and added on the call's prompt."""

    calibration_ids: tuple[int, ...]
    prompt_ids: tuple[int, ...]
    modules: tuple[CalibratedModule, ...]
    captured: Mapping[str, CapturedIO]


def adapter_call_from_args(args: argparse.Namespace) -> AdapterCall:
    """Load the base model and adapter, calibrate the selected modules on the calibration prompt (default: 16 seeded
    random ids), then capture each module's activations and peft's delta on the call's prompt."""
    from zkref.models.peft_loading import capture_module_io, load_peft_model
    from zkref.pipeline import calibrate

    if not (args.adapter and args.base):
        raise ValueError("--adapter DIR needs --base DIR (the base model the adapter was trained on), and vice versa")
    if args.weights or args.activations or args.d_in or args.d_out or args.rank:
        raise ValueError("--adapter takes shapes and weights from the adapter: give no shapes or tensor files")
    quiet_model_loading()
    peft_model, _ = load_peft_model(args.base, args.adapter)
    vocab = int(getattr(peft_model.config, "vocab_size", 0) or 0)
    calibration = token_ids(args.calibration_ids, "--calibration-ids") or \
        [int(t) for t in np.random.default_rng(args.seed).integers(0, vocab, 16)]
    prompt = token_ids(args.prompt_ids, "--prompt-ids") or calibration
    precision = precision_from_args(args) if args.max_rel_error is None else PRECISIONS[0]
    modules = calibrate(peft_model, calibration, modules=args.module or None, precision=precision,
                        max_rel_error=args.max_rel_error, shift=args.shift)
    captured = capture_module_io(peft_model, prompt, [c.name for c in modules])
    return AdapterCall(tuple(calibration), tuple(prompt), tuple(modules), captured)
