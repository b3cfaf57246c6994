"""A whole generation, verified: a base-model client generating N tokens through a contributor serving a LoRA on
c_attn in all 12 layers of a GPT-2-small-shaped model (768→2304, r=8), every call proven with EZKL and verified.

Measured per configuration — the server proving call by call, or batching each session's queued calls of a module
(one proof of stacked rows, zkref.protocol.server.ProvingQueue), with 1 or 2 workers, in a local process pool or on
a local Ray instance:
  - the client's forward time (the generation itself: every delta is answered at once) and the time until every
    proof is verified, and tokens/s end to end (generated tokens ÷ that total);
  - proofs made, and proving seconds (the workers' `prove` phase, summed) per generated token: the per-token proving
    cost that batching divides.
Writes benchmarks/results/generation.{json,md} and generation.png.

The model is built locally (random weights, GPT-2-small's shapes: 12 layers, n_embd 768, 12 heads; a 1,024-token
vocabulary to keep it light — the vocabulary does not touch the adapted modules); nothing is downloaded. x and y are
polycommit and the adapter fixed (the fastest binding measured, benchmarks/results/ezkl.md). The commitment's
allowed T are (1, 16) for batching and (1,) for call by call (a one-token call is then proven at T = 1, not padded).

    python benchmarks/bench_generation.py [--tokens N] [--quick] [--only NAME ...] [--results DIR] [--cache DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from harness import RESULTS, Machine, bench_cache, heavy_lock, versions, write_results  # noqa: E402

CONFIGS = {
    "call by call, 1 worker": dict(batching=False, workers=1, ray=False),
    "batched, 1 worker": dict(batching=True, workers=1, ray=False),
    "call by call, 2 workers": dict(batching=False, workers=2, ray=False),
    "batched, 2 workers": dict(batching=True, workers=2, ray=False),
    "batched, 2 workers, Ray local": dict(batching=True, workers=2, ray=True),
}
GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=1024, n_positions=128)
QUICK = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32)


def build(root: Path, shape: dict, rank: int) -> tuple[Path, Path]:
    from zkref.models.tiny_model import build_tiny_gpt2, save_random_lora

    base, adapter = root / "base", root / "adapter"
    if not (base / "model.safetensors").exists():
        build_tiny_gpt2(base, seed=0, **shape)
    if not (adapter / "adapter_model.safetensors").exists():
        save_random_lora(base, adapter, seed=1, r=rank, lora_alpha=2 * rank, target_modules=["c_attn"],
                         fan_in_fan_out=True, lora_dropout=0.0)
    return base, adapter


def run_config(name: str, config: dict, base: Path, adapter: Path, cache: Path, tokens: int, max_bucket: int) -> dict:
    """One generation through a fresh server; the server's answers give each proof's scope and worker timings."""
    import httpx

    from zkref.pipeline import Bindings
    from zkref.protocol import messages as m
    from zkref.protocol.client import BaseModelClient
    from zkref.protocol.contributor import load_contributor
    from zkref.protocol.provers import make_prover
    from zkref.protocol.server import ServerConfig, ServerThread, create_app, publish_commitment

    bindings = Bindings(x="polycommit", adapter="fixed", y="polycommit")
    contributor = load_contributor(base_dir=base, adapter_dir=adapter, bindings=bindings)
    buckets = (1, max_bucket) if config["batching"] else (1,)
    server_config = ServerConfig(backend="ezkl", backend_options={"cache_dir": str(cache)}, max_tokens=1,
                                 token_buckets=buckets, batching=config["batching"], max_queue=1024,
                                 max_queue_per_client=1024, max_results=4096, max_results_per_client=4096,
                                 max_result_bytes=1 << 30, max_result_bytes_per_client=1 << 30,
                                 prove_timeout=3600.0)            # one client's whole generation is kept
    t0 = time.perf_counter()
    commitment = publish_commitment(contributor, server_config)
    commit_seconds = time.perf_counter() - t0
    prover = make_prover(workers=config["workers"], ray_address="local" if config["ray"] else None)
    prover.warm_up()
    app = create_app(contributor, server_config, prover, commitment)
    with ServerThread(app, prover=prover) as server:
        with BaseModelClient(base_dir=base, contributors=[server.url], cache_dir=str(cache), anchors=[commitment],
                             proof_timeout=7200.0) as client:
            result = client.generate([7], tokens)
        answers = [m.CallStatus.model_validate_json(httpx.get(f"{server.url}/v1/calls/{c.call_id}").content)
                   for c in result.calls]
    proofs = {}
    for status in answers:
        if status.scope is not None:
            proofs[(status.scope.module, tuple(r.call_id for r in status.scope.calls))] = status
    prove_seconds = sum(s.timings.get("prove", 0.0) for s in proofs.values())
    job_seconds = sum(s.timings.get("job", 0.0) for s in proofs.values())
    sizes = [sum(r.tokens for r in s.scope.calls) for s in proofs.values()]
    return {"name": name, **config, "tokens": tokens, "modules": len(contributor.modules),
            "verified": result.verified, "calls": len(result.calls), "proofs": len(proofs),
            "rows_per_proof_mean": sum(sizes) / len(sizes) if sizes else 0.0,
            "proven_T": sorted({s.scope.tokens for s in proofs.values()}),
            "forward_s": result.timings["forward"], "verify_wait_s": result.timings["verify"],
            "total_s": result.timings["total"], "tokens_per_s": result.timings["tokens_per_second"],
            "prove_s_sum": prove_seconds, "job_s_sum": job_seconds,
            "prove_s_per_token": prove_seconds / tokens, "commit_s": commit_seconds,
            "failures": [c.reason for c in result.calls if not c.verified][:3]}


def render(data: dict) -> str:
    rows = data["runs"]
    base = next((r for r in rows if r["name"] == "call by call, 1 worker"), None)
    lines = [f"# A whole generation, verified ({data['model']})", "",
             f"{data['tokens']} generated tokens after a 1-token prompt; LoRA r={data['rank']} on c_attn in all "
             f"{data['layers']} layers; EZKL, x and y polycommit, adapter fixed; {data['machine']}.", "",
             "| configuration | verified | proofs | rows/proof | proving s per token | ÷ call by call (1 worker) | "
             "forward s | wait for proofs s | tokens/s (all verified) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{base['prove_s_per_token'] / r['prove_s_per_token']:.2f}×" if base and r["prove_s_per_token"] else "—"
        lines.append(f"| {r['name']} | {'yes' if r['verified'] else 'NO'} | {r['proofs']} | "
                     f"{r['rows_per_proof_mean']:.1f} | {r['prove_s_per_token']:.2f} | {ratio} | {r['forward_s']:.1f} | "
                     f"{r['verify_wait_s']:.1f} | {r['tokens_per_s']:.3f} |")
    lines += ["", "Proving seconds per token: the workers' EZKL `prove` phase summed over every proof, divided by the "
              "generated tokens (each token is one call per module). The commitment (every module's keys for each "
              "allowed T) is made once before serving and cached: "
              + ", ".join(f"{r['name']}: {r['commit_s']:.0f} s" for r in rows) + "."]
    return "\n".join(lines) + "\n"


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    names = [r["name"].replace(", ", "\n") for r in rows]
    colours = ["#888888" if not r["batching"] else "#2b7bba" for r in rows]
    for ax, key, label in ((left, "prove_s_per_token", "EZKL proving seconds per generated token"),
                           (right, "tokens_per_s", "tokens/s, every proof verified")):
        values = [r[key] for r in rows]
        bars = ax.bar(range(len(rows)), values, color=colours)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v >= 0.1 else f"{v:.3f}" for v in values], padding=2)
        ax.set_xticks(range(len(rows)), names, fontsize=8)
        ax.set_ylabel(label)
        ax.set_ylim(0, max(values) * 1.18 if values and max(values) > 0 else 1)
    from matplotlib.patches import Patch

    left.legend(handles=[Patch(color="#888888", label="call by call"), Patch(color="#2b7bba", label="batched")],
                loc="upper right")
    fig.suptitle(f"{data['tokens']}-token generation, {data['layers']} c_attn LoRA modules ({data['model']})")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=16, help="tokens to generate")
    ap.add_argument("--only", action="append", default=None, choices=list(CONFIGS))
    ap.add_argument("--quick", action="store_true", help="a 2-layer 32-wide model and 4 tokens (a smoke test)")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--cache", default=None, help="EZKL cache (default $ZKREF_BENCH_CACHE or ~/.cache/zkref-bench)")
    ap.add_argument("--render", action="store_true", help="rewrite the markdown and plot from the JSON only")
    args = ap.parse_args()
    results = Path(args.results)
    if args.render:
        data = json.loads((results / "generation.json").read_text())
        write_results(results, "generation", data, render(data))
        plot(data, results / "generation.png")
        return 0
    if args.tokens < 2 or args.tokens > 64:
        ap.error("--tokens must be 2..64")
    shape, tokens = (QUICK, 4) if args.quick else (GPT2_SMALL, args.tokens)
    rank = 2 if args.quick else 8
    cache = bench_cache(args.cache)
    names = args.only or list(CONFIGS)
    runs = []
    with tempfile.TemporaryDirectory(prefix="zkref-generation-") as tmp:
        base, adapter = build(Path(tmp), shape, rank)
        for name in names:
            print(f"== {name}", flush=True)
            with heavy_lock(name):
                runs.append(run_config(name, CONFIGS[name], base, adapter, cache, tokens,
                                       max_bucket=16 if tokens >= 4 else 4))
            r = runs[-1]
            print(f"   verified={r['verified']} proofs={r['proofs']} prove/token={r['prove_s_per_token']:.2f} s "
                  f"tokens/s={r['tokens_per_s']:.3f}", flush=True)
    data = {"machine": Machine.here().describe(), "versions": versions(), "load_avg": os.getloadavg(),
            "model": "2-layer 32-wide GPT-2 (quick)" if args.quick else "GPT-2-small shape",
            "layers": shape["n_layer"], "rank": rank, "tokens": tokens, "runs": runs}
    results.mkdir(parents=True, exist_ok=True)
    write_results(results, "generation", data, render(data))
    plot(data, results / "generation.png")
    return 0 if all(r["verified"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
