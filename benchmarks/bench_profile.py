"""Where EZKL's proving time goes, for GPT-2 c_attn (T = 15) and Llama-3-8B q_proj (T = 1) in the backend's mode
(x and y polycommit, adapter fixed, int4 weights, today's pinned settings).

Two views, both in one run:

* **By prover phase** (`perf record`, CPU samples of every thread with DWARF call stacks, cut to the `ezkl.prove`
  call by CLOCK_MONOTONIC marks the child records): each sample is put in a *stage* of halo2's `create_proof` read
  from the main thread's stack at that moment (proving-key load, synthesis of the witness layout, advice
  commitments, lookups, permutation, quotient h(X), vanishing, evaluations, opening, EZKL's own verify under
  check_mode safe), and in a *kernel* read from the sample's own stack (MSM, FFT, gate evaluation, …). Shares are of
  the samples inside the prove call; seconds = share × the measured prove time.
* **By graph part** (ablations, benchmarks/ezkl_variants.py): the statement's graph and the same graph without the
  requantisation, x·Aᵀ alone, x·Aᵀ with the requantisation, and B·z_q alone, each at the statement's k, set up once
  and proven in fresh processes interleaved round by round; rows, einsum cells, k and prove time, and the parts'
  differences.

Writes results/profile.{json,md}. `perf` must be installed (Debian: linux-perf); without it the phase view is
skipped and says so.

    python benchmarks/bench_profile.py [--rounds N] [--only c_attn q_proj] [--no-perf] [--quick]
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import ezkl_variants as ev  # noqa: E402
from bench_ezkl_levers import run_module  # noqa: E402
from harness import Machine, bench_cache, heavy_lock, versions, write_results  # noqa: E402

PERF_HZ = 299
"""Samples per second per thread: ~3,000 samples per 10 s prove on 2 cores, and `perf script` stays fast."""
ABLATIONS = (
    ("statement", "the statement's graph: x·Aᵀ, exact requantisation, z_q·Bᵀ"),
    ("no_requant", "x·Aᵀ·Bᵀ: the graph without the requantisation (and so unpacked: packing needs z_q's bound)"),
    ("xa_requant", "x·Aᵀ and the requantisation (output z_q): the graph without B·z_q"),
    ("xa", "x·Aᵀ alone"),
    ("bz", "z_q·Bᵀ alone (z_q as the input)"),
    ("requant", "the requantisation alone (z as the input, z_q the output)"),
)

STAGES = (
    # (stage, substrings of any frame of a sample: worker threads' rayon closures carry their caller's name), first
    # match wins; a sample matching none (an MSM or FFT whose caller was inlined) belongs to the stage running then
    ("EZKL's own verify after proving (check_mode safe)", ("verify_proof",)),
    ("proving key load", ("load_pk",)),
    ("synthesis: EZKL's witness layout", ("ezkl::graph::model", "ezkl::circuit", "ezkl::tensor", "WitnessCollection")),
    ("advice: blinding, batch inversion, commitments", ("batch_invert_assigned",)),
    ("lookups (mv-lookup: multiplicities, grand sums, commitments)", ("mv_lookup",)),
    ("permutation: grand products, commitments", ("permutation::",)),
    ("quotient h(X) on the extended domain", ("evaluate_h", "plonk::evaluation")),
    ("vanishing: h(X) pieces, commitments", ("vanishing::",)),
    ("evaluations at the challenge", ("eval_polynomial",)),
    ("opening (SHPLONK)", ("shplonk", "multiopen")),
)
AFTER = {"synthesis: EZKL's witness layout": "advice: blinding, batch inversion, commitments"}
"""An unattributed sample right after synthesis is the advice columns' commitment (their MSMs follow the layout)."""
KERNELS = (
    ("MSM (multi-scalar multiplication)", ("msm::", "multiexp", "curve::G1 as", "curve::G1>::")),
    ("FFT / iFFT", ("fft",)),
    ("gate and argument evaluation on the extended domain", ("plonk::evaluation",)),
    ("field inversions", ("BYInverter", "batch_invert", "BatchInvert")),
    ("deserialisation (keys, proof)", ("SerdePrimeField", "SerdeCurveAffine", "read::<", "is_on_curve")),
    ("synthesis (EZKL layout, witness assignment)", ("ezkl::graph::model", "ezkl::circuit", "ezkl::tensor",
                                                     "WitnessCollection")),
    ("kernel: memory, scheduling", ("[kernel.kallsyms]",)),
)
CREATE_PROOF = "halo2_proofs::plonk::prover::create_proof"
"""halo2's prover. Its own frame and its callers name every type parameter (EZKL's GraphCircuit, the SHPLONK prover):
a sample's stage and kernel are read only from the frames below it."""


