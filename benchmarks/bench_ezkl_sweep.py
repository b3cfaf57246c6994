"""Ours on EZKL, swept: prove time against d, r and T; EZKL's "lanes" (inner columns); int4 against int8 weights.

Sweeps (x polycommit, adapter fixed, y polycommit — the backend's default statement — unless a case says otherwise):
  d      d_in = d_out = d ∈ {256, 512, 768, 1024, 2048, 4096}, r = 8, T = 1
  r      d = 768, r ∈ {4, 8, 16, 32, 64}, T = 1
  T      d = 768, r = 8, T ∈ {1, 2, 4, 8, 15, 30}
  c_attn GPT-2-small c_attn 768→2304 r = 8 at T = 1 (the low-rank side of the dense comparison at one token)
  int8   c_attn T = 15 and q_proj 4096→4096 r16 T = 1 with int8 weights (their int4 twins are in bench_ezkl)
  lanes  c_attn T = 15 with EZKL's num_inner_cols ∈ {1, 2, 4}, each at the least k its rows fit in one column set
         (EZKL's analogue of zkref's L lookups per row: more cells per row, fewer rows)
The backend cases reuse bench_ezkl's child (fresh processes: cold = settings + compile + setup + witness + prove,
warm = prove again from the cache); the lanes cases run the backend's own graph and pinned run arguments through
the plain pipeline (the backend does not expose num_inner_cols). The shift of every case is the smallest that does
not clamp its own random activations (zkref.primitives.quant.choose_shift). Every case holds the heavy-run lock and
runs memory-guarded. Writes results/ezkl_sweep.{json,md}.

    python benchmarks/bench_ezkl_sweep.py [--only d r T c_attn int8 lanes] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ezkl import MODES  # noqa: E402  (the x/adapter/y binding modes: one definition)
from harness import (HERE, Machine, add_part_arguments, bench_cache, heavy_lock, run_guarded, run_pipeline,  # noqa: E402
                     versions, write_results)

MODE = "pc/fixed/pc"


@dataclass(frozen=True)
class SweepCase:
    """One measured point: which sweep it belongs to, the statement's shape, mode and weight width, and for the
    lanes sweep EZKL's inner columns."""

    sweep: str
    d_in: int
    d_out: int
    rank: int
    tokens: int
    mode: str = MODE
    weight_bits: int = 4
    inner_cols: int | None = None

    @property
    def name(self) -> str:
        extra = f" int{self.weight_bits}" if self.weight_bits != 4 else ""
        extra += f" cols={self.inner_cols}" if self.inner_cols else ""
        return f"{self.sweep}: {self.d_in}→{self.d_out} r{self.rank} T{self.tokens} {self.mode}{extra}"

    @property
    def macs(self) -> int:
        return self.tokens * self.rank * (self.d_in + self.d_out)


def cases(quick: bool = False) -> list[SweepCase]:
    """Every case of the sweep (or the --quick smoke set)."""
    if quick:
        return [SweepCase("d", 16, 16, 2, 1), SweepCase("d", 32, 32, 2, 1), SweepCase("r", 16, 16, 2, 1),
                SweepCase("r", 16, 16, 4, 1), SweepCase("T", 16, 16, 2, 1), SweepCase("T", 16, 16, 2, 3),
                SweepCase("c_attn", 16, 24, 2, 1), SweepCase("int8", 16, 16, 2, 1, weight_bits=8),
                SweepCase("lanes", 16, 24, 2, 3, inner_cols=1), SweepCase("lanes", 16, 24, 2, 3, inner_cols=2)]
    out = [SweepCase("d", d, d, 8, 1) for d in (256, 512, 768, 1024, 2048, 4096)]
    out += [SweepCase("r", 768, 768, r, 1) for r in (4, 8, 16, 32, 64)]
    out += [SweepCase("T", 768, 768, 8, t) for t in (1, 2, 4, 8, 15, 30)]
    out += [SweepCase("c_attn", 768, 2304, 8, 1)]
    out += [SweepCase("int8", 768, 2304, 8, 15, weight_bits=8), SweepCase("int8", 4096, 4096, 16, 1, weight_bits=8)]
    out += [SweepCase("lanes", 768, 2304, 8, 15, inner_cols=c) for c in (1, 2, 4)]
    return out


