"""`zkref demo`: a contributor and a base-model user, end to end over HTTP, on a tiny GPT-2 built locally.

1. build and save a tiny GPT-2 (random weights, safetensors) and a peft LoRA adapter on c_attn (random A and B);
2. the contributor: `zkref serve`'s server on a free localhost port, calibrated on its own prompt, proving every call
   in a background process with the chosen backend (default EZKL: real Halo2/KZG proofs, dev SRS);
3. the base-model user: `BaseModelClient` runs its own copy of the base model, sends each c_attn module's quantised
   activations, adds the returned deltas, then fetches and verifies every call's proof against what it sent and got;
4. the accuracy against the float peft model — the demo plays both roles, so it holds the adapter for this
   comparison; a real client would not.

`DemoResult.ok` is true only if every call's proof verified; `make demo` exits 0 only then.
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console

from zkref.cli.console import out, phases, quiet_model_loading
from zkref.cli.options import SEED, integer

if TYPE_CHECKING:
    from zkref.protocol.client import Accuracy, CallReport


@dataclass
class DemoResult:
    """What the demo established; `ok` is the exit status's source."""

    calls: list[CallReport] = field(default_factory=list)
    verified: bool = False
    accuracy: Accuracy | None = None
    figures: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.calls) and self.verified and all(c.verified for c in self.calls)


def run_demo(model_dir: str | Path | None = None, *, backend: str = "ezkl", tokens: int = 4, generate: int = 3,
             rank: int = 4, alpha: float = 8.0, seed: int = 0, cache_dir: str | Path | None = None,
             console: Console | None = None, quiet: bool = False) -> DemoResult:
    """Run every step, printing as it goes (and, unless `quiet`, a spinner on stderr through the long ones); returns
    the figures (also used by the test of this demo).

    The client sends a prompt of `tokens` tokens, then generates `generate` more (one call per module per step); the
    server proves a session's queued calls of a module together, at the committed T of `tokens` or 4·`tokens`."""
    from zkref.models.tiny_model import TINY_GPT2, build_tiny_gpt2, save_random_lora
    from zkref.protocol.client import BaseModelClient
    from zkref.protocol.contributor import load_contributor
    from zkref.protocol.provers import ProcessProver
    from zkref.protocol.server import ServerConfig, ServerThread, create_app, publish_commitment

    con = console or Console()
    result = DemoResult()
    quiet_model_loading()
    with tempfile.TemporaryDirectory(prefix="zkref-demo-") as tmp:
        root = Path(model_dir) if model_dir is not None else Path(tmp)
        base, adapter = root / "tiny-gpt2", root / f"lora-c_attn-r{rank}-seed{seed}"
        con.rule("[bold]1. base model and adapter (built locally, never downloaded)")
        with phases("building the tiny model and its adapter", quiet=quiet):
            if not (base / "model.safetensors").exists():
                build_tiny_gpt2(base, seed=seed)
            if not (adapter / "adapter_model.safetensors").exists():
                save_random_lora(base, adapter, seed=seed, r=rank, lora_alpha=alpha, target_modules=["c_attn"],
                                 fan_in_fan_out=True, lora_dropout=0.0)
        g = TINY_GPT2
        con.print(f"GPT-2 with random weights ({g['n_layer']} layers, width {g['n_embd']}, {g['n_head']} heads, "
                  f"vocabulary {g['vocab_size']}) in {base}\npeft LoRA r={rank}, alpha={alpha:g} on c_attn in "
                  f"{adapter}")

        con.rule(f"[bold]2. the contributor serves the adapter (backend {backend})")
        with phases("contributor", quiet=quiet) as phase:
            phase("loading the model and adapter, digesting the base model, calibrating")
            contributor = load_contributor(base_dir=base, adapter_dir=adapter)
            options = {"cache_dir": str(cache_dir)} if backend == "ezkl" and cache_dir is not None else {}
            config = ServerConfig(backend=backend, backend_options=options, max_tokens=tokens,
                                  token_buckets=(tokens, 4 * tokens))
            phase("committing: one anchor per module and allowed T (EZKL: circuit and key setup)")
            commitment = publish_commitment(contributor, config)
            phase("starting the proving process")
            prover = ProcessProver(workers=1)
            prover.warm_up()
            app = create_app(contributor, config, prover, commitment)
        con.print(f"adapter commitment [cyan]{commitment.id}[/] (anchors for T {commitment.tokens}): what clients pin")
        con.print(f"base-model digest ({contributor.base_digest.format_version}): "
                  f"[cyan]{contributor.base_digest.hex}[/]")
        for served in contributor.modules.values():
            q = served.quantised
            con.print(f"  {served.name}: {q.d_in}→{q.d_out} r={q.rank}, peft scaling {q.scaling:g}, shift {q.shift} "
                      f"and scale_x {q.scale_x:.4g} fixed from the contributor's calibration prompt")
        with ServerThread(app, prover=prover) as server:
            con.print(f"listening on {server.url} (manifest {server.url}/v1/manifest, schema "
                      f"{server.url}/openapi.json); proofs in a background process")

            con.rule("[bold]3. the base-model user runs its own model; each c_attn call goes to the contributor")
            prompt = [int(t) for t in np.random.default_rng(seed).integers(0, TINY_GPT2["vocab_size"], tokens)]
            with phases("base-model user: running the model, then fetching and verifying every call's proof "
                        f"({backend} proves in the background)", quiet=quiet), \
                    BaseModelClient(base_dir=base, contributors=[server.url], reference_adapters=[adapter],
                                    cache_dir=cache_dir, anchors=[commitment]) as client:
                run = client.generate(prompt, generate)
        result.calls, result.verified, result.accuracy = list(run.calls), run.verified, run.accuracy
        con.print(f"prompt {prompt}, then {len(run.generated_ids)} generated tokens {list(run.generated_ids)}: "
                  f"{len(run.calls)} calls, proven in {len({c.proof_id for c in run.calls})} proof(s)")
        for c in run.calls:
            mark = "[green]verified[/]" if c.verified else "[red]NOT verified[/]"
            took = f", proof ready after {c.proof_seconds:.1f} s" if c.proof_seconds else ""
            con.print(f"  {c.label} ({c.tokens} token{'s' if c.tokens > 1 else ''}): {mark} — {c.reason}{took}")
        for w in run.warnings:
            con.print(f"  [yellow]{w}[/]")

        con.rule("[bold]4. accuracy against the float peft model (evaluation only: needs the adapter)")
        a = run.accuracy
        for mod in a.modules:
            con.print(f"  {mod.module}: relative error of the delta {mod.relative_error:.2%} "
                      f"(max |error| {mod.max_abs_error:.3g} of max |delta| {mod.max_abs_delta:.3g})")
        con.print(f"  logits: max error {a.max_logit_error:.3g}, top-1 agreement {a.top1_agreement:.0%}")
        result.figures = {"digest": contributor.base_digest.hex, "prompt": prompt, "backend": backend,
                          "calls": len(run.calls), "max_logit_error": a.max_logit_error,
                          "top1_agreement": a.top1_agreement,
                          "relative_errors": {mod.module: mod.relative_error for mod in a.modules}}
    verdict = (f"{len(result.calls)} of {len(result.calls)} calls verified" if result.ok else
               f"{sum(not c.verified for c in result.calls)} of {len(result.calls)} calls NOT verified")
    con.rule(f"[bold green]demo complete: every call's proof verified ({verdict})" if result.ok
             else f"[bold red]demo: {verdict}")
    return result


