"""One EZKL proof per module vs one batch proof (several modules in one circuit): prove (warm), setup, verify, proof
size, peak RSS, k and rows, per workload. Writes benchmarks/results/ezkl_batch.{json,md}.

Workloads: a Llama-3-8B layer's attention modules (q 4096→4096, k/v 4096→1024, o 4096→4096; r=16, T=1), GPT-2-small's
c_attn + c_proj (768→2304, 768→768; r=8, T=15) and a small shape where per-proof overhead dominates (4 × 64→64, r=4,
T=1); x and y polycommit, adapters fixed. Every module and every batch runs in fresh subprocesses: one cold (settings,
compile, setup, witness, prove, verify) and one warm (prove and verify again from the cache; its peak RSS is the
prover's). The cost model's predicted rows (backends/ezkl/cost.py) are recorded beside EZKL's.

    flock /tmp/zkref-heavy.lock python benchmarks/bench_ezkl_batch.py [--only NAME ...] [--render]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import run_cold_then_warm  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODES = {"pc/fixed/pc": ("polycommit", "fixed", "polycommit")}


def _member(name: str, d_in: int, d_out: int, rank: int, tokens: int, shift: int) -> dict:
    return dict(name=name, d_in=d_in, d_out=d_out, rank=rank, tokens=tokens, shift=shift)


WORKLOADS = {
    "llama3-8b layer q,k,v": [_member("q_proj", 4096, 4096, 16, 1, 10), _member("k_proj", 4096, 1024, 16, 1, 10),
                              _member("v_proj", 4096, 1024, 16, 1, 10)],
    "llama3-8b layer q,k,v,o": [_member("q_proj", 4096, 4096, 16, 1, 10), _member("k_proj", 4096, 1024, 16, 1, 10),
                                _member("v_proj", 4096, 1024, 16, 1, 10), _member("o_proj", 4096, 4096, 16, 1, 10)],
    "gpt2-small c_attn,c_proj T15": [_member("c_attn", 768, 2304, 8, 15, 9), _member("c_proj", 768, 768, 8, 15, 9)],
    "small 4×64→64": [_member(f"m{i}", 64, 64, 4, 1, 6) for i in range(4)],
}
"""Shifts as the project's calibrated modules use them (benchmarks/bench_ezkl.py: 10 at d=4096, 9 at d=768)."""
BATCH_K_VARIANTS = {"llama3-8b layer q,k,v": (13,), "llama3-8b layer q,k,v,o": (13,),
                    "gpt2-small c_attn,c_proj T15": (13,)}
"""Batches also proven at a forced k: the layout rule caps batches at K_SPREAD_BATCH = 14, single modules at 13."""


