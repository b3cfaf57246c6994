"""The README's performance material, generated from one suite run's JSON results: results/performance.{md,json}.

Reads (all from the same results directory, all written by `benchmarks/run_all.py` in one run): baseline.json (the
original zkLoRA recipe), ezkl.json (ours per binding mode), ezkl_sweep.json (d/r/T sweeps, int8, inner columns),
dense_ezkl.json (the dense straw man), accounting.json (zkref's computed costs), digest.json (base-model digest),
accuracy.json (what int4/int8 cost in accuracy) and suite.json (how long each part took). Every number printed is
read from those files or computed from them here; the only constants are the design note's claims, quoted as claims.

    python benchmarks/performance.py [--results DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import RESULTS  # noqa: E402

from zkref.chips.mul_table import ROWS as MUL_TABLE_ROWS  # noqa: E402

SOURCES = ("baseline", "ezkl", "ezkl_sweep", "dense_ezkl", "accounting", "digest", "accuracy", "suite", "profile",
           "ezkl_levers", "generation")
EMBEDDED = (("profile", "bench_profile", "markdown", "Where EZKL's proving time goes (bench_profile)"),
            ("ezkl_levers", "bench_ezkl_levers", "markdown", "Every lever measured, kept or refused (bench_ezkl_levers)"),
            ("generation", "bench_generation", "render", "A whole generation: server batching (bench_generation)"))
"""Parts whose own report is embedded whole (headings demoted under this report's): (JSON, script, renderer, title)."""
OURS_MODES = ("pc/fixed/pc", "pc/pc/pc", "pub/fixed/pub")
MODE_LABEL = {"pc/fixed/pc": "ours: x, y polycommit; adapter fixed (in the vk)",
              "pc/pc/pc": "ours: x, adapter, y polycommit",
              "pub/fixed/pub": "ours: x, y public; adapter fixed (in the vk)",
              "pub/unbound/pub": "ours: x, y public; adapter unbound",
              "original": "original zkLoRA recipe"}
NOTE = "the design note (zklora-optimizations.md)"


@dataclass(frozen=True)
class Claim:
    """One of the design note's factors, quoted: its name, the factor it prints, and what it says the factor is."""

    key: str
    idea: str
    factor: str
    says: str


CLAIMS = (
    Claim("lowrank", "Low-rank factorisation", "512×",
          "16,777,216 multiplications of the dense d×k product become 32,768 (d = k = 4096, r = 4)"),
    Claim("lookup", "4-bit quantisation with lookups", "8×",
          "a 4-bit lookup replaces a 32-bit multiplication (\"op complexity\")"),
    Claim("lanes", "Batched lookup operations", "3×",
          "8 lookups per row instead of 1 (\"row usage\"; \"typical improvement ~3×\")"),
    Claim("scope", "Base model as external commitment", "40×",
          "only the LoRA delta is proven, the base model is bound by a Poseidon digest (\"circuit scope: full model "
          "→ LoRA only\")"),
)
TOTAL_FACTOR = "491,520×"
TOTAL_CLAIM = f"512 × 8 × 3 × 40 = {TOTAL_FACTOR} theoretical; \"typical real-world speedup: 300–900×\"; title: \"1000x\""


@dataclass(frozen=True)
class Measured:
    """One EZKL proof measured from scratch in one process (settings → compile → setup → witness → prove), with the
    verify time and proof of the same circuit."""

    label: str
    source: str
    d_in: int
    d_out: int
    rank: int
    tokens: int
    mode: str
    weight_bits: int
    k: int
    rows: int
    setup_s: float
    prove_s: float
    total_s: float
    verify_s: float
    proof_bytes: int
    peak_rss_mib: float
    measured_utc: str | None = None
    """When it was measured (results written before the benchmarks stamped it: None)."""

    @property
    def shape(self) -> str:
        return f"{self.d_in}→{self.d_out} r={self.rank} T={self.tokens}"


def load(results: Path) -> dict[str, dict | None]:
    """Every source's JSON (None where a part did not run)."""
    out: dict[str, dict | None] = {}
    for name in SOURCES:
        path = results / f"{name}.json"
        out[name] = json.loads(path.read_text()) if path.exists() else None
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Extracting measurements
# ----------------------------------------------------------------------------------------------------------------------

def _cold_total(cold: dict) -> float:
    t = cold["timings"]
    return sum(t.get(p, 0.0) for p in ("settings", "compile", "setup", "witness", "prove"))


def from_backend(case: dict, cold: dict, warm: dict, source: str, measured_utc: str | None = None) -> Measured:
    """A bench_ezkl-style entry: the cold process's phases (prove right after setup, like every other recipe here),
    the warm process's verify (best of 3) and proof; peak RSS = the larger of the two processes' peaks."""
    return Measured(MODE_LABEL.get(case["mode"], case["mode"]), source, case["d_in"], case["d_out"], case["rank"],
                    case["tokens"], case["mode"], case.get("weight_bits", 4), cold["k"], cold["rows"],
                    cold["timings"]["setup"], cold["timings"]["prove"], _cold_total(cold), warm["verify_s"],
                    warm["proof_bytes"], max(cold["peak_rss_mib"], warm["peak_rss_mib"]), measured_utc)


def from_pipeline(label: str, source: str, d_in: int, d_out: int, rank: int, tokens: int, mode: str,
                  result: dict, measured_utc: str | None = None) -> Measured:
    """A harness.run_pipeline result (baseline, dense, lanes)."""
    t = result["timings"]
    return Measured(label, source, d_in, d_out, rank, tokens, mode, 4, result["logrows"], result["rows"], t["setup"],
                    t["prove"], result["total_s"], t["verify"], result["proof_bytes"], result["peak_rss_mib"],
                    measured_utc)


def ours(src: dict, *, exclude_forced: bool = True) -> list[Measured]:
    """Every backend measurement of this run: bench_ezkl's cases (not its forced-logrows sweep) and the sweep's."""
    out = []
    for r in (src.get("ezkl") or {}).get("results", []):
        c, cold, warm = r["case"], r.get("cold", {}), r.get("warm", {})
        if "timings" in cold and "timings" in warm and not (exclude_forced and c.get("logrows")):
            out.append(from_backend(c, cold, warm, "ezkl", r.get("measured_utc")))
    for r in (src.get("ezkl_sweep") or {}).get("results", []):
        c, cold, warm = r["case"], r.get("cold", {}), r.get("warm", {})
        if not c.get("inner_cols") and "timings" in cold and "timings" in warm:
            out.append(from_backend(c, cold, warm, "ezkl_sweep"))
    return out


def find(items: list[Measured], d_in: int, d_out: int, rank: int, tokens: int, mode: str,
         weight_bits: int = 4) -> Measured | None:
    """The first measurement of this shape, mode and weight width (bench_ezkl's before the sweep's)."""
    return next((m for m in items if (m.d_in, m.d_out, m.rank, m.tokens, m.mode, m.weight_bits)
                 == (d_in, d_out, rank, tokens, mode, weight_bits)), None)


def baselines(src: dict) -> list[dict]:
    """Per baseline module: its description, the chosen attempt as a Measured (or None) and every attempt."""
    out = []
    for e in (src.get("baseline") or {}).get("modules", []):
        m = e["module"]
        ok = next((a for a in e["attempts"] if a["ok"]), None)
        measured = None
        if ok:
            measured = from_pipeline(f"{MODE_LABEL['original']} (k={ok['logrows']})", "baseline", m["d_in"],
                                     m["d_out"], m["rank"], m["tokens"], "original", ok["result"],
                                     e.get("measured_utc"))
        out.append({"module": m, "measured": measured, "attempts": e["attempts"]})
    return out


def baseline_scales(src: dict) -> str:
    """The fixed-point scales the original recipe ran with, as EZKL recorded them in its settings."""
    for b in baselines(src):
        ok = next((a for a in b["attempts"] if a["ok"]), None)
        ra = ok["result"].get("settings_summary", {}).get("run_args", {}) if ok else {}
        if "input_scale" in ra:
            return f"input scale {ra['input_scale']}, param scale {ra.get('param_scale')}"
    return "scales not recorded"


def baseline_partial(src: dict) -> bool:
    """True when baseline.json was written before its run had measured every module (a stopped run)."""
    return (src.get("baseline") or {}).get("meta", {}).get("complete", True) is False


def dense(src: dict) -> list[dict]:
    """Per dense case: the case and its Measured (None if it did not fit), with the reason."""
    out = []
    for e in (src.get("dense_ezkl") or {}).get("results", []):
        c = e["case"]
        m = from_pipeline("dense ΔW·x", "dense_ezkl", c["d_in"], c["d_out"], c["rank"], c["tokens"], "pc/fixed/pc",
                          e["result"]) if e["ok"] else None
        out.append({"case": c, "measured": m, "error": e.get("error"), "probe": e.get("probe", {}),
                    "predicted_rss_mib": e.get("predicted_rss_mib")})
    return out


def lanes(src: dict) -> list[dict]:
    """The inner-columns sweep: (inner cols, rows, k, prove s, proof bytes), sorted by inner cols."""
    out = []
    for r in (src.get("ezkl_sweep") or {}).get("results", []):
        p = r.get("pipeline", {})
        if r["case"].get("inner_cols") and "timings" in p:
            out.append({"case": r["case"], "cols": p["num_inner_cols"], "rows": p["rows"], "k": p["logrows"],
                        "prove_s": p["timings"]["prove"], "proof_bytes": p["proof_bytes"]})
    return sorted(out, key=lambda e: e["cols"])


# ----------------------------------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------------------------------

def ratio(a: float | None, b: float | None) -> str:
    """a ÷ b as "12.3×" (or "–")."""
    if a is None or b is None or b == 0:
        return "–"
    x = a / b
    return f"{x:,.0f}×" if x >= 100 else f"{x:,.1f}×" if x >= 10 else f"{x:,.2f}×"


def secs(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def gib(mib: float) -> str:
    return f"{mib / 1024:.2f}" if mib < 10 * 1024 else f"{mib / 1024:.1f}"


# ----------------------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------------------

def end_to_end(src: dict) -> tuple[list[str], list[dict]]:
    """Per baseline module: the original recipe against ours in each mode, same module, same T, same run."""
    lines, data = [], []
    mine = ours(src)
    for b in baselines(src):
        m = b["module"]
        lines += [f"### {m['label']}, T = {m['tokens']} ({m['macs']:,} LoRA MACs)", ""]
        base: Measured | None = b["measured"]
        rows = [find(mine, m["d_in"], m["d_out"], m["rank"], m["tokens"], mode) for mode in OURS_MODES]
        rows = [r for r in rows if r is not None]
        failed = [a for a in b["attempts"] if not a["ok"]]
        if base is None:
            why = "; ".join(f"logrows {a['logrows']}: {a['error']}" for a in b["attempts"]) or "not run"
            lines += [f"The original recipe did not complete here ({why}), so there is no end-to-end ratio for this "
                      "module; ours alone:", ""]
        lines += ["| recipe | k | rows | prove s | total s (incl. setup) | verify s | proof B | peak RSS GiB | "
                  "prove ratio | total ratio | verify ratio | proof-size ratio | RSS ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ([base] if base else []) + rows:
            lines.append(f"| {r.label} | {r.k} | {r.rows:,} | {secs(r.prove_s)} | {secs(r.total_s)} | "
                         f"{r.verify_s:.2f} | {r.proof_bytes:,} | {gib(r.peak_rss_mib)} | "
                         + (" | ".join([ratio(base.prove_s, r.prove_s), ratio(base.total_s, r.total_s),
                                        ratio(base.verify_s, r.verify_s), ratio(base.proof_bytes, r.proof_bytes),
                                        ratio(base.peak_rss_mib, r.peak_rss_mib)]) if base else
                            " | ".join(["–"] * 5)) + " |")
        for a in failed:
            if base is not None:
                lines.append(f"\nThe original recipe at logrows {a['logrows']}: {a['error']}.")
        when = [f"{r.label} {r.measured_utc}" for r in ([base] if base else []) + rows if r.measured_utc]
        if when:
            lines += ["", "Measured: " + "; ".join(when) + "."]
        if base and rows:
            best = min(rows, key=lambda r: r.prove_s)
            lines += ["", f"End to end on this module: the original recipe proves in {secs(base.prove_s)} s "
                          f"({secs(base.total_s)} s with settings and setup, {gib(base.peak_rss_mib)} GiB peak); the "
                          f"fastest of ours ({best.label}) in {secs(best.prove_s)} s ({secs(best.total_s)} s, "
                          f"{gib(best.peak_rss_mib)} GiB): **{ratio(base.prove_s, best.prove_s)} faster prove, "
                          f"{ratio(base.total_s, best.total_s)} faster end to end, "
                          f"{ratio(base.peak_rss_mib, best.peak_rss_mib)} less memory**; its proof is "
                          f"{best.proof_bytes:,} B against {base.proof_bytes:,} B "
                          f"({ratio(best.proof_bytes, base.proof_bytes)} larger) and verifies in "
                          f"{best.verify_s:.2f} s against {base.verify_s:.2f} s. Prove-time ratio per mode: "
                          + ", ".join(f"{r.mode} {ratio(base.prove_s, r.prove_s)}" for r in rows) + "."]
        lines.append("")
        data.append({"module": m, "baseline": asdict(base) if base else None, "ours": [asdict(r) for r in rows],
                     "failed_attempts": [{"logrows": a["logrows"], "error": a["error"]} for a in failed]})
    if data:
        lines += ["Ratios are original ÷ ours (above 1: ours is faster, smaller or lighter). \"prove\" is the prove "
                  "phase in the same process right after setup (for both); \"total\" adds settings, compile, setup "
                  "and witness (the SRS is excluded for both: it is a public one-time artefact); \"verify\" is the "
                  "best of 3: EZKL's verify for the original recipe, the EZKL backend's verify for ours (which also "
                  "recomputes the KZG commitments of x and y from the values it was given); peak RSS is the largest "
                  "of the processes' peaks.", "",
                  "The two do not prove the same statement. The original recipe proves a float graph at EZKL's "
                  f"default fixed point ({baseline_scales(src)}) with the adapter PRIVATE (nothing binds it: any "
                  "adapter satisfies "
                  "the proof) and x, y public with range checks. Ours proves int4 weights × int8 activations with an "
                  "exact requantisation (bit-equal to zkref's `evaluate`), the adapter bound (fixed in the verifying "
                  "key, or a KZG commitment), and x, y as public values or KZG commitments the verifier recomputes. "
                  "Ours proves more (the adapter is bound) at lower precision (see the accuracy line below).", ""]
    return lines, data


def accuracy_line(src: dict) -> list[str]:
    acc = src.get("accuracy")
    if not acc:
        return []
    lines = []
    for m in acc.get("models", {}).values():
        parts = [f"{p['precision']}: median delta error {p['delta_relative_error_median']:.1%}, top-1 agreement "
                 f"{p['top1_agreement']:.1%}" for p in m.get("precisions", [])]
        lines += [f"What the integer formats cost (bench_accuracy, {m.get('model', 'tiny model')}): "
                  + "; ".join(parts) + ".", ""]
    return lines


def factors(src: dict) -> tuple[list[str], dict]:
    """The note's four factors: claimed, computed (zkref accounting), measured (EZKL, this run)."""
    acct = src.get("accounting") or {}
    mods = [e for e in acct.get("modules", []) if e["tokens"] == 1] or acct.get("modules", [])
    mine = ours(src)
    dens = dense(src)
    lane = lanes(src)
    out: dict = {}

    def effect(entry: dict, idea_prefix: str) -> dict:
        return next(e for e in entry["report"]["effects"] if e["idea"].startswith(idea_prefix))

    def comp(idea_prefix: str, fmt) -> str:
        return "; ".join(f"{e['module']['key']} (T={e['tokens']}): {fmt(effect(e, idea_prefix))}" for e in mods)

    # 1. low rank ------------------------------------------------------------------------------------------------------
    ex = acct.get("note_example")
    lowrank_comp = comp("low-rank", lambda e: f"{e['macs']:,.0f}× MACs, {e['rows']:,.0f}× rows, k "
                                              f"{e['k_from']}→{e['k_to']}")
    if ex:
        lowrank_comp = (f"the note's example {ex['d_in']}→{ex['d_out']} r={ex['rank']}: {ex['macs_ratio']:,.0f}× MACs, "
                        f"{ex['rows_ratio']:,.0f}× rows; " + lowrank_comp)
    meas, pairs = [], []
    for d in dens:
        c = d["case"]
        name = f"{c['d_in']}→{c['d_out']} T={c['tokens']}"
        if d["measured"] is None:
            meas.append(f"{name}: dense did not fit ({d['error']})")
            continue
        low = find(mine, c["d_in"], c["d_out"], c["rank"], c["tokens"], "pc/fixed/pc")
        if low is None:
            meas.append(f"{name}: dense {secs(d['measured'].prove_s)} s prove; low-rank not measured")
            continue
        dm = d["measured"]
        pairs.append({"shape": name, "dense": asdict(dm), "lowrank": asdict(low)})
        meas.append(f"{name} r={c['rank']}: prove {secs(dm.prove_s)} s → {secs(low.prove_s)} s = "
                    f"**{ratio(dm.prove_s, low.prove_s)}**; total {ratio(dm.total_s, low.total_s)}; rows "
                    f"{dm.rows:,} → {low.rows:,}; peak RSS {gib(dm.peak_rss_mib)} → {gib(low.peak_rss_mib)} GiB")
    out["lowrank"] = {"computed": lowrank_comp, "measured": meas, "pairs": pairs}

    # 2. 4-bit lookups ---------------------------------------------------------------------------------------------------
    lookup_comp = comp("MulTable", lambda e: f"rows {e['rows']:.2f}×, lookups {e['lookups']:.2f}×, proof "
                                             f"{e['proof_bytes']:.2f}×")
    meas8 = []
    for m8 in [m for m in mine if m.weight_bits == 8]:
        m4 = find(mine, m8.d_in, m8.d_out, m8.rank, m8.tokens, m8.mode, 4)
        if m4:
            meas8.append(f"{m8.shape}: int8 ÷ int4 weights prove {ratio(m8.prove_s, m4.prove_s)} "
                         f"({secs(m4.prove_s)} → {secs(m8.prove_s)} s), rows {m4.rows:,} → {m8.rows:,}")
    out["lookup"] = {"computed": lookup_comp, "measured": meas8}

    # 3. lanes ------------------------------------------------------------------------------------------------------------
    lanes_comp = comp("L lanes", lambda e: f"rows {e['rows']:.2f}×, k {e['k_from']}→{e['k_to']}, proof bytes "
                                           f"{e['proof_bytes']:.2f}× (bigger)")
    meas3 = []
    if lane:
        one = lane[0]
        c = one["case"]
        meas3.append(f"{c['d_in']}→{c['d_out']} r={c['rank']} T={c['tokens']}, EZKL inner columns " +
                     ", ".join(f"{e['cols']}: {e['rows']:,} rows, k={e['k']}, prove {secs(e['prove_s'])} s"
                               for e in lane) +
                     "; relative to 1 column: " + ", ".join(f"{e['cols']} cols {ratio(one['prove_s'], e['prove_s'])}"
                                                           f" prove, {ratio(one['rows'], e['rows'])} rows"
                                                           for e in lane[1:]))
    tsweep = sorted((from_backend(r["case"], r["cold"], r["warm"], "ezkl_sweep")
                     for r in (src.get("ezkl_sweep") or {}).get("results", [])
                     if r["case"]["sweep"] == "T" and "timings" in r.get("cold", {}) and "timings" in r.get("warm", {})),
                    key=lambda m: m.tokens)
    if len(tsweep) > 1:
        t1, tn = tsweep[0], tsweep[-1]
        meas3.append(f"(batching calls instead, T = {t1.tokens} → {tn.tokens} at {t1.d_in}→{t1.d_out} r={t1.rank}: "
                     f"prove per token "
                     f"{secs(t1.prove_s / t1.tokens)} → {secs(tn.prove_s / tn.tokens)} s, "
                     f"{ratio(t1.prove_s / t1.tokens, tn.prove_s / tn.tokens)} per token)")
    out["lanes"] = {"computed": lanes_comp, "measured": meas3}

    # 4. scope --------------------------------------------------------------------------------------------------------
    arch = acct.get("architectures", [])
    scope_comp = "; ".join(f"{a['label']}: base-model linear MACs ÷ adapter MACs per token = {a['ratio']:,.0f}×"
                           for a in arch)
    dig = src.get("digest")
    meas4 = ["1× between the recipes: the original recipe also proved the LoRA module only (its graph is "
             "x·Aᵀ·Bᵀ·s); neither puts the base model in a circuit"]
    if dig:
        rate = dig["v2_best_mb_per_s"]["cold"]
        sizes = list({a["model"]: a["linear_weight_bytes"] for a in arch}.items())
        meas4.append(f"the external commitment is a digest of the weights, once per model: {rate:,.0f} MB/s "
                     "(bench_digest, cold) → " + ", ".join(f"{n} linear weights ({b / 1e9:.2f} GB) "
                                                            f"{b / 1e6 / rate:.1f} s" for n, b in sizes))
    out["scope"] = {"computed": scope_comp, "measured": meas4}

    lines = ["| the note's idea | claimed | what the claim says | computed (zkref accounting) | measured (EZKL, this run) |",
             "|---|---:|---|---|---|"]
    for claim in CLAIMS:
        f = out[claim.key]
        lines.append(f"| {claim.idea} | {claim.factor} | {claim.says} | {f['computed'] or 'not run'} | "
                     f"{'<br>'.join(f['measured']) or 'not measured in this run'} |")
    overall = []
    for b in baselines(src):
        m, base = b["module"], b["measured"]
        if base is None:
            overall.append(f"{m['key']}: no end-to-end figure (the original recipe did not complete)")
            continue
        for mode in OURS_MODES:
            r = find(mine, m["d_in"], m["d_out"], m["rank"], m["tokens"], mode)
            if r is not None:
                overall.append(f"{m['key']} T={m['tokens']}, {mode}: prove {ratio(base.prove_s, r.prove_s)}, "
                               f"total {ratio(base.total_s, r.total_s)}")
    lines.append(f"| All four, multiplied | {TOTAL_FACTOR} | {TOTAL_CLAIM} | not a product: see below | original recipe "
                 f"÷ ours, end to end: {'<br>'.join(overall) or 'not measured in this run'} |")
    out["overall"] = overall
    out["claims"] = [asdict(c) for c in CLAIMS]
    return lines, out


def explanations() -> list[str]:
    return [
        "What each column means:",
        "- **claimed**: the factor printed in " + NOTE + ", and what the note says it measures; the note multiplies "
        "the four into " + TOTAL_CLAIM + ".",
        "- **computed**: zkref's own accounting (`zkref.lora.report`, bench_accounting) of the circuit it would "
        "build: rows, lookups and k from the layout (no proof). Low rank = dense ΔW·x → low-rank (both with the "
        f"{MUL_TABLE_ROWS:,}-row multiplication table, 8 lanes); 4-bit lookups = products in a gate (MulGate, int4/int8 range "
        "lookups) → products looked up in the 4-bit × 8-bit table (MulTable); lanes = 1 → 8 lookups per row.",
        "- **measured**: EZKL 23 proofs in this run. Low rank: dense ΔW·x against the low-rank statement with the "
        "same settings, bindings and layout rule (bench_dense_ezkl against bench_ezkl / bench_ezkl_sweep). 4-bit: "
        "EZKL has no multiplication table (a product is one gate constraint, whatever its width), so what is "
        "measured is the weight width's effect: int8 against int4 weights, same statement. Lanes: EZKL's "
        "num_inner_cols (cells per row per op), each at the least k its rows fit.",
        "- The \"40×\" is not a property of any circuit: in both the original recipe and ours the base model is "
        "outside every circuit, so between them it is a factor of 1. The computed figure is how much bigger the "
        "base model's linear work is than the adapter's: the work NEITHER recipe proves. The factors are not "
        "independent and do not multiply: low rank is already in the original recipe's graph, and the batching "
        "factors change rows, not the time per row.",
        "",
    ]


def custom_circuit(src: dict) -> list[str]:
    """zkref's accounting of its custom-circuit design per module (T = 1 and T = 15), from accounting.json."""
    acct = src.get("accounting")
    if not acct:
        return []
    lines = ["| module | T | strategy | MACs | lookups | rows | k | proof B (est.) |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for e in acct["modules"]:
        for key, c in e["report"]["strategies"].items():
            lines.append(f"| {e['module']['label']} | {e['tokens']} | {key} | {c['macs']:,} | {c['lookups']:,} | "
                         f"{c['rows']:,} | {c['k']} | {c['proof_bytes']:,} |")
    return lines + ["", "lowrank-table (MulTable + 8 lanes + requant) is the design; +plain / +packed add in-circuit "
                        "Poseidon commitments to x and the adapter (EZKL's one felt per value, or packed first). "
                        "This circuit exists in zkref (mock-proven, audited) but has no real prover: these figures "
                        "are computed, not measured. EZKL's own low-rank circuit uses Freivalds' check for matrix "
                        "products with T > 1 (compare its rows in the end-to-end tables).", ""]


def not_measured(src: dict) -> list[str]:
    """What this run did not measure, with the reason each part gives."""
    out = []
    for b in baselines(src):
        for a in b["attempts"]:
            if not a["ok"]:
                out.append(f"- Original recipe, {b['module']['label']}, logrows {a['logrows']}: {a['error']}.")
    for d in dense(src):
        if d["measured"] is None:
            c = d["case"]
            out.append(f"- Dense ΔW·x {c['d_in']}→{c['d_out']} T={c['tokens']}: {d['error']}.")
    for r in (src.get("ezkl") or {}).get("results", []):
        cold = r.get("cold", {})
        reason = r.get("skipped") or cold.get("unsupported") or cold.get("error")
        if reason:
            out.append(f"- Ours, {r['case']['name']}: {reason}.")
    if baseline_partial(src):
        out.append("- The baseline run stopped before measuring every module: baseline.json holds only the modules "
                   "listed above.")
    missing = [s for s in ("baseline", "ezkl", "ezkl_sweep", "dense_ezkl", "accounting") if not src.get(s)]
    if missing:
        out.append(f"- Parts not run in this run: {', '.join(missing)}.")
    out += ["- zkref's custom circuit (MulTable + lanes + requant + Poseidon) has no real prover (it is mock-proven "
            "and accounted only), so its rows and proof size are computed, never timed.",
            "- Proving a base model: neither recipe does, so the note's \"40×\" has nothing to measure.",
            "- A real SRS: every proof here uses a development SRS from ezkl.gen_srs (same sizes and times as a "
            "ceremony SRS of the same k, but it proves nothing to anyone else)."]
    return out


def embedded(src: dict) -> list[str]:
    """The profile, the levers and the generation benchmark, each rendered by its own script from its JSON (one
    renderer per table), its headings demoted below this report's."""
    import importlib

    out: list[str] = []
    for name, script, renderer, title in EMBEDDED:
        if not src.get(name):
            out += [f"### {title}", "", f"Not run in this results directory ({name}.json is missing).", ""]
            continue
        text = getattr(importlib.import_module(script), renderer)(src[name])
        body = [line for line in text.splitlines() if not line.startswith("# ")]
        out += [f"### {title}", ""] + [("##" + line) if line.startswith("## ") else line for line in body] + [""]
    return out


def suite_times(src: dict) -> list[str]:
    s = src.get("suite")
    if not s:
        return []
    lines = ["| part | seconds | status |", "|---|---:|---|"]
    for p in s["parts"]:
        lines.append(f"| {p['name']} | {p['seconds']:,.0f} | {p['status']} |")
    return lines + ["", f"Whole run: {s['elapsed_s'] / 60:,.1f} min; command `{s['command']}`; started "
                        f"{s['started']}.", ""]


def build(results: Path) -> tuple[str, dict]:
    """performance.md and performance.json content from the JSON results in `results`."""
    src = load(results)
    e2e_lines, e2e = end_to_end(src)
    fac_lines, fac = factors(src)
    meta = next((src[s]["meta"] for s in ("baseline", "ezkl_sweep", "dense_ezkl") if src.get(s)), {})
    machine = meta.get("machine", "unknown machine")
    ezkl_version = (meta.get("versions") or {}).get("ezkl")
    lines = ["## Performance, measured", "",
             f"Measured on {machine}, ezkl {ezkl_version}, by the benchmark suite (`make bench`, "
             "benchmarks/run_all.py, which regenerates every part); every figure below is read from the JSON results "
             "in benchmarks/results/ beside each table, which record each part's machine, versions and load. The "
             "table at the end lists the parts of the last run_all invocation; parts re-run on their own since "
             "(e.g. `bench_ezkl.py --merge`) are in their JSON.", "",
             "### End to end: the original zkLoRA recipe against ours, same module, same run", ""]
    lines += e2e_lines or ["The baseline was not run.", ""]
    lines += accuracy_line(src)
    lines += ["### The design note's four factors: claimed, computed, measured", ""] + fac_lines + [""]
    lines += explanations()
    lines += ["### zkref's custom-circuit design, computed (bench_accounting)", ""] + custom_circuit(src)
    lines += embedded(src)
    plots = sorted(p.name for p in results.glob("*.png"))
    if plots:
        lines += ["### Plots", ""] + [f"- `benchmarks/results/{p}`" for p in plots] + [""]
    lines += ["### Not measured, and why", ""] + not_measured(src) + [""]
    times = suite_times(src)
    if times:
        lines += ["### How long each part of the run took", ""] + times
    data = {"end_to_end": e2e, "factors": fac, "total_claim": TOTAL_CLAIM, "machine": machine}
    return "\n".join(lines) + "\n", data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    md, data = build(args.results)
    (args.results / "performance.md").write_text(md)
    (args.results / "performance.json").write_text(json.dumps(data, indent=1) + "\n")
    print(md)


if __name__ == "__main__":
    main()
