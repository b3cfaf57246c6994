"""`zkref demo`: the end-to-end run on a tiny GPT-2 built locally, a short script over zkref.pipeline.

Build and save the model (safetensors), digest it, attach a peft LoRA to c_attn, capture 4 tokens' activations and
peft's delta, quantise once (shift fixed from those calibration activations), then prove the call in three bindings
(x public and the adapter fixed; x and adapter hashed as EZKL hashes them; packed then hashed), compare the
dequantised output with peft's float delta within the proven bound, audit a sample of cells and print the costs.
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from zkref.cli.console import out

BINDINGS = (("x public, adapter fixed", "public", "fixed"),
            ("x and adapter hashed (EZKL's Poseidon)", "hashed", "hashed"),
            ("x and adapter packed then hashed", "hashed-packed", "hashed-packed"))


@dataclass
class DemoResult:
    """What the demo established; `ok` is the exit status's source."""

    proven: list[bool] = field(default_factory=list)
    within_bound: bool = False
    audit_clean: bool = False
    figures: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.proven) and all(self.proven) and self.within_bound and self.audit_clean


def run_demo(model_dir: str | Path | None = None, *, tokens: int = 4, rank: int = 4, alpha: float = 8.0,
             lanes: int = 8, audit_sample: int = 300, seed: int = 0, console: Console | None = None) -> DemoResult:
    """Run every step, printing as it goes; returns the figures (also used by the test of this demo)."""
    from backends import get_backend
    from zkref.lora.circuit import LoRACircuit, LoRALayout
    from zkref.lora.report import build_report
    from zkref.models.digest import model_digest
    from zkref.models.tiny_model import TINY_GPT2, build_tiny_gpt2, capture_lora_io, load_with_lora
    from zkref.pipeline import Bindings, prepare, quantise, run
    from zkref.plonkish.audit import audit

    con = console or Console()
    result = DemoResult()
    layout = LoRALayout(lanes=lanes)
    backend = get_backend("zkref", layout=layout)
    with tempfile.TemporaryDirectory(prefix="zkref-demo-") as tmp:
        model_path = Path(model_dir) if model_dir is not None else Path(tmp) / "tiny-gpt2"
        con.rule("[bold]1. base model (built locally, never downloaded)")
        if not (model_path / "model.safetensors").exists():
            build_tiny_gpt2(model_path, seed=seed)
        digest = model_digest(model_path, progress=True)
        con.print(f"GPT-2 {TINY_GPT2} in {model_path}\nbase-model digest ({digest.format_version}): "
                  f"[cyan]{digest.hex}[/] over {digest.n_parameters:,} parameters")

        con.rule("[bold]2. LoRA adapter (peft) and the activations reaching it")
        peft_model = load_with_lora(model_path, rank=rank, alpha=alpha, seed=seed)
        token_ids = [int(t) for t in np.random.default_rng(seed).integers(0, TINY_GPT2["vocab_size"], tokens)]
        cap = capture_lora_io(peft_model, token_ids)
        con.print(f"{cap.module}: lora_A {cap.lora_A.shape}, lora_B {cap.lora_B.shape}, scaling {cap.alpha / cap.rank:g}, "
                  f"{tokens} tokens {token_ids}")
        q = quantise(cap.lora_A, cap.lora_B, scaling=cap.alpha / cap.rank, x_calibration=cap.x)
        con.print(f"quantised: int4 weights, int8 activations, shift {q.shift} fixed from calibration activations")

        con.rule("[bold]3. prove y_q = B_q · requant(A_q · x_q) in each binding (zkref backend: a mock check)")
        for label, x_binding, adapter_binding in BINDINGS:
            prepared = prepare(q, cap.x, Bindings(x=x_binding, adapter=adapter_binding))
            outcome = run(prepared, backend, layout=layout)
            result.proven.append(bool(outcome.proven.verdict))
            con.print(f"{label}: k={outcome.cost.k}, {outcome.cost.rows_used:,} rows, "
                      f"{outcome.proven.prove_seconds:.2f} s: "
                      + ("[green]verified[/]" if outcome.proven.verdict else f"[red]{outcome.proven.verdict.reason}[/]"))
            pub = outcome.proven.result.public
            for name in ("x_digest", "adapter_digest"):
                if getattr(pub, name) is not None:
                    con.print(f"    {name} 0x{getattr(pub, name):064x}")
            if x_binding == "public":
                check, base = outcome.check, outcome
        peft_err = float(np.abs(q.dequantize(base.proven.y_q) - cap.delta).max())
        result.within_bound = check.within_bound

        con.rule("[bold]4. dequantise and compare with peft's float delta")
        con.print(f"max |dequantised − float delta| = {check.max_abs_error:.4g} ≤ proven bound "
                  f"{check.error_bound:.4g}: {'[green]yes[/]' if check.within_bound else '[red]no[/]'} "
                  f"(relative {check.relative_error:.1%}; against peft's own float32 output {peft_err:.4g})")

        con.rule("[bold]5. audit: perturb advice cells, look for under-constrained ones")
        circuit = LoRACircuit(statement=base.prepared.statement, witness=base.prepared.witness, layout=layout)
        report = audit(circuit, circuit.public_inputs(), sample=audit_sample, seed=seed)
        result.audit_clean = report.ok
        con.print(report.render(limit=10))

        con.rule("[bold]6. accounting")
        con.print(base.cost.rich_table())
        s = base.prepared.statement.shape
        con.print(build_report(d_in=s.d_in, d_out=s.d_out, rank=rank, tokens=tokens, lanes=lanes).rich_table())
        result.figures = {"k": base.cost.k, "shift": q.shift, "digest": digest.hex,
                          "max_abs_error": check.max_abs_error, "error_bound": check.error_bound,
                          "rows_used": base.cost.rows_used, "proof_bytes_estimate": base.cost.proof.bytes}
    con.rule("[bold green]demo complete: every check passed" if result.ok else "[bold red]demo: a check failed")
    return result


def cmd_demo(args: argparse.Namespace) -> int:
    return 0 if run_demo(args.model_dir, tokens=args.tokens, rank=args.rank, lanes=args.lanes, seed=args.seed,
                         console=out).ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="end-to-end demo on a tiny locally built model")
    p.add_argument("--model-dir", default=None, help="keep the tiny model here (default: a temporary directory)")
    p.add_argument("--tokens", type=int, default=4)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--lanes", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