def draw(case: SweepCase):
    """The random witness bench_ezkl's child draws (seed 0, same order), so the parent can calibrate the shift."""
    import numpy as np

    rng = np.random.default_rng(0)
    lo, hi = -(1 << (case.weight_bits - 1)), 1 << (case.weight_bits - 1)
    A = rng.integers(lo, hi, (case.rank, case.d_in))
    B = rng.integers(lo, hi, (case.d_out, case.rank))
    x = rng.integers(-128, 128, (case.tokens, case.d_in))
    return A, B, x


def shift_for(case: SweepCase) -> int:
    """The smallest shift that does not clamp this case's own activations' z = x·Aᵀ."""
    from zkref.primitives.quant import choose_shift

    A, _, x = draw(case)
    return choose_shift(x @ A.T)


def lanes_child(spec: dict, work: str, cache: str) -> dict:
    """In the child: the backend's statement graph and pinned run arguments, with num_inner_cols forced and k the
    least that holds the rows in one column set (never below the instance floor)."""
    from backends.ezkl import graph
    from backends.ezkl.settings import k_floor, run_args_for
    from backends.kzg import EZKL_UNUSABLE_ROWS
    from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness, evaluate, instance_length
    from zkref.primitives.field import felt_from_str, signed

    case = SweepCase(**{k: v for k, v in spec.items() if k != "shift"})
    x_b, a_b, y_b = MODES[case.mode]
    st = LoRAStatement(shape=LoRAShape(d_in=case.d_in, d_out=case.d_out, rank=case.rank, tokens=case.tokens),
                       shift=spec["shift"], x_binding=x_b, adapter_binding=a_b, y_binding=y_b,
                       weight_bits=case.weight_bits)
    A, B, x = draw(case)
    w = LoRAWitness(A_q=A, B_q=B, x_q=x)
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    onnx = work_dir / "model.onnx"
    graph.export_onnx(st, w, onnx)
    floor = k_floor(instance_length(st))
    cols = case.inner_cols or 2

    def choose(settings: dict):
        fit = math.ceil(math.log2(settings["num_rows"] + EZKL_UNUSABLE_ROWS + 1))
        return max(floor, fit), cols

    ra = run_args_for(st, logrows=max(floor, 13), num_inner_cols=cols).py_run_args()
    res = run_pipeline(onnx, ra, graph.input_data(x, st.shift), work_dir, Path(cache) / "ezkl", choose=choose)
    trace = evaluate(st, w)
    out = res.to_dict()
    out["exact"] = [signed(felt_from_str(f)) for f in res.output_felts] == graph.output_cells(st, trace.y_q)
    out["outputs"] = len(res.outputs)
    del out["output_felts"]
    out["total_s"] = res.total_s
    return out


def run_backend_case(case: SweepCase, shift: int, cache: Path, timeout: float) -> dict:
    """Cold then warm through bench_ezkl's child, each memory-guarded, under one hold of the lock."""
    spec = {"name": case.name, "d_in": case.d_in, "d_out": case.d_out, "rank": case.rank, "tokens": case.tokens,
            "shift": shift, "mode": case.mode, "weight_bits": case.weight_bits}
    out: dict = {}
    with heavy_lock(case.name) as waited:
        for phase in ("cold", "warm"):
            run = run_guarded([sys.executable, str(HERE / "bench_ezkl.py"), "--child", json.dumps(spec),
                               "--cache", str(cache), "--phase", phase], timeout_s=timeout)
            out[phase] = run.result if run.ok else {"error": run.error()}
            out[f"{phase}_load_average"] = run.load_average
            if not run.ok or "unsupported" in run.result:
                break
    out["lock_wait_s"] = waited
    for entry in (cache / "ezkl" / "circuits").glob("*"):       # keys are big: keep disk use bounded
        shutil.rmtree(entry, ignore_errors=True)
    return out


def run_lanes_case(case: SweepCase, shift: int, cache: Path, timeout: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="zkref-lanes-"))
    spec = {**asdict(case), "shift": shift}
    try:
        with heavy_lock(case.name) as waited:
            run = run_guarded([sys.executable, __file__, "--lanes-child", json.dumps(spec), "--work", str(work),
                               "--cache", str(cache)], timeout_s=timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"pipeline": run.result if run.ok else {"error": run.error()}, "load_average": run.load_average,
            "lock_wait_s": waited}


def ok(entry: dict) -> bool:
    """Whether a sweep entry produced a measurement (warm for backend cases, the pipeline for lanes cases)."""
    if entry["case"].get("inner_cols"):
        return "timings" in entry.get("pipeline", {})
    return "timings" in entry.get("cold", {}) and "timings" in entry.get("warm", {})


