"""EZKL levers: settings measured against the backend's pinned settings, interleaved in one run.

Every variant (benchmarks/ezkl_variants.py) of a module is set up once (settings, compile, setup: one process each),
then proven in fresh processes round by round: in each round every variant of the module once, in a rotated order
(A, B, C, … then B, C, …, A), so load on the shared machine falls on all of them alike. Reported per variant: rows, k,
einsum cells, range tables, fixed columns, setup and proving-key size, and prove time as the median over rounds
with min–max, and its ratio to the baseline variant of the same round (median and spread of the per-round ratios).
Variants marked `rows_only` are only laid out (gen_settings: rows and k) where proving them is predicted hopeless.
Writes results/ezkl_levers.{json,md}.

    python benchmarks/bench_ezkl_levers.py [--rounds N] [--only c_attn q_proj] [--levers NAME ...] [--quick]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import ezkl_variants as ev  # noqa: E402
from harness import Machine, bench_cache, heavy_lock, versions, write_results  # noqa: E402

BASELINE = "pinned"
DECISIONS = {
    BASELINE: "the backend's settings",
    "graph5": "refused: the backend before graph/6 (the unfolded graph, three digits in base 2^shift, the committed x "
              "counted in the main region): two blocks of main-region columns where graph/6 has one",
    "unfolded": "refused: the clamp's bound subtracted and added back, the remainder formed apart, the tokens summed "
                "in the main region: 648 more main-region cells at c_attn, past one block; the folded graph kept "
                "(graph.rounding_constant, graph.clamp_by_relu, graph.pack_tokens)",
    "legs3": "refused: three digits in base 2^shift (pinned until this lever was measured): a sixth more main-region "
             "cells, past one block; two digits kept (graph.decomposition)",
    "uncut": "refused: EZKL's own sizing of the main region (the committed x counted though the polycommit module "
             "assigns it): a second block of columns it never fills; the backend fits it (settings.fit_main_region)",
    "floor": "refused: Floor and EZKL's clamp range-check booleans: a third range table, i.e. a lookup argument "
             "more on every main-region block; the boolean-free requantisation kept (graph.floor_by_rebase)",
    "unpacked": "refused: the Floor graph before output packing (graph.OutputPacking): more einsum cells (c_attn) "
                "or twice the B·z_q dots in the main region (q_proj), slower; packing kept",
    "untrimmed": "refused: EZKL's own sizing of the einsum chip (every equation's reduction length, base-op ones too) "
                 "gives c_attn a third block of einsum columns it never fills; the backend trims the list "
                 "(settings.trim_einsum_equations)",
    "unsafe": "refused: no consistent gain (2026-12-06: 0.93× c_attn with rounds up to 1.02×, 1.04× q_proj; "
              "1.01× and 0.98× the run before), though the verifying key is identical (vk = pinned's): it only drops "
              "layout-time assertions, and ezkl.prove never verifies its own proof in either mode",
    "cols3": "refused: slower (fewer einsum columns, but more main columns and lookup inputs)",
    "cols1": "refused: slower (one column per block: more blocks, more selectors and fixed columns)",
    "k14": "refused: not faster; K_SPREAD = 13 stays",
    "k12": "refused: not faster beyond noise, and a larger proof and verify; K_SPREAD = 13 stays",
    "no_freivalds": "refused unproven: every product in the main region multiplies the rows",
    "y_hashed": "refused unproven: Poseidon costs ~41 rows per output value, all in one column",
}
"""What was decided for each lever, shown next to its measurement (the reasons are the measured columns)."""


def levers(module: str) -> list[dict]:
    """The variants of `module` measured against `pinned` (the backend's settings and graph)."""
    shift = ev.MODULES[module]["shift"]
    floor_base = {"decomp_base": 1 << shift}          # Floor's digits are in base 2^shift (ev.legs_for_base)
    out = [
        dict(name=BASELINE, what="the backend's pinned settings and graph (graph/6)"),
        dict(name="graph5", what=f"the backend before graph/6: the unfolded graph, digits in base 2^shift = "
             f"{1 << shift}, the main region sized as EZKL sizes it", graph="unfolded", fit=False, run=floor_base),
        dict(name="unfolded", what="the graph before graph/6 (clamp bound subtracted and added back, remainder "
             "formed apart, tokens summed in the main region), pinned settings", graph="unfolded"),
        dict(name="legs3", what=f"digits in base 2^shift = {1 << shift} (three or more: the pinned base until this "
             "lever was measured)", run=floor_base),
        dict(name="uncut", what="the main region sized as EZKL sizes it (the committed x counted: the backend until "
             "this lever was measured)", fit=False),
        dict(name="floor", what="requantisation by Floor and EZKL's clamp (boolean range checks: the backend's "
             "graph until the boolean-free one was measured), digits in base 2^shift", graph="floor", run=floor_base),
        dict(name="unpacked", what="Floor graph, output not packed (cells y_q·2^shift; the backend's graph until "
             "packing was measured)", graph="unpacked", run=floor_base),
        dict(name="unsafe", what="check_mode unsafe (no layout-time assertions; ezkl.prove never verifies itself)",
             run={"check_mode": "unsafe"}),
    ]
    if ev.MODULES[module]["tokens"] > 1:
        out += [dict(name="untrimmed", what="the einsum chip sized as EZKL sizes it (its settings' equations untrimmed: "
                     "the backend until this lever was measured)", trim=False),
                dict(name="cols3", what="num_inner_cols 3", run={"num_inner_cols": 3}),
                dict(name="cols1", what="num_inner_cols 1 at k 13", run={"num_inner_cols": 1}, logrows=13)]
    out += [dict(name="k14", what="logrows 14 (fewer, longer columns)", logrows=14),
            dict(name="k12", what="logrows 12 (more, shorter columns)", logrows=12)]
    if ev.MODULES[module]["tokens"] > 1:
        out.append(dict(name="no_freivalds", what="disable_freivalds (every product in the main region)",
                        run={"disable_freivalds": True}, rows_only=True))
    out.append(dict(name="y_hashed", what="y hashed (Poseidon in the circuit) instead of polycommit",
                    run={"output_visibility": "hashed"}, rows_only=True))
    return [dict(v, module=module, graph=v.get("graph", "statement")) for v in out]


QUICK_LEVERS = (BASELINE, "floor", "legs3", "untrimmed")
"""The levers `--quick` measures on the tiny module."""


def quick_levers() -> list[dict]:
    return [dict(v, module="tiny") for v in levers("tiny") if v["name"] in QUICK_LEVERS]


def _summary(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def run_module(variants: list[dict], rounds: int, srs_root: Path, work_root: Path, log=print) -> list[dict]:
    """Set up each variant, then prove them round-robin `rounds` times; one result dict per variant."""
    results = []
    for v in variants:
        work = work_root / f"{v['module']}-{v['name']}"
        with heavy_lock(f"{v['module']} {v['name']} setup"):
            if v.get("rows_only"):
                res = ev.child("setup", dict(v, settings_only=True), work, srs_root=srs_root)
            else:
                res = ev.child("setup", v, work, srs_root=srs_root)
        log(f"   setup {v['module']} {v['name']}: {json.dumps(res)[:300]}")
        results.append({"variant": v, "setup": res, "proves": [], "work": str(work)})
    live = [r for r in results if "error" not in r["setup"] and not r["variant"].get("rows_only")]
    for i in range(rounds):
        order = live[i % len(live):] + live[:i % len(live)] if live else []
        for r in order:
            with heavy_lock(f"{r['variant']['module']} {r['variant']['name']} prove"):
                p = ev.child("prove", r["variant"], Path(r["work"]))
            p["round"] = i
            r["proves"].append(p)
            log(f"   round {i} {r['variant']['name']}: prove {p.get('prove_s', float('nan')):.2f} s "
                f"{p.get('error', '')}")
    base = next((r for r in results if r["variant"]["name"] == BASELINE), None)
    for r in results:
        ok = [p for p in r["proves"] if "prove_s" in p]
        if ok:
            r["prove_s"] = _summary([p["prove_s"] for p in ok])
            r["verify_s"] = _summary([p["verify_s"] for p in ok])
            r["peak_rss_mib"] = max(p["peak_rss_mib"] for p in ok)
            r["proof_bytes"] = ok[-1]["proof_bytes"]
            r["verified"] = all(p["verified"] for p in ok)
            r["witness_exact"] = all(p["witness_exact"] is not False for p in ok)
        if base is not None and ok and r is not base:
            by_round = {p["round"]: p["prove_s"] for p in base["proves"] if "prove_s" in p}
            ratios = [p["prove_s"] / by_round[p["round"]] for p in ok if p["round"] in by_round]
            if ratios:
                r["ratio"] = _summary(ratios)
        shutil.rmtree(r.pop("work"), ignore_errors=True)
    return results


def markdown(data: dict) -> str:
    meta = data["meta"]
    lines = ["# EZKL levers: settings measured against the backend's pinned settings", "",
             f"{meta['machine']}; ezkl {meta['versions'].get('ezkl')}; development SRS; x and y polycommit, adapter "
             f"fixed, int4 weights. Each variant set up once, then proven {meta['rounds']} times in fresh processes, "
             "interleaved round by round with the others of its module (rotated order). prove = median (min–max) "
             "seconds; ratio = median (min–max) of the per-round ratio to `pinned` in the same round (below 1: "
             "faster). The machine was shared: compare ratios, not absolute seconds. "
             f"Run took {meta['elapsed_s'] / 60:.1f} min.", ""]
    for module, rows in data["modules"].items():
        base_vk = next((r["setup"].get("vk_sha256") for r in rows if r["variant"]["name"] == BASELINE), None)
        lines += [f"## {ev.MODULES[module]['label']}", "",
                  "| lever | what | rows | k | einsum cells | range tables | digits × base | fixed cols | vk = pinned's | setup s | pk MiB | "
                  "prove s | ratio | verify s | proof B | RSS MiB | exact | decision |",
                  "|---|---|---:|---:|---:|---:|---|---:|---|---:|---:|---|---|---:|---:|---:|---|---|"]
        for r in rows:
            v, s = r["variant"], r["setup"]
            if "error" in s:
                lines.append(f"| {v['name']} | {v['what']} | | | | | | | | | | | | | | | | failed: {s['error'][:120]} |")
                continue
            prove = f"{r['prove_s']['median']:.2f} ({r['prove_s']['min']:.2f}–{r['prove_s']['max']:.2f})" \
                if "prove_s" in r else "not proven"
            same = "" if not base_vk or "vk_sha256" not in s else ("yes" if s["vk_sha256"] == base_vk else "no")
            ratio = f"{r['ratio']['median']:.2f} ({r['ratio']['min']:.2f}–{r['ratio']['max']:.2f})" \
                if "ratio" in r else ("1" if v["name"] == BASELINE and "prove_s" in r else "")
            lines.append(
                f"| {v['name']} | {v['what']} | {s['rows']:,} | {s['k']} | {s['einsum_cells']:,} | "
                f"{len(s['range_checks'] or [])} | {s['decomp_legs']} × {s['decomp_base']:,} | "
                f"{s.get('fixed_columns', '')} | {same} | "
                f"{s['setup_s']:.1f} | {s['pk_mib']:.0f} | {prove} | {ratio} | "
                f"{r['verify_s']['median']:.3f} | {r['proof_bytes']:,} | {r['peak_rss_mib']:.0f} | "
                f"{'yes' if r['witness_exact'] else 'NO'} | {DECISIONS.get(v['name'], '')} |"
                if "prove_s" in r else
                f"| {v['name']} | {v['what']} | {s['rows']:,} | {s['k']} | {s['einsum_cells']:,} | "
                f"{len(s['range_checks'] or [])} | {s['decomp_legs']} × {s['decomp_base']:,} | | | | | {prove} | | | | | | "
                f"{DECISIONS.get(v['name'], '')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", choices=[m for m in ev.MODULES if m != "tiny"])
    ap.add_argument("--levers", nargs="*", help="measure only these levers (and the baseline)")
    ap.add_argument("--quick", action="store_true", help="the tiny module, three levers, one round (smoke test)")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--cache", help="SRS cache root (default $ZKREF_BENCH_CACHE or ~/.cache/zkref-bench)")
    ap.add_argument("--render", action="store_true", help="rewrite ezkl_levers.md from ezkl_levers.json and exit")
    args = ap.parse_args(argv)
    if args.render:
        data = json.loads((args.results / "ezkl_levers.json").read_text())
        (args.results / "ezkl_levers.md").write_text(markdown(data))
        return 0
    srs_root = bench_cache(args.cache) / "ezkl"
    modules = ["tiny"] if args.quick else (args.only or ["c_attn", "q_proj"])
    rounds = 1 if args.quick else args.rounds
    t0 = time.perf_counter()
    work_root = Path(tempfile.mkdtemp(prefix="zkref-levers-"))
    data: dict = {"modules": {}}
    try:
        for module in modules:
            variants = quick_levers() if args.quick else levers(module)
            if args.levers:
                variants = [v for v in variants if v["name"] == BASELINE or v["name"] in args.levers]
            print(f"-- {module}: {', '.join(v['name'] for v in variants)}", flush=True)
            data["modules"][module] = run_module(variants, rounds, srs_root, work_root)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    data["meta"] = {"machine": Machine.here().describe(), "versions": versions(), "rounds": rounds,
                    "elapsed_s": time.perf_counter() - t0, "quick": args.quick}
    write_results(args.results, "ezkl_levers", data, markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