def cmd_demo(args: argparse.Namespace) -> int:
    return 0 if run_demo(args.model_dir, backend=args.backend, tokens=args.tokens, generate=args.generate,
                         rank=args.rank, seed=args.seed, console=out, quiet=args.quiet).ok else 1


def register(subparsers) -> None:
    from zkref.models.tiny_model import TINY_GPT2

    p = subparsers.add_parser(
        "demo", help="contributor server + base-model client end to end on a tiny local model",
        description="A contributor and a base-model user end to end over HTTP on a tiny GPT-2 built locally: the "
                    "contributor serves a peft LoRA adapter, every call is proven in the background and the user "
                    "verifies each proof. Exit 0 only if every proof verified.")
    p.add_argument("--backend", choices=["ezkl", "zkref"], default="ezkl",
                   help="ezkl: real zero-knowledge proofs; zkref: the fast mock check")
    p.add_argument("--model-dir", default=None, metavar="DIR",
                   help="keep the tiny model and adapter here (default: a temporary directory)")
    p.add_argument("--tokens", type=integer(1, TINY_GPT2["n_positions"] // 4), default=4, metavar="T",
                   help="tokens in the user's prompt (proven at T and 4·T: at most a quarter of the tiny model's "
                        "context)")
    p.add_argument("--generate", type=integer(0, TINY_GPT2["n_positions"] // 2), default=3, metavar="N",
                   help="tokens the user generates after the prompt, each a call per module, proven together")
    p.add_argument("--rank", type=integer(1, TINY_GPT2["n_embd"]), default=4, metavar="R",
                   help="the adapter's LoRA rank (at most the tiny model's width)")
    p.add_argument("--seed", type=SEED, default=0, metavar="N", help="seed of the model, the adapter and the prompt")
    p.add_argument("--quiet", action="store_true", help="no progress spinner on stderr")
    p.set_defaults(func=cmd_demo)