def markdown(data: dict) -> str:
    """The sweep tables from ezkl_sweep.json's content."""
    meta = data["meta"]
    lines = ["# Ours on EZKL, swept (d, r, T, int8 weights, inner columns)", "",
             f"{meta['machine']}; ezkl {meta['versions'].get('ezkl')}; development SRS; the EZKL backend's statement "
             "graph and pinned settings; modes x/adapter/y (pc = polycommit). Backend cases: fresh processes, cold = "
             "settings + compile + setup + witness + prove, warm = prove from the cache; RSS = warm process's peak. "
             "Times in seconds. load = 1-minute load average at the end (above the core count: shared machine).", "",
             "| sweep | case | MACs | shift | k | cols | rows | setup | prove cold | prove warm | verify | proof B | "
             "warm RSS MiB | load |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lanes, failed = [], []
    for e in data["results"]:
        c = SweepCase(**e["case"])
        if not ok(e):
            err = e.get("pipeline", e.get("warm", e.get("cold", {}))).get("error") or e.get("cold", {}).get("error")
            failed.append(f"- {c.name}: {err}")
            continue
        if c.inner_cols:
            lanes.append((c, e))
            continue
        cold, warm = e["cold"], e["warm"]
        lines.append(f"| {c.sweep} | {c.d_in}→{c.d_out} r{c.rank} T{c.tokens} int{c.weight_bits} | {c.macs:,} | "
                     f"{e['shift']} | {cold['k']} | {cold['num_inner_cols']} | {cold['rows']:,} | "
                     f"{cold['timings']['setup']:.1f} | {cold['timings']['prove']:.1f} | "
                     f"{warm['timings']['prove']:.1f} | {warm['verify_s']:.3f} | {warm['proof_bytes']:,} | "
                     f"{warm['peak_rss_mib']:.0f} | {e['warm_load_average'][1]:.1f} |")
    if lanes:
        lines += ["", "EZKL's inner columns (its analogue of lanes): the same statement graph and pinned run arguments "
                      "with num_inner_cols forced, each at the least k its rows fit in one column set; one process.", "",
                  "| case | inner cols | rows | k | setup | prove | verify | proof B | peak RSS MiB | exact | load |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for c, e in lanes:
            p = e["pipeline"]
            lines.append(f"| {c.d_in}→{c.d_out} r{c.rank} T{c.tokens} | {p['num_inner_cols']} | {p['rows']:,} | "
                         f"{p['logrows']} | {p['timings']['setup']:.1f} | {p['timings']['prove']:.1f} | "
                         f"{p['timings']['verify']:.3f} | {p['proof_bytes']:,} | {p['peak_rss_mib']:.0f} | "
                         f"{'yes' if p['exact'] else 'NO'} | {e['load_average'][1]:.1f} |")
    if failed:
        lines += ["", "Failed:", *failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run only these sweeps (d r T c_attn int8 lanes)")
    add_part_arguments(ap, "ezkl_sweep", timeout=900.0, timeout_help="seconds per process",
                       quick_help="tiny shapes (smoke test)", child_flag="--lanes-child")
    args = ap.parse_args(argv)
    if args.lanes_child:
        print(json.dumps(lanes_child(json.loads(args.lanes_child), args.work, args.cache)), flush=True)
        return
    if args.render:
        data = json.loads((args.results / "ezkl_sweep.json").read_text())
        (args.results / "ezkl_sweep.md").write_text(markdown(data))
        return
    cache = bench_cache(args.cache)
    start, results = time.perf_counter(), []
    for case in cases(args.quick):
        if args.only and case.sweep not in args.only:
            continue
        shift = shift_for(case)
        print(f"-- sweep {case.name} (shift {shift})", flush=True)
        t0 = time.perf_counter()
        entry = (run_lanes_case if case.inner_cols else run_backend_case)(case, shift, cache, args.timeout)
        entry = {"case": asdict(case), "shift": shift, "wall_s": time.perf_counter() - t0, **entry}
        results.append(entry)
        if ok(entry):
            p = entry["pipeline"] if case.inner_cols else entry["warm"]
            print(f"   prove {p['timings']['prove']:.1f} s", flush=True)
        else:
            print(f"   failed: {json.dumps(entry)[:300]}", flush=True)
    machine = Machine.here()
    data = {"meta": {"machine": machine.describe(), "versions": versions(), "elapsed_s": time.perf_counter() - start,
                     "quick": args.quick, "mode": MODE}, "results": results}
    write_results(args.results, "ezkl_sweep", data, markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
