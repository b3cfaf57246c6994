"""EZKL backend benchmark: per-phase times, peak RSS, k, columns and proof size per statement and binding mode.

Every case runs in fresh subprocesses (one cold: settings, compile, setup, witness, prove, verify; one warm: prove and
verify again from the cache, whose peak RSS is the prover's), sharing one development SRS per k. Cases that would
not fit the time budget are skipped and listed as such. Writes benchmarks/results/ezkl.{json,md}.

    python benchmarks/bench_ezkl.py [--budget SECONDS] [--only NAME ...] [--cache DIR] [--results DIR] [--quick]

Each case (cold and warm) holds the heavy-run lock (benchmarks/harness.py: /tmp/zkref-heavy.lock, ZKREF_HEAVY_LOCK).
--quick runs tiny cases only (smoke tests of the suite), written wherever --results points.
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

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from harness import heavy_lock, merge_entries, run_cold_then_warm, utc_now  # noqa: E402
SHIFT = {768: 9, 4096: 10}
"""Requantisation shifts of the measured modules (calibrated on activations; as in the project's facts)."""
MODES = {
    "pc/fixed/pc": ("polycommit", "fixed", "polycommit"),
    "pc/pc/pc": ("polycommit", "polycommit", "polycommit"),
    "pub/fixed/pub": ("public", "fixed", "public"),
    "pub/unbound/pub": ("public", "unbound", "public"),
    "hashed/hashed/pub": ("hashed", "hashed", "public"),
}
TARGETS = {
    "q_proj 4096→4096 r16 T1": {"prove_s": 10.0, "verify_s": 0.05, "proof_bytes": 8192, "rss_mib": 1024},
    "c_attn 768→2304 r8 T15": {"prove_s": 8.6},
}


def quick_cases() -> list[dict]:
    """--quick: the suite's tiny module (16→24, r=2, T=15, as bench_baseline --quick) in the three main modes."""
    return [dict(name=f"16→24 r2 T15 {mode}", d_in=16, d_out=24, rank=2, tokens=15, shift=5, mode=mode)
            for mode in ("pc/fixed/pc", "pc/pc/pc", "pub/fixed/pub")]


def cases() -> list[dict]:
    """The targets' shapes first, then the K_SPREAD sweep, the hashed-size ladder, and the rest of the grid."""
    def case(label, d_in, d_out, r, t, mode, **extra):
        return dict(name=f"{label} {mode}", d_in=d_in, d_out=d_out, rank=r, tokens=t, shift=SHIFT[d_in], mode=mode,
                    **extra)

    out = []
    targets = [("q_proj 4096→4096 r16 T1", 4096, 4096, 16, 1), ("c_attn 768→2304 r8 T15", 768, 2304, 8, 15)]
    for label, *shape in targets:
        out += [case(label, *shape, mode) for mode in ("pc/fixed/pc", "pc/pc/pc", "pub/fixed/pub")]
    for k in (12, 14):                    # the K_SPREAD sweep: k=13 is the chosen layout above
        for label, *shape in targets:
            out.append(case(f"{label} k={k}", *shape, "pc/fixed/pc", logrows=k))
    for d in (32, 64, 128, 176):          # hashed adapter and x: where MAX_HASHED_VALUES comes from
        out.append(dict(name=f"{d}→{d} r8 T1 hashed/hashed/pub", d_in=d, d_out=d, rank=8, tokens=1, shift=0,
                        mode="hashed/hashed/pub"))   # shift 0: where zkref's adapter message and EZKL's agree
    out.append(case("768→768 r8 T1", 768, 768, 8, 1, "pub/unbound/pub"))
    for d in (768, 4096):
        for r in (8, 16):
            for t in (1, 15):
                if (d, r, t) == (4096, 16, 1):
                    continue
                for mode in ("pc/fixed/pc", "pc/pc/pc", "pub/fixed/pub"):
                    if mode == "pub/fixed/pub" and t * 2 * d > 40000:
                        out.append(dict(case(f"{d}→{d} r{r} T{t}", d, d, r, t, mode),
                                        skip=f"{t * 2 * d:,} public instances need k ≥ 17 (minutes of setup, GBs "
                                             "of proving key): use polycommit x and y"))
                        continue
                    out.append(case(f"{d}→{d} r{r} T{t}", d, d, r, t, mode))
    return out


def _child(spec: dict, cache: str, phase: str) -> dict:
    """Runs in a subprocess: one cold or warm prove + verify; prints a JSON result line."""
    import numpy as np

    sys.path.insert(0, str(HERE.parent))
    from backends.ezkl import EzklBackend
    from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness

    x_b, a_b, y_b = MODES[spec["mode"]]
    bits = spec.get("weight_bits", 4)            # optional (the sweep's int8 cases); int4 as before otherwise
    st = LoRAStatement(shape=LoRAShape(d_in=spec["d_in"], d_out=spec["d_out"], rank=spec["rank"],
                                       tokens=spec["tokens"]), shift=spec["shift"],
                       x_binding=x_b, adapter_binding=a_b, y_binding=y_b, weight_bits=bits)
    be = EzklBackend(cache_dir=cache, logrows=spec.get("logrows"))
    support = be.supports(st)
    if not support:
        return {"unsupported": support.reason}
    rng = np.random.default_rng(0)
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    w = LoRAWitness(A_q=rng.integers(lo, hi, st.shape.a_shape), B_q=rng.integers(lo, hi, st.shape.b_shape),
                    x_q=rng.integers(-128, 128, st.shape.x_shape))
    t0 = time.perf_counter()
    result = be.prove(st, w)
    total = time.perf_counter() - t0
    anchor = be.anchor(st, w)
    verify_times = []
    for _ in range(3):
        t1 = time.perf_counter()
        verdict = be.verify(st, result.public, result.proof, anchor=anchor)
        verify_times.append(time.perf_counter() - t1)
    meta = result.proof.meta
    prep = be.prepare(st, w)
    return {"phase": phase, "timings": result.timings, "prove_total_s": total, "verify_s": min(verify_times),
            "verified": bool(verdict), "self_verify_s": meta["timings"]["self_verify"],
            "k": meta["logrows"], "num_inner_cols": meta["num_inner_cols"], "rows": meta["rows"],
            "layout": meta["layout_reason"], "proof_bytes": meta["proof_bytes"], "proof_json_bytes": len(result.proof.data),
            "instances": len(result.proof.instances), "pk_mib": (prep.keys_dir / "pk.key").stat().st_size / 2**20,
            "vk_bytes": len(result.proof.vk), "decomp_legs": meta["run_args"]["decomp_legs"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load_average": os.getloadavg()[0],
            "versions": meta["versions"]}


def run_case(spec: dict, cache: Path, timeout: float) -> dict:
    out: dict = {"case": spec}
    with heavy_lock(spec["name"]):
        out |= run_cold_then_warm(__file__, spec, cache, timeout)
    return out


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["# EZKL backend benchmark", "",
             f"{meta['machine']}; ezkl {meta['versions'].get('ezkl')}, torch {meta['versions'].get('torch')}; "
             f"development SRS; each case in fresh processes (cold = settings+compile+setup+witness+prove; warm = "
             f"from the cache). Times in seconds; RSS is the warm process's peak (load keys + witness + prove + "
             f"verify). Modes are x/adapter/y (pc = polycommit, pub = public). load = the 1-minute load average at the "
             f"end of the warm run: above 2 (the core count) other work shared the machine and times are inflated.", "",
             "| case | k | cols | rows | settings | compile | setup | witness | prove cold | prove warm | verify | "
             "proof B | pk MiB | warm RSS MiB | cold RSS MiB | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for r in results:
        c, cold, warm = r["case"], r.get("cold", {}), r.get("warm", {})
        if "timings" not in cold or "timings" not in warm:
            reason = cold.get("unsupported") or cold.get("error") or warm.get("error") or r.get("skipped")
            skipped.append(f"- {c['name']}: {reason}")
            continue
        t, tw = cold["timings"], warm["timings"]
        lines.append(f"| {c['name']} | {cold['k']} | {cold['num_inner_cols']} | {cold['rows']:,} | "
                     f"{t['settings']:.1f} | {t['compile']:.1f} | {t['setup']:.1f} | {tw['witness']:.2f} | "
                     f"{t['prove']:.1f} | {tw['prove']:.1f} | {warm['verify_s']:.3f} | {warm['proof_bytes']:,} | "
                     f"{warm['pk_mib']:.0f} | {warm['peak_rss_mib']:.0f} | {cold['peak_rss_mib']:.0f} | "
                     f"{warm.get('load_average', float('nan')):.1f} |")
    if skipped:
        lines += ["", "Not measured:", *skipped]
    lines += ["", "Targets (issue 8): " + "; ".join(f"{k}: " + ", ".join(f"{m} ≤ {v}" for m, v in t.items())
                                                  for k, t in TARGETS.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=3600.0, help="seconds for all cases; later cases are skipped")
    ap.add_argument("--case-timeout", type=float, default=900.0)
    ap.add_argument("--only", nargs="*", help="run only cases whose name contains one of these")
    ap.add_argument("--cache", help="cache root (default: a temporary directory, removed at the end)")
    ap.add_argument("--render", action="store_true", help="rewrite ezkl.md from ezkl.json and exit")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where ezkl.json and ezkl.md go")
    ap.add_argument("--quick", action="store_true", help="tiny cases only (smoke test)")
    ap.add_argument("--merge", action="store_true", help="replace only the measured cases in the existing ezkl.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="cold", help=argparse.SUPPRESS)
    args = ap.parse_args()
    results_dir = args.results
    if args.child:
        print(json.dumps(_child(json.loads(args.child), args.cache, args.phase)), flush=True)
        return
    if args.render:
        data = json.loads((results_dir / "ezkl.json").read_text())
        (results_dir / "ezkl.md").write_text(markdown(data["results"], data["meta"]))
        return
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="zkref-bench-ezkl-"))
    start, results = time.perf_counter(), []
    try:
        for spec in quick_cases() if args.quick else cases():
            if args.only and not any(s in spec["name"] for s in args.only):
                continue
            if spec.get("skip"):
                results.append({"case": spec, "skipped": spec["skip"]})
                continue
            left = args.budget - (time.perf_counter() - start)
            if left < 60:
                results.append({"case": spec, "skipped": f"time budget of {args.budget:.0f} s used up"})
                continue
            print(f"-- {spec['name']}", flush=True)
            res = run_case(spec, cache, min(args.case_timeout, left))
            res["measured_utc"] = utc_now()
            results.append(res)
            print(json.dumps({k: v for k, v in res.items() if k != "case"})[:400], flush=True)
            for entry in (cache / "ezkl" / "circuits").glob("*"):     # keep disk use bounded: keys are big
                shutil.rmtree(entry, ignore_errors=True)
    finally:
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)
    versions = next((r[p]["versions"] for r in results for p in ("warm", "cold")
                     if isinstance(r.get(p), dict) and "versions" in r[p]), {})
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "versions": versions, "budget_s": args.budget, "elapsed_s": time.perf_counter() - start,
            "targets": TARGETS, "quick": args.quick}
    results_dir.mkdir(parents=True, exist_ok=True)
    if args.merge and (results_dir / "ezkl.json").exists():
        current = {c["name"] for c in cases()}
        old = json.loads((results_dir / "ezkl.json").read_text())["results"]
        old = [r for r in old if r["case"]["name"] in current]
        results = merge_entries(old, results, lambda r: r["case"]["name"])
    (results_dir / "ezkl.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (results_dir / "ezkl.md").write_text(markdown(results, meta))
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