def perf_available() -> str | None:
    """None if `perf record` works here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed (Debian: apt-get install linux-perf)"
    try:
        proc = subprocess.run(["perf", "stat", "-e", "cpu-clock", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"perf did not run: {exc}"
    return None if proc.returncode == 0 else f"perf stat failed: {proc.stderr.strip()[-200:]}"


def parse_perf_script(text: str) -> list[tuple[int, float, list[str]]]:
    """`perf script -F tid,time,ip,sym,dso` output → (tid, seconds, frames leaf first)."""
    samples = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if len(lines) < 2:
            continue
        head = lines[0].split()
        try:
            tid, t = int(head[0]), float(head[1].rstrip(":"))
        except (IndexError, ValueError):
            continue
        frames = []
        for ln in lines[1:]:
            ln = ln.strip()
            parts = ln.split(" ", 1)
            frames.append(re.sub(r"\+0x[0-9a-f]+", "", parts[1]) if len(parts) > 1 else ln)
        samples.append((tid, t, frames))
    return samples


def _first(frames: list[str], table) -> str | None:
    for name, pats in table:
        if any(p in f for f in frames for p in pats):
            return name
    return None


def attribute(samples: list[tuple[int, float, list[str]]], start: float, end: float) -> dict:
    """Stage and kernel shares of the samples in [start, end]. A sample's stage is the first `STAGES` entry any of
    its frames names; one naming none (an MSM or FFT job whose caller was inlined) takes the stage of the last sample
    that named one (halo2's stages run one after another; `AFTER` maps synthesis to the commitments that follow).
    Its kernel is read from its own frames."""
    inside = sorted((s for s in samples if start <= s[1] <= end), key=lambda s: s[1])
    if not inside:
        return {"samples": 0}
    stages: collections.Counter = collections.Counter()
    kernels: collections.Counter = collections.Counter()
    current = "before create_proof (circuit and key loading)"
    for _, _, frames in inside:
        cut = next((i for i, f in enumerate(frames) if f.startswith(CREATE_PROOF)), len(frames))
        frames = frames[:cut]
        own = _first(frames, STAGES)
        if own is not None:
            current = own
            stages[own] += 1
        else:
            stages[AFTER.get(current, current)] += 1
        kernels[_first(frames, KERNELS) or "other"] += 1
    n = len(inside)
    return {"samples": n, "threads": len({s[0] for s in inside}),
            "stages": {k: v / n for k, v in stages.most_common()},
            "kernels": {k: v / n for k, v in kernels.most_common()}}


def perf_profile(module: str, srs_root: Path, work_root: Path, log=print) -> dict:
    """One prove of the module's statement graph under `perf record`; stage and kernel shares of the prove call."""
    spec = {"module": module, "graph": "statement", "name": "pinned"}
    work = work_root / f"perf-{module}"
    with heavy_lock(f"profile {module} setup"):
        setup = ev.child("setup", spec, work, srs_root=srs_root)
    if "error" in setup:
        return {"error": setup["error"]}
    data = work / "perf.data"
    prefix = ["perf", "record", "-q", "-F", str(PERF_HZ), "--call-graph", "dwarf,16384", "-k", "CLOCK_MONOTONIC",
              "-o", str(data), "--"]
    with heavy_lock(f"profile {module} prove"):
        proved = ev.child("prove", spec, work, prefix=prefix)
    if "error" in proved:
        return {"setup": setup, "error": proved["error"]}
    script = subprocess.run(["perf", "script", "--no-inline", "-F", "tid,time,ip,sym,dso", "-i", str(data)],
                            capture_output=True, text=True, timeout=1800)
    samples = parse_perf_script(script.stdout)
    start, end = proved["marks"]["prove"]
    shares = attribute(samples, start, end)
    shutil.rmtree(work, ignore_errors=True)
    log(f"   perf {module}: {shares.get('samples')} samples in the prove call ({proved['prove_s']:.1f} s)")
    return {"setup": setup, "prove": proved, "profile": shares}


def statement_logrows(module: str) -> int:
    """The k the backend lays the module's statement out at (backends.ezkl.cost's prediction of `choose_layout`): every
    ablation is forced to it, so parts are compared at one column height (a part alone would otherwise get the k its
    own main rows fit, e.g. k = 9 for z_q·Bᵀ, whose cells are nearly all in the einsum chip's columns)."""
    from backends.ezkl.cost import predict

    st, _ = ev.statement_and_witness(module)
    return predict(st).logrows


def parts(rows: list[dict]) -> dict:
    """Each graph part's rows and prove seconds from the ablations' medians (differences of whole circuits)."""
    by = {r["variant"]["graph"]: r for r in rows if "prove_s" in r}
    if "statement" not in by:
        return {}

    def med(g):
        return by[g]["prove_s"]["median"] if g in by else None

    def rows_of(g):
        return by[g]["setup"]["rows"] if g in by else None

    out = {}
    for part, (a, b) in {"requantisation and output packing (statement − no_requant)": ("statement", "no_requant"),
                         "B·z_q (statement − xa_requant)": ("statement", "xa_requant"),
                         "requantisation (xa_requant − xa)": ("xa_requant", "xa")}.items():
        if med(a) is not None and med(b) is not None:
            out[part] = {"prove_s": med(a) - med(b), "rows": rows_of(a) - rows_of(b)}
    return out


def markdown(data: dict) -> str:
    meta = data["meta"]
    lines = ["# Where EZKL's proving time goes", "",
             f"{meta['machine']}; ezkl {meta['versions'].get('ezkl')}; development SRS; x and y polycommit, adapter "
             "fixed, int4 weights, the backend's pinned settings at the time of the run (their decomposition base and "
             "range tables are stated below). Run took "
             f"{meta['elapsed_s'] / 60:.1f} min (the machine was shared: shares and ratios, not absolute seconds).", ""]
    for module, m in data["modules"].items():
        lines += [f"## {ev.MODULES[module]['label']}", ""]
        perf = m.get("perf")
        if perf is None:
            lines += [f"Phase profile not taken: {data['meta'].get('perf_unavailable') or 'disabled'}.", ""]
        elif "error" in perf:
            lines += [f"Phase profile failed: {perf['error']}", ""]
        else:
            prof, setup, prove = perf["profile"], perf["setup"], perf["prove"]
            total = prove["prove_s"]
            lines += [f"**By prover phase** — one prove under `perf record` ({prof['samples']:,} samples on "
                      f"{prof['threads']} threads at {PERF_HZ} Hz): prove {total:.2f} s, k = {setup['k']}, "
                      f"{setup['rows']:,} rows, {setup['einsum_cells']:,} einsum cells, "
                      f"{setup['fixed_columns']} fixed columns, decomposition base {setup['decomp_base']} "
                      f"({len(setup['range_checks'] or [])} range tables), proving key {setup['pk_mib']:.0f} MiB.", "",
                      "| stage of create_proof | share | ≈ s |", "|---|---:|---:|"]
            lines += [f"| {k} | {v:.1%} | {v * total:.2f} |" for k, v in prof["stages"].items()]
            lines += ["", "| kernel | share | ≈ s |", "|---|---:|---:|"]
            lines += [f"| {k} | {v:.1%} | {v * total:.2f} |" for k, v in prof["kernels"].items()]
            lines.append("")
        abl = m.get("ablations", [])
        if abl:
            lines += [f"**By graph part** — ablations, {meta['rounds']} interleaved rounds (prove = median (min–max) "
                      "s; ratio to the statement's graph in the same round):", "",
                      "| graph | what | rows | k | einsum cells | range tables | setup s | pk MiB | prove s | ratio |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
            what = dict(ABLATIONS)
            for r in abl:
                s, g = r["setup"], r["variant"]["graph"]
                if "error" in s:
                    lines.append(f"| {g} | {what[g]} | failed: {s['error'][:100]} | | | | | | | |")
                    continue
                prove = f"{r['prove_s']['median']:.2f} ({r['prove_s']['min']:.2f}–{r['prove_s']['max']:.2f})" \
                    if "prove_s" in r else "—"
                ratio = f"{r['ratio']['median']:.2f} ({r['ratio']['min']:.2f}–{r['ratio']['max']:.2f})" \
                    if "ratio" in r else "1"
                lines.append(f"| {g} | {what[g]} | {s['rows']:,} | {s['k']} | {s['einsum_cells']:,} | "
                             f"{len(s['range_checks'] or [])} | {s['setup_s']:.1f} | {s['pk_mib']:.0f} | {prove} | "
                             f"{ratio} |")
            if m.get("parts"):
                lines += ["", "Parts (differences of medians): " + "; ".join(
                    f"{k}: {v['prove_s']:+.2f} s, {v['rows']:+,} rows" for k, v in m["parts"].items()) + "."]
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the ablations")
    ap.add_argument("--only", nargs="*", choices=[m for m in ev.MODULES if m != "tiny"])
    ap.add_argument("--no-perf", action="store_true", help="skip the perf phase profile")
    ap.add_argument("--no-ablations", action="store_true", help="skip the graph-part ablations")
    ap.add_argument("--quick", action="store_true", help="the tiny module, one round (smoke test)")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument("--cache", help="SRS cache root (default $ZKREF_BENCH_CACHE or ~/.cache/zkref-bench)")
    ap.add_argument("--render", action="store_true", help="rewrite profile.md from profile.json and exit")
    args = ap.parse_args(argv)
    if args.render:
        data = json.loads((args.results / "profile.json").read_text())
        (args.results / "profile.md").write_text(markdown(data))
        return 0
    srs_root = bench_cache(args.cache) / "ezkl"
    modules = ["tiny"] if args.quick else (args.only or ["c_attn", "q_proj"])
    rounds = 1 if args.quick else args.rounds
    unavailable = None if args.no_perf else perf_available()
    t0 = time.perf_counter()
    work_root = Path(tempfile.mkdtemp(prefix="zkref-profile-"))
    data: dict = {"modules": {}}
    try:
        for module in modules:
            print(f"-- {module}", flush=True)
            entry: dict = {}
            if not args.no_perf and unavailable is None:
                entry["perf"] = perf_profile(module, srs_root, work_root)
            if not args.no_ablations:
                k = statement_logrows(module)
                variants = [dict(module=module, graph=g, name="pinned" if g == "statement" else g, what=w,
                                 logrows=None if g == "statement" else k) for g, w in ABLATIONS]
                entry["ablations"] = run_module(variants, rounds, srs_root, work_root)
                entry["parts"] = parts(entry["ablations"])
            data["modules"][module] = entry
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    data["meta"] = {"machine": Machine.here().describe(), "versions": versions(), "rounds": rounds,
                    "elapsed_s": time.perf_counter() - t0, "quick": args.quick, "perf_unavailable": unavailable,
                    "perf_hz": PERF_HZ}
    write_results(args.results, "profile", data, markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
