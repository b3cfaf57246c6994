"""The ORIGINAL zkLoRA recipe on EZKL, as the baseline every other figure is compared with.

What zkLoRA proved per LoRA module (its recipe as the project's measured EZKL facts record it; written here from
that description, no zkLoRA code): the float low-rank graph y = (x @ Aᵀ @ Bᵀ) · s exported to ONNX with an input of batch 3 ×
sequence 5 tokens, EZKL's DEFAULT run arguments (input and param scale 7, decomp base 16384 × 2 legs, check mode
unsafe, range checks of inputs and outputs on) except: inputs public, outputs public, params PRIVATE (the adapter is
a witness nothing binds), logrows 20, and no calibrate_settings. A (r × d_in) and B (d_out × r) are float tensors shaped
as peft stores lora_A / lora_B, s = alpha / r.

Each module is tried at logrows 20 first, then at each smaller logrows given (down to the floor its public instances
set), in one memory-guarded child process per attempt (settings, compile, SRS, setup, witness, prove, verify; each
phase's time and peak RSS); the first attempt that completes is the module's baseline, the others are reported with
why they failed (memory guard, timeout). Logrows 20 is always attempted; a smaller logrows is skipped, with the
prediction, when its allocated rows times the peak RSS per row measured on a module completed in this run exceed
the guard (lower logrows spreads the same rows over more columns, so it does not shrink memory much).
Writes results/baseline.{json,md}.

    python benchmarks/bench_baseline.py [--modules c_attn q_proj] [--logrows 20 19 18 17] [--merge] [--quick]

--merge replaces only the measured modules in an existing baseline.json (e.g. c_attn alone, next to ours in one run:
`run_all.py --headline`) and keeps the others' earlier attempts, each entry stamped with when it was measured.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import (Machine, PipelineResult, add_part_arguments, bench_cache,  # noqa: E402
                     export_onnx, heavy_lock, meminfo_mib, merge_entries, run_guarded, run_pipeline, utc_now,
                     versions, write_results)

BATCH, SEQUENCE = 3, 5
"""zkLoRA's input shape: batch 3 × sequence 5 = 15 tokens per proof."""


@dataclass(frozen=True)
class BaselineModule:
    """A LoRA-adapted linear layer as the original recipe proves it."""

    key: str
    label: str
    d_in: int
    d_out: int
    rank: int
    alpha: float
    logrows: tuple[int, ...]
    """logrows to try, largest first: the first that completes is the baseline."""

    @property
    def tokens(self) -> int:
        return BATCH * SEQUENCE

    @property
    def macs(self) -> int:
        return self.tokens * self.rank * (self.d_in + self.d_out)


MODULES = {
    "c_attn": BaselineModule("c_attn", "GPT-2-small c_attn 768→2304 r=8", 768, 2304, 8, 16.0, (20,)),
    "q_proj": BaselineModule("q_proj", "Llama-3-8B q_proj 4096→4096 r=16", 4096, 4096, 16, 32.0,
                             (20, 19, 18, 17)),
}
BASELINE_RESERVE_MIB = 384
BASELINE_MIN_AVAILABLE_MIB = 256
"""The baseline's guard is tighter than the other benchmarks' (the recipe at logrows 20 was seen at 22.7 GiB of this
machine's 23.5): an attempt is killed when its RSS passes total memory minus 384 MiB or the machine's available memory
falls below 256 MiB (polled every 0.1 s)."""
QUICK = {"tiny": BaselineModule("tiny", "tiny 16→24 r=2 (smoke test)", 16, 24, 2, 4.0, (15,))}
"""--quick: one tiny module at logrows 15 (the default decomp base 16384 needs a 2^14-row range table)."""


@dataclass(frozen=True)
class Attempt:
    """One attempt at one logrows: the pipeline's result, or why it did not complete."""

    logrows: int
    ok: bool
    result: dict | None
    error: str | None
    wall_s: float
    polled_peak_rss_mib: float
    min_available_mib: float
    load_average: tuple[float, float]
    lock_wait_s: float
    probe: dict = field(default_factory=dict)
    """gen_settings' row count at this logrows (measured before the attempt, in a light child)."""


def original_run_args(logrows: int):
    """EZKL's default PyRunArgs with the recipe's visibilities and logrows; nothing calibrated."""
    import ezkl

    ra = ezkl.PyRunArgs()
    ra.input_visibility = "public"
    ra.output_visibility = "public"
    ra.param_visibility = "private"
    ra.logrows = logrows
    return ra


