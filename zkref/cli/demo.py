"""The end-to-end demo on the embedded default: a tiny GPT-2 built locally, a peft LoRA on its c_attn, and the proof.

Steps: build and save the model (safetensors), digest it (the base model's one-time Poseidon digest), load it back
through transformers, attach a LoRA adapter, run a few tokens and capture the adapter's input and peft's delta,
quantise, mock-prove the low-rank circuit, check the dequantised output against peft within the proven bound, prove
the statement again with x private and x and the adapter bound by Poseidon commitments (EZKL-compatible and packed),
audit a sample of cells, and print the accounting next to the dense baseline.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console


@dataclass
class DemoResult:
    """What the demo established; `ok` is the exit status's source."""

    satisfied: bool = False
    within_bound: bool = False
    commitment_proven: bool = False
    audit_clean: bool = False
    figures: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.satisfied and self.within_bound and self.commitment_proven and self.audit_clean


def run_demo(model_dir: str | Path | None = None, *, tokens: int = 4, rank: int = 4, alpha: float = 8.0,
             lanes: int = 8, strategy: str = "table", audit_sample: int = 300, seed: int = 0,
             console: Console | None = None) -> DemoResult:
    """Run every step, printing as it goes; returns the figures (also used by the test of this demo)."""
    from zkref.plonkish.accounting import cost_of_layout
    from zkref.plonkish.audit import audit_prover
    from zkref.lora.commitments import (activations_commitment, activations_commitment_packed, adapter_commitment,
                              adapter_commitment_packed)
    from zkref.lora.committed import CommittedLoRACircuit
    from zkref.models.digest import model_digest
    from zkref.lora.circuit import LoRACircuit
    from zkref.plonkish.mock_prover import MockProver
    from zkref.primitives.quant import QuantizedLoRA
    from zkref.lora.report import build_report
    from zkref.models.tiny_model import TINY_GPT2, build_tiny_gpt2, capture_lora_io, load_with_lora

    con = console or Console()
    result = DemoResult()
    with tempfile.TemporaryDirectory(prefix="zkref-demo-") as tmp:
        model_path = Path(model_dir) if model_dir is not None else Path(tmp) / "tiny-gpt2"
        con.rule("[bold]1. base model (built locally, never downloaded)")
        if not (model_path / "model.safetensors").exists():
            build_tiny_gpt2(model_path, seed=seed)
        con.print(f"GPT-2 {TINY_GPT2} saved with save_pretrained in {model_path}")
        digest = model_digest(model_path, progress=True)
        con.print(f"base-model digest (Poseidon, {digest.format_version}): [cyan]{digest.hex}[/] "
                  f"over {digest.n_parameters:,} parameters")

        con.rule("[bold]2. LoRA adapter and activations")
        peft_model = load_with_lora(model_path, rank=rank, alpha=alpha, seed=seed)
        token_ids = [int(t) for t in np.random.default_rng(seed).integers(0, TINY_GPT2["vocab_size"], tokens)]
        cap = capture_lora_io(peft_model, token_ids)
        d_out, d_in = cap.lora_B.shape[0], cap.lora_A.shape[1]
        con.print(f"{cap.module}: lora_A {cap.lora_A.shape}, lora_B {cap.lora_B.shape}, alpha {cap.alpha:g}, "
                  f"{tokens} tokens {token_ids}")

        con.rule("[bold]3. quantise and mock-prove  y_q = B_q · requant(A_q · x_q)")
        q = QuantizedLoRA.from_float(cap.lora_A, cap.lora_B, cap.alpha, cap.x)
        x_q = q.quantize_x(cap.x)
        circuit = LoRACircuit(d_in, d_out, rank, tokens, lanes, strategy, q.shift, q.A_q, q.B_q, x_q)
        t0 = time.perf_counter()
        prover = MockProver(circuit, circuit.public_inputs())
        failures = prover.verify()
        t_prove = time.perf_counter() - t0
        result.satisfied = not failures
        verdict = "[green]satisfied[/]" if result.satisfied else f"[red]{len(failures)} failures[/]"
        con.print(f"int4 weights, int8 activations, shift {q.shift}, {lanes} lanes: k={prover.k}, {verdict} "
                  f"in {t_prove:.3f} s")
        for f in failures[:5]:
            con.print(f"  {f}")

        con.rule("[bold]4. dequantise and compare with peft's float delta")
        check = q.check(cap.x, circuit.y_q)
        peft_err = float(np.abs(q.dequantize(circuit.y_q) - cap.delta).max())
        result.within_bound = check["within_bound"]
        con.print(f"max |dequantised − float delta| = {check['max_abs_error']:.4g} ≤ proven bound "
                  f"{check['error_bound']:.4g}: {'[green]yes[/]' if check['within_bound'] else '[red]no[/]'} "
                  f"(against peft's own float32 output: {peft_err:.4g}; max |delta| = {np.abs(cap.delta).max():.4g})")

        con.rule("[bold]5. x private, x and the adapter bound by Poseidon commitments (bit-exact with EZKL's)")
        commitments = {
            "activations": activations_commitment(x_q), "adapter": adapter_commitment(q.A_q, q.B_q),
            "activations (packed int8)": activations_commitment_packed(x_q),
            "adapter (packed int4)": adapter_commitment_packed(q.A_q, q.B_q),
        }
        for name, value in commitments.items():
            con.print(f"{name:>26}: 0x{value:064x}")
        proven = []
        for mode, keys in (("plain", ("activations", "adapter")),
                           ("packed", ("activations (packed int8)", "adapter (packed int4)"))):
            committed = CommittedLoRACircuit(circuit, mode)
            public = committed.public_inputs()
            t0 = time.perf_counter()
            c_prover = MockProver(committed, public)
            ok = not c_prover.verify() and public[0] == [commitments[k] for k in keys]
            proven.append(ok)
            cost = cost_of_layout(c_prover.layout, mode)
            con.print(f"in-circuit {mode} commitments: public = (digests, y_q); k={c_prover.k}, "
                      f"{cost.rows_used:,} rows, {time.perf_counter() - t0:.2f} s: "
                      + ("[green]satisfied, digests equal the reference[/]" if ok else "[red]FAILED[/]"))
        result.commitment_proven = all(proven)

        con.rule("[bold]6. audit: perturb advice cells, look for under-constrained ones")
        report = audit_prover(prover, name="LoRACircuit", sample=audit_sample, seed=seed)
        result.audit_clean = report.ok
        con.print(report.render(limit=10))

        con.rule("[bold]7. accounting")
        cost = cost_of_layout(prover.layout, f"LoRACircuit {d_in}→{d_out} r={rank} T={tokens}")
        con.print(cost.rich_table())
        rep = build_report(d_in=d_in, d_out=d_out, rank=rank, tokens=tokens, lanes=lanes)
        con.print(rep.rich_table())

        result.figures = {"k": prover.k, "prove_s": t_prove, "shift": q.shift, "digest": digest.hex,
                          "max_abs_error": check["max_abs_error"], "error_bound": check["error_bound"],
                          "rows_used": cost.rows_used, "proof_bytes_estimate": cost.proof.bytes,
                          "commitments": {k: f"0x{v:064x}" for k, v in commitments.items()}}
    con.rule("[bold green]demo complete: every check passed" if result.ok else "[bold red]demo: a check failed")
    return result