def _child(spec: dict, cache: str, phase: str) -> dict:
    """Runs in a subprocess: one module or one batch, cold or warm; prints one JSON line."""
    import numpy as np

    sys.path.insert(0, str(HERE.parent))
    from backends.ezkl import EzklBackend
    from backends.ezkl.cost import predict
    from zkref.lora.batch import LoRABatch
    from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness

    x_b, a_b, y_b = MODES[spec["mode"]]
    statements, witnesses = [], []
    for i, m in enumerate(spec["members"]):
        st = LoRAStatement(shape=LoRAShape(d_in=m["d_in"], d_out=m["d_out"], rank=m["rank"], tokens=m["tokens"]),
                           shift=m["shift"], x_binding=x_b, adapter_binding=a_b, y_binding=y_b)
        rng = np.random.default_rng(1000 + i)
        statements.append(st)
        witnesses.append(LoRAWitness(A_q=rng.integers(-8, 8, st.shape.a_shape),
                                     B_q=rng.integers(-8, 8, st.shape.b_shape),
                                     x_q=rng.integers(-128, 128, st.shape.x_shape)))
    be = EzklBackend(cache_dir=cache, logrows=spec.get("logrows"))
    if spec["kind"] == "batch":
        target = LoRABatch.of([(m["name"], s) for m, s in zip(spec["members"], statements)])
        prove = lambda: be.prove_batch(target, witnesses)  # noqa: E731
        anchor = be.anchor_batch(target, witnesses) if phase == "warm" else None
        verify = lambda r, a: be.verify_batch(target, r.publics, r.proof, anchor=a)  # noqa: E731
        prepare = lambda: be.prepare_batch(target, witnesses)  # noqa: E731
    else:
        target, witness = statements[0], witnesses[0]
        prove = lambda: be.prove(target, witness)  # noqa: E731
        anchor = be.anchor(target, witness) if phase == "warm" else None
        verify = lambda r, a: be.verify(target, r.public, r.proof, anchor=a)  # noqa: E731
        prepare = lambda: be.prepare(target, witness)  # noqa: E731
    t0 = time.perf_counter()
    result = prove()
    total = time.perf_counter() - t0
    verify_times, verdict = [], None
    for _ in range(3):
        t1 = time.perf_counter()
        verdict = verify(result, anchor)
        verify_times.append(time.perf_counter() - t1)
    meta = result.proof.meta
    prep = prepare()
    predicted = predict(target)
    return {"phase": phase, "timings": result.timings, "prove_total_s": total, "verify_s": min(verify_times),
            "verified": bool(verdict), "verdict": verdict.reason, "k": meta["logrows"],
            "num_inner_cols": meta["num_inner_cols"], "rows": meta["rows"], "predicted_rows": predicted.rows,
            "predicted_k": predicted.logrows, "einsum_cells": predicted.einsum_cells,
            "layout": meta["layout_reason"], "proof_bytes": meta["proof_bytes"],
            "proof_json_bytes": len(result.proof.data), "pk_mib": (prep.keys_dir / "pk.key").stat().st_size / 2**20,
            "vk_bytes": len(result.proof.vk), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load_average": os.getloadavg()[0], "versions": meta["versions"]}


def _run(spec: dict, cache: Path, timeout: float) -> dict:
    out = run_cold_then_warm(__file__, spec, cache, timeout)
    for entry in (cache / "ezkl" / "circuits").glob("*"):       # keys are big: keep disk use bounded
        shutil.rmtree(entry, ignore_errors=True)
    return out


def _figures(run: dict) -> dict | None:
    cold, warm = run.get("cold", {}), run.get("warm", {})
    if "timings" not in cold or "timings" not in warm:
        return None
    return {"k": warm["k"], "rows": warm["rows"], "predicted_rows": warm["predicted_rows"],
            "setup_s": cold["timings"]["setup"], "prove_s": warm["timings"]["prove"],
            "witness_s": warm["timings"]["witness"], "verify_s": warm["verify_s"],
            "proof_bytes": warm["proof_bytes"], "pk_mib": warm["pk_mib"], "peak_rss_mib": warm["peak_rss_mib"],
            "verified": warm["verified"] and cold["verified"], "load_average": warm["load_average"]}


def measure(name: str, members: list[dict], cache: Path, timeout: float) -> dict:
    """Each member alone, then the batch."""
    out = {"workload": name, "members": members, "modules": {}, "batch": None}
    for m in members:
        print(f"-- {name}: {m['name']} alone", flush=True)
        run = _run({"kind": "module", "members": [m], "mode": "pc/fixed/pc"}, cache, timeout)
        out["modules"][m["name"]] = {"raw": run, "figures": _figures(run)}
        print(json.dumps(out["modules"][m["name"]]["figures"]), flush=True)
    print(f"-- {name}: batch", flush=True)
    run = _run({"kind": "batch", "members": members, "mode": "pc/fixed/pc"}, cache, timeout)
    out["batch"] = {"raw": run, "figures": _figures(run)}
    print(json.dumps(out["batch"]["figures"]), flush=True)
    out["batch_variants"] = {}
    for k in BATCH_K_VARIANTS.get(name, ()):
        print(f"-- {name}: batch at k={k}", flush=True)
        run = _run({"kind": "batch", "members": members, "mode": "pc/fixed/pc", "logrows": k}, cache, timeout)
        out["batch_variants"][f"k={k}"] = {"raw": run, "figures": _figures(run)}
        print(json.dumps(out["batch_variants"][f"k={k}"]["figures"]), flush=True)
    return out


def summary(entry: dict) -> dict | None:
    """Per-module totals (sums; RSS and k maxima: the modules run one after another) against the batch."""
    figs = [m["figures"] for m in entry["modules"].values()]
    batch = entry["batch"]["figures"] if entry["batch"] else None
    if batch is None or any(f is None for f in figs):
        return None
    per = {"setup_s": sum(f["setup_s"] for f in figs), "prove_s": sum(f["prove_s"] for f in figs),
           "verify_s": sum(f["verify_s"] for f in figs), "proof_bytes": sum(f["proof_bytes"] for f in figs),
           "pk_mib": sum(f["pk_mib"] for f in figs), "peak_rss_mib": max(f["peak_rss_mib"] for f in figs),
           "rows": sum(f["rows"] for f in figs), "proofs": len(figs)}
    ratio = {k: (per[k] / batch[k] if batch[k] else None)
             for k in ("setup_s", "prove_s", "verify_s", "proof_bytes", "pk_mib", "peak_rss_mib", "rows")}
    return {"per_module": per, "batch": batch, "per_module_over_batch": ratio}


def markdown(data: dict) -> str:
    meta = data["meta"]
    lines = ["# One EZKL proof per module vs one batch proof", "",
             f"{meta['machine']}; ezkl {meta['versions'].get('ezkl')}; development SRS; x and y polycommit, adapters "
             "fixed; each module and each batch in fresh processes. prove = warm prove (keys cached); setup = cold "
             "setup; verify = best of 3 (with the pinned anchor); proof = transcript bytes; RSS = the warm process's "
             "peak (load keys, witness, prove, verify). `rows` is EZKL's num_rows (predicted by backends/ezkl/cost.py "
             "in brackets). load = 1-minute load average at the end of the warm run (2 cores).", ""]
    for entry in data["results"]:
        lines += [f"## {entry['workload']}", "",
                  "| proof | k | rows (predicted) | setup s | prove s | verify s | proof B | pk MiB | peak RSS MiB "
                  "| load |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        rows = [(n, m["figures"]) for n, m in entry["modules"].items()] + [("**batch**", entry["batch"]["figures"])]
        rows += [(f"batch, forced {k}", v["figures"]) for k, v in entry.get("batch_variants", {}).items()]
        for name, f in rows:
            if f is None:
                lines.append(f"| {name} | failed | | | | | | | | |")
                continue
            lines.append(f"| {name} | {f['k']} | {f['rows']:,} ({f['predicted_rows']:,}) | {f['setup_s']:.1f} | "
                         f"{f['prove_s']:.1f} | {f['verify_s']:.3f} | {f['proof_bytes']:,} | {f['pk_mib']:.0f} | "
                         f"{f['peak_rss_mib']:.0f} | {f['load_average']:.1f} |")
        s = summary(entry)
        if s:
            p, b, r = s["per_module"], s["batch"], s["per_module_over_batch"]
            lines += ["", f"Per module, {p['proofs']} proofs (sums; RSS is the largest): setup {p['setup_s']:.1f} s, "
                          f"prove {p['prove_s']:.1f} s, verify {p['verify_s']:.3f} s, {p['proof_bytes']:,} B, "
                          f"pk {p['pk_mib']:.0f} MiB, peak RSS {p['peak_rss_mib']:.0f} MiB. "
                          f"One batch: setup {b['setup_s']:.1f} s, prove {b['prove_s']:.1f} s, verify "
                          f"{b['verify_s']:.3f} s, {b['proof_bytes']:,} B, pk {b['pk_mib']:.0f} MiB, peak RSS "
                          f"{b['peak_rss_mib']:.0f} MiB.",
                      "", "Per module ÷ batch: " + ", ".join(f"{k} {v:.2f}×" for k, v in r.items() if v)]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run only workloads whose name contains one of these")
    ap.add_argument("--case-timeout", type=float, default=1800.0)
    ap.add_argument("--cache", help="cache root (default: a temporary directory, removed at the end)")
    ap.add_argument("--render", action="store_true", help="rewrite ezkl_batch.md from ezkl_batch.json and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="cold", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child), args.cache, args.phase)), flush=True)
        return
    path = RESULTS / "ezkl_batch.json"
    if args.render:
        (RESULTS / "ezkl_batch.md").write_text(markdown(json.loads(path.read_text())))
        return
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="zkref-bench-ezkl-batch-"))
    previous = json.loads(path.read_text())["results"] if path.exists() else []
    results = {r["workload"]: r for r in previous}
    try:
        for name, members in WORKLOADS.items():
            if args.only and not any(s in name for s in args.only):
                continue
            results[name] = measure(name, members, cache, args.case_timeout)
            for r in results.values():
                r["summary"] = summary(r)
            _write(path, [results[n] for n in WORKLOADS if n in results])
    finally:
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)


def _write(path: Path, results: list[dict]) -> None:
    import importlib.metadata as md

    versions = {}
    for pkg in ("ezkl", "torch"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "versions": versions, "date": time.strftime("%Y-%m-%d %H:%M")}
    data = {"meta": meta, "results": results}
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    (RESULTS / "ezkl_batch.md").write_text(markdown(data))


if __name__ == "__main__":
    main()