def lora_module(d_in: int, d_out: int, rank: int, alpha: float, seed: int = 0):
    """The recipe's graph: float x @ Aᵀ @ Bᵀ · (alpha / r). A is drawn as peft initialises lora_A (Kaiming uniform,
    bound 1/√d_in); B (zero at init) as a trained adapter's small values, N(0, 0.02²)."""
    import torch

    class LowRankLoRA(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.A = torch.nn.Parameter((torch.rand(rank, d_in, generator=g) * 2 - 1) / d_in ** 0.5,
                                        requires_grad=False)
            self.B = torch.nn.Parameter(torch.randn(d_out, rank, generator=g) * 0.02, requires_grad=False)
            self.scaling = alpha / rank

        def forward(self, x):
            return (x @ self.A.t() @ self.B.t()) * self.scaling

    return LowRankLoRA()


def _inputs(module: BaselineModule, seed: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, SEQUENCE, module.d_in, generator=g)


def child(spec: dict, work: str, cache: str, probe_only: bool) -> dict:
    """In the child process: export the graph, then either probe gen_settings' rows or run the whole pipeline."""
    import ezkl
    import numpy as np
    import torch

    spec = dict(spec)
    k = spec.pop("attempt_logrows")
    module = BaselineModule(**{**spec, "logrows": tuple(spec["logrows"])})
    torch_module = lora_module(module.d_in, module.d_out, module.rank, module.alpha)
    x = _inputs(module)
    work_dir = Path(work)
    onnx = work_dir / "model.onnx"
    work_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(torch_module, x, onnx)
    if probe_only:
        t0 = time.perf_counter()
        ezkl.gen_settings(str(onnx), str(work_dir / "probe.json"), py_run_args=original_run_args(k))
        s = json.loads((work_dir / "probe.json").read_text())
        return {"rows": s["num_rows"], "einsum_cells": s["einsum_params"]["total_einsum_col_size"],
                "gen_settings_s": time.perf_counter() - t0}
    data = {"input_data": [x.reshape(-1).tolist()]}
    res: PipelineResult = run_pipeline(onnx, original_run_args(k), data, work_dir, Path(cache) / "ezkl")
    with torch.no_grad():
        y = torch_module(x).reshape(-1).numpy()
    out = np.asarray(res.outputs)
    out_dict = res.to_dict()
    out_dict["outputs"] = len(res.outputs)
    out_dict.pop("output_felts", None)
    out_dict["max_abs_error_vs_float"] = float(np.max(np.abs(out - y)))
    out_dict["max_abs_float_output"] = float(np.max(np.abs(y)))
    out_dict["total_s"] = res.total_s
    return out_dict


def row_slots(rows: int, k: int) -> int:
    """Rows EZKL allocates for `rows` at logrows k: whole column sets of 2^k rows (each minus its unusable rows)."""
    from backends.kzg import EZKL_UNUSABLE_ROWS

    return math.ceil(rows / ((1 << k) - EZKL_UNUSABLE_ROWS)) * (1 << k)


def mib_per_slot(completed: list[dict]) -> tuple[float, str] | None:
    """The largest peak RSS per allocated row slot among the attempts that completed in this run, and which."""
    best = None
    for entry in completed:
        a = entry["attempt"]
        per = a["result"]["peak_rss_mib"] / row_slots(a["result"]["rows"], a["logrows"])
        if best is None or per > best[0]:
            best = (per, f"{entry['label']} at logrows {a['logrows']}")
    return best


def run_module(module: BaselineModule, cache: Path, timeout: float, *, rss_limit_mib: float,
               min_available_mib: float, completed: list[dict], keep_work: bool = False) -> list[Attempt]:
    """Try the module at each of its logrows (largest first) until one completes; each attempt under the lock.

    The first logrows (the recipe's 20) is always attempted, so that "does not fit" is observed, not predicted. A
    later, smaller logrows is skipped when its predicted peak RSS — its allocated row slots times the largest MiB per
    slot measured on a completed module of this run (`completed`) — exceeds the guard's limit."""
    attempts: list[Attempt] = []
    for i, k in enumerate(module.logrows):
        spec = {**asdict(module), "attempt_logrows": k}
        work = Path(tempfile.mkdtemp(prefix=f"zkref-baseline-{module.key}-k{k}-"))
        try:
            probe_run = run_guarded([sys.executable, __file__, "--child", json.dumps(spec), "--work", str(work),
                                     "--cache", str(cache), "--probe"], timeout_s=600)
            probe = probe_run.result or {"error": probe_run.error()}
            print(f"   k={k}: gen_settings rows {probe.get('rows', '?')}", flush=True)
            per = mib_per_slot(completed)
            if i > 0 and per and "rows" in probe:
                predicted = per[0] * row_slots(probe["rows"], k)
                probe["predicted_peak_rss_mib"] = predicted
                if predicted > rss_limit_mib:
                    attempts.append(Attempt(
                        logrows=k, ok=False, result=None, wall_s=0.0, polled_peak_rss_mib=0.0,
                        min_available_mib=0.0, load_average=(0.0, 0.0), lock_wait_s=0.0, probe=probe,
                        error=f"not run: predicted peak RSS {predicted / 1024:.1f} GiB > guard limit "
                              f"{rss_limit_mib / 1024:.1f} GiB ({row_slots(probe['rows'], k):,} row slots × "
                              f"{per[0] * 1024:.2f} KiB per slot measured on {per[1]})"))
                    print(f"   k={k}: {attempts[-1].error}", flush=True)
                    continue
            with heavy_lock(f"baseline {module.key} k={k}") as waited:
                run = run_guarded([sys.executable, __file__, "--child", json.dumps(spec), "--work", str(work),
                                   "--cache", str(cache)], timeout_s=timeout, rss_limit_mib=rss_limit_mib,
                                  min_available_mib=min_available_mib, poll_s=0.1)
        finally:
            if not keep_work:
                shutil.rmtree(work, ignore_errors=True)
        attempt = Attempt(logrows=k, ok=run.ok, result=run.result, error=None if run.ok else run.error(),
                          wall_s=run.wall_s, polled_peak_rss_mib=run.polled_peak_rss_mib,
                          min_available_mib=run.min_available_mib, load_average=run.load_average, lock_wait_s=waited,
                          probe=probe)
        attempts.append(attempt)
        summary = (f"prove {run.result['timings']['prove']:.1f} s, peak {run.result['peak_rss_mib'] / 1024:.1f} GiB"
                   if run.ok else attempt.error)
        print(f"   k={k}: {summary}", flush=True)
        if run.ok:
            break
    return attempts


def chosen(attempts: list[dict]) -> dict | None:
    """The attempt that is the module's baseline (the first that completed), or None."""
    return next((a for a in attempts if a["ok"]), None)


def run_args_summary(data: dict) -> str:
    """The run arguments EZKL recorded in the first completed attempt's settings (what the recipe really ran with)."""
    for entry in data["modules"]:
        for a in entry["attempts"]:
            ra = (a.get("result") or {}).get("settings_summary", {}).get("run_args")
            if ra:
                keys = ("input_scale", "param_scale", "scale_rebase_multiplier", "decomp_base", "decomp_legs",
                        "check_mode", "input_visibility", "param_visibility", "output_visibility")
                return ", ".join(f"{k} {ra[k]}" for k in keys if k in ra)
    return "no attempt completed: none recorded"


def markdown(data: dict) -> str:
    """The baseline table (one row per attempt) from baseline.json's content."""
    meta = data["meta"]
    lines = ["# The original zkLoRA recipe on EZKL (baseline)", "",
             f"{meta['machine']}; ezkl {meta['versions'].get('ezkl')}, torch {meta['versions'].get('torch')}; "
             f"development SRS (ezkl.gen_srs). Recipe: float graph x @ Aᵀ @ Bᵀ · s, input batch {BATCH} × sequence "
             f"{SEQUENCE} = {BATCH * SEQUENCE} tokens, EZKL default run arguments ({run_args_summary(data)}), "
             "inputs public, outputs public, params private, no "
             "calibration; logrows 20 first, smaller logrows only if 20 did not fit. Each attempt is one process "
             "(all phases), memory-guarded. Times in seconds; total = settings + compile + setup + witness + prove "
             "(SRS generation excluded: it is a public one-time artefact); peak RSS = the process's peak over all "
             "phases; setup/prove RSS = that phase's own peak.", "",
             "| module | k | rows (gen_settings) | settings | compile | setup | witness | prove | verify | total | "
             "proof B | pk MiB | setup RSS GiB | prove RSS GiB | peak RSS GiB | max abs err vs float | outcome |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for entry in data["modules"]:
        for a in entry["attempts"]:
            rows = a["probe"].get("rows")
            rows_s = f"{rows:,}" if isinstance(rows, int) else "–"
            if a["ok"]:
                r, t, rss = a["result"], a["result"]["timings"], a["result"]["phase_peak_rss_mib"]
                lines.append(
                    f"| {entry['module']['label']} | {a['logrows']} | {rows_s} | {t['settings']:.1f} | "
                    f"{t['compile']:.1f} | {t['setup']:.1f} | {t['witness']:.1f} | {t['prove']:.1f} | "
                    f"{t['verify']:.2f} | {r['total_s']:.1f} | {r['proof_bytes']:,} | {r['pk_mib']:,.0f} | "
                    f"{rss['setup'] / 1024:.1f} | {rss['prove'] / 1024:.1f} | {r['peak_rss_mib'] / 1024:.1f} | "
                    f"{r['max_abs_error_vs_float']:.2g} (of {r['max_abs_float_output']:.2g}) | "
                    f"proved{'' if r['verified'] else ', DID NOT VERIFY'} |")
            else:
                lines.append(f"| {entry['module']['label']} | {a['logrows']} | {rows_s} | | | | | | | | | | | | "
                             f"{a['polled_peak_rss_mib'] / 1024:.1f} (polled) | | {a['error']} |")
    srs = [f"k={a['logrows']}: {a['result']['timings']['srs']:.0f} s" for e in data["modules"] for a in e["attempts"]
           if a["ok"] and a["result"]["srs_generated"]]
    if srs:
        lines += ["", "Development SRS generated in this run (gen_srs): " + ", ".join(srs) + "."]
    lines += ["", f"Machine memory {meta['memory_gib']:g} GiB; the guard kills a child whose RSS passes "
                  f"{meta['rss_limit_gib']:.1f} GiB or when the machine's available memory falls below "
                  f"{meta['min_available_mib']:.0f} MiB. Load average (1 min) at start/end of each attempt is in "
                  "baseline.json."]
    when = [f"{e['module']['label']}: {e['measured_utc']}" for e in data["modules"] if e.get("measured_utc")]
    if when:
        lines += ["", "Measured: " + "; ".join(when) + "."]
    if not meta.get("complete", True):
        lines += ["", "PARTIAL: written after the modules above; the run had more modules to measure."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", nargs="*", default=list(MODULES), help=f"of {', '.join(MODULES)}")
    ap.add_argument("--logrows", nargs="*", type=int, help="logrows to try, largest first (default per module)")
    add_part_arguments(ap, "baseline", timeout=3600.0, timeout_help="seconds per attempt",
                       quick_help="one tiny module at logrows 15 (smoke test)", probe=True)
    ap.add_argument("--reserve-mib", type=float, default=BASELINE_RESERVE_MIB,
                    help="the guard kills an attempt whose RSS passes total memory minus this")
    ap.add_argument("--min-available-mib", type=float, default=BASELINE_MIN_AVAILABLE_MIB,
                    help="… or when the machine's available memory falls below this")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the measured modules in the existing baseline.json, keep the others")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.work, args.cache, args.probe)), flush=True)
        return
    if args.render:
        data = json.loads((args.results / "baseline.json").read_text())
        (args.results / "baseline.md").write_text(markdown(data))
        return
    if not args.quick and not args.modules:
        ap.error("--modules needs at least one module")
    cache = bench_cache(args.cache)
    modules = list(QUICK.values()) if args.quick else [MODULES[m] for m in args.modules]
    if args.logrows:
        modules = [BaselineModule(**{**asdict(m), "logrows": tuple(args.logrows)}) for m in modules]
    start, entries, completed = time.perf_counter(), [], []
    for module in modules:
        print(f"-- baseline {module.label}", flush=True)
        attempts = run_module(module, cache, args.timeout, rss_limit_mib=meminfo_mib("MemTotal") - args.reserve_mib,
                              min_available_mib=args.min_available_mib, completed=completed)
        entries.append({"module": asdict(module) | {"tokens": module.tokens, "macs": module.macs},
                        "attempts": [asdict(a) for a in attempts], "measured_utc": utc_now()})
        completed += [{"label": module.label, "attempt": asdict(a)} for a in attempts if a.ok]
        # after every module, so that a run stopped during a later (longer) module keeps the finished ones
        data = save(args, entries, time.perf_counter() - start, complete=len(entries) == len(modules))
    print(markdown(data))


def save(args: argparse.Namespace, entries: list[dict], elapsed_s: float, *, complete: bool) -> dict:
    """Write baseline.{json,md} with the modules measured so far (`complete` False while others are still to run)."""
    machine = Machine.here()
    meta = {"machine": machine.describe(), "memory_gib": machine.memory_gib, "versions": versions(),
            "elapsed_s": elapsed_s, "quick": args.quick, "complete": complete,
            "rss_limit_gib": (meminfo_mib("MemTotal") - args.reserve_mib) / 1024,
            "min_available_mib": args.min_available_mib}
    path = args.results / "baseline.json"
    if args.merge and path.exists():
        entries = merge_entries(json.loads(path.read_text())["modules"], entries, lambda e: e["module"]["key"])
    data = {"meta": meta, "modules": entries}
    write_results(args.results, "baseline", data, markdown(data))
    return data


if __name__ == "__main__":
    main()
