"""Benchmark: Poseidon permutation (reference, fast twin, ezkl) and model-digest throughput, extrapolated to GPT-2 small.

Writes benchmarks/results/poseidon.json and .md. Timings live here, never in test asserts.
    .venv/bin/python benchmarks/bench_poseidon.py [--gpt2-small]
--gpt2-small builds a random GPT-2-small (124M fp32 parameters, ~500 MB) locally and digests it for real (minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
import timeit
from pathlib import Path

from zkref.models.digest import BYTES_PER_ELEMENT, model_digest
from zkref.primitives.field import P, felt_to_str
from zkref.primitives.poseidon import CAPACITY_INIT, poseidon_hash, poseidon_permutation, poseidon_permutation_fast, \
    sponge_absorb_fast

from timing import best_of

RESULTS = Path(__file__).parent / "results"
GPT2_SMALL_PARAMS = 124_439_808  # GPT2Model (no tied lm_head copy): what save_pretrained writes
BENCH_CONFIG = dict(n_layer=2, n_embd=256, n_head=4, vocab_size=2048, n_positions=128)


def machine_speed_ms() -> float:
    """A fixed pure-Python loop (best of 3): this shared VM's speed drifts up to ~2x, so record it with the results."""
    return round(min(timeit.repeat("sum(range(100000))", number=50, repeat=3)) * 1e3, 1)


def permutation_figures(repeat: int) -> dict:
    """Best-of-`repeat` µs per permutation; implementations interleaved in every repeat so drift hits all alike."""
    rng = random.Random(1)
    states = [(rng.randrange(P), rng.randrange(P)) for _ in range(200)]
    msg = [rng.randrange(P) for _ in range(2000)]
    poseidon_hash(msg[:2])  # build the constants outside the timings
    cases = {
        "reference_us_per_permutation": (lambda: [poseidon_permutation(s) for s in states], len(states)),
        "fast_us_per_permutation": (lambda: [poseidon_permutation_fast(s) for s in states], len(states)),
        "fast_sponge_us_per_element": (lambda: sponge_absorb_fast((0, CAPACITY_INIT), msg), len(msg)),
    }
    try:
        import ezkl
    except ImportError:
        ezkl = None
    else:
        strs = [felt_to_str(v) for v in msg]
        cases["ezkl_us_per_element"] = (lambda: ezkl.poseidon_hash(strs), len(msg))
    best = {k: float("inf") for k in cases}
    for _ in range(repeat):
        for k, (fn, n) in cases.items():
            best[k] = min(best[k], best_of(fn, 1)[0] / n)
    out = {k: round(v * 1e6, 1) for k, v in best.items()}
    out.setdefault("ezkl_us_per_element", None)
    out["speedup_fast_vs_reference"] = round(best["reference_us_per_permutation"]
                                             / best["fast_sponge_us_per_element"], 2)
    return out


def build_gpt2(path: Path, **config) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(bos_token_id=0, eos_token_id=0, **config)
    transformers.GPT2Model(cfg).save_pretrained(path)


def digest_figures(workers: int, config: dict, label: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        build_gpt2(Path(tmp), **config)
        t0 = time.perf_counter()
        d = model_digest(tmp, progress=True, use_cache=False, workers=workers, format_version="zkref-model-digest/1")
        seconds = time.perf_counter() - t0
    return {"model": label, "workers": workers, "parameters": d.n_parameters, "bytes": d.n_bytes,
            "elements": d.n_elements, "seconds": round(seconds, 2),
            "elements_per_s": round(d.n_elements / seconds), "mb_per_s": round(d.n_bytes / seconds / 1e6, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--gpt2-small", action="store_true", help="also digest a locally built random GPT-2 small")
    args = ap.parse_args()
    cores = os.cpu_count() or 1

    speed_before = machine_speed_ms()
    perm = permutation_figures(args.repeat)
    label = "GPT-2 " + ", ".join(f"{k}={v}" for k, v in BENCH_CONFIG.items())
    runs = [digest_figures(1, BENCH_CONFIG, label), digest_figures(min(2, cores), BENCH_CONFIG, label)]
    gpt2_bytes = 4 * GPT2_SMALL_PARAMS
    gpt2_elements = -(-gpt2_bytes // BYTES_PER_ELEMENT)
    best = max(runs, key=lambda r: r["elements_per_s"])
    extrapolated = {"parameters": GPT2_SMALL_PARAMS, "bytes": gpt2_bytes, "elements": gpt2_elements,
                    "from_run_workers": best["workers"],
                    "seconds": round(gpt2_elements / best["elements_per_s"]),
                    "minutes": round(gpt2_elements / best["elements_per_s"] / 60, 1)}
    result = {"machine": {"python": platform.python_version(), "processor": platform.machine(), "cpus": cores,
                          "loop_ms_before": speed_before, "loop_ms_after": machine_speed_ms()},
              "poseidon": perm, "digest_runs": runs, "gpt2_small_extrapolated": extrapolated}
    if args.gpt2_small:
        result["gpt2_small_measured"] = digest_figures(min(2, cores), {}, "GPT-2 small (random init)")

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "poseidon.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Poseidon and model-digest benchmark", "",
        f"Python {result['machine']['python']}, {cores} CPUs. Generated by `benchmarks/bench_poseidon.py`.",
        f"This shared VM's speed drifts up to ~2x: a fixed Python loop took {speed_before} ms before and "
        f"{result['machine']['loop_ms_after']} ms after (lower is faster; ~90 ms when undisturbed). "
        "Permutation figures are best-of interleaved repeats; digest runs are single wall-clock runs.", "",
        "| implementation | µs |", "|---|---|",
        f"| reference permutation (`poseidon_permutation`) | {perm['reference_us_per_permutation']} |",
        f"| fast permutation (`poseidon_permutation_fast`, gmpy2, validated call) | {perm['fast_us_per_permutation']} |",
        f"| fast sponge, per absorbed element (`sponge_absorb_fast`) | {perm['fast_sponge_us_per_element']} |",
        f"| `ezkl.poseidon_hash`, per element of a 2000-element message | {perm['ezkl_us_per_element']} |", "",
        "| model | workers | parameters | MB | field elements | s | elements/s | MB/s |", "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs + ([result["gpt2_small_measured"]] if args.gpt2_small else []):
        md.append(f"| {r['model']} | {r['workers']} | {r['parameters']:,} | {r['bytes'] / 1e6:.1f} | "
                  f"{r['elements']:,} | {r['seconds']} | {r['elements_per_s']:,} | {r['mb_per_s']} |")
    md += ["", f"Extrapolated GPT-2 small ({GPT2_SMALL_PARAMS:,} fp32 parameters, {gpt2_bytes / 1e6:.0f} MB, "
               f"{gpt2_elements:,} elements) at the {best['workers']}-worker rate: "
               f"**{extrapolated['seconds']} s ≈ {extrapolated['minutes']} min** (one-off; later calls hit the "
               "`zkref-digest.json` cache after re-hashing the files with SHA-256).", ""]
    if args.gpt2_small:
        m = result["gpt2_small_measured"]
        md += [f"Measured GPT-2 small: **{m['seconds']} s ≈ {m['seconds'] / 60:.1f} min** with {m['workers']} workers "
               f"({m['seconds'] / extrapolated['seconds']:.2f}x the extrapolation).", ""]
    (RESULTS / "poseidon.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
