"""The design note's straw man on EZKL: the DENSE product y = x · ΔWᵀ with ΔW = B_q · A_q, proven with exactly the
settings the EZKL backend uses for the low-rank statement, so that dense ÷ low-rank isolates the factorisation.

Settings (backends.ezkl.settings.RunSettings, as for the statement): input and param scale 0, rebase multiplier 1,
decomp base 256, check mode safe, input/output range checks off (the verifier range-checks x and y), x and y
polycommit, ΔW fixed (in the verifying key), layout chosen by backends.ezkl.settings.choose_layout from gen_settings'
rows, as the backend chooses it. The witness's y is checked equal to the exact integer product x_q · ΔWᵀ.

Cases run largest-last; a case is not started when its predicted peak RSS (its gen_settings cells times the largest
MiB-per-cell measured on a smaller dense case of this run) exceeds what the memory guard allows, and is reported as
"did not fit" with that prediction; a started case is memory-guarded anyway. Writes results/dense_ezkl.{json,md}.

    python benchmarks/bench_dense_ezkl.py [--only 768→768 ...] [--quick]
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

from harness import (RESERVE_MIB, Machine, add_part_arguments, bench_cache, export_onnx, heavy_lock, meminfo_mib,  # noqa: E402
                     run_guarded, run_pipeline, versions, write_results)


@dataclass(frozen=True)
class DenseCase:
    """One dense ΔW·x product: the ΔW of a rank-r int4 adapter of shape d_in → d_out, T tokens."""

    d_in: int
    d_out: int
    rank: int
    tokens: int

    @property
    def name(self) -> str:
        return f"{self.d_in}→{self.d_out} r{self.rank} T{self.tokens}"

    @property
    def macs(self) -> int:
        return self.tokens * self.d_in * self.d_out


CASES = (DenseCase(768, 768, 8, 1), DenseCase(768, 2304, 8, 1), DenseCase(768, 768, 8, 15),
         DenseCase(768, 2304, 8, 15), DenseCase(4096, 4096, 16, 1), DenseCase(4096, 4096, 16, 15))
QUICK = (DenseCase(16, 24, 2, 1), DenseCase(16, 24, 2, 15))
"""--quick: the tiny module of the other parts' --quick runs (16→24 r=2 at T = 1 and 15)."""


def witness(case: DenseCase, seed: int = 0):
    """int4 A_q (r × d_in), B_q (d_out × r), int8 x_q (T × d_in) as the low-rank benchmark draws them; ΔW = B_q·A_q."""
    import numpy as np

    rng = np.random.default_rng(seed)
    A = rng.integers(-8, 8, (case.rank, case.d_in))
    B = rng.integers(-8, 8, (case.d_out, case.rank))
    x = rng.integers(-128, 128, (case.tokens, case.d_in))
    return A, B, x, B @ A


def run_args(case: DenseCase, dW, logrows: int = 13):
    """The backend's pinned settings for this graph: scale 0, no rebase, decomposition legs for |y|'s bound."""
    from backends.ezkl.graph import DECOMP_BASE
    from backends.ezkl.settings import RunSettings, Visibility

    bound = case.d_in * 128 * int(abs(dW).max() or 1)
    legs = max(2, math.ceil(bound.bit_length() / math.log2(DECOMP_BASE)))
    return RunSettings(input_visibility=Visibility.POLYCOMMIT, param_visibility=Visibility.FIXED,
                       output_visibility=Visibility.POLYCOMMIT, input_scale=0, decomp_legs=legs, logrows=logrows)


def child(spec: dict, work: str, cache: str, probe_only: bool) -> dict:
    """In the child: export the dense graph; probe gen_settings or run the whole pipeline and check y exactly."""
    import ezkl
    import numpy as np
    import torch

    from backends.ezkl.settings import choose_layout

    case = DenseCase(**spec)
    A, B, x, dW = witness(case)

    class Dense(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.W = torch.nn.Parameter(torch.tensor(dW, dtype=torch.float32), requires_grad=False)

        def forward(self, inp):
            return inp @ self.W.t()

    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    onnx = work_dir / "dense.onnx"
    export_onnx(Dense(), torch.zeros(case.tokens, case.d_in), onnx)
    ra = run_args(case, dW)
    if probe_only:
        t0 = time.perf_counter()
        ezkl.gen_settings(str(onnx), str(work_dir / "probe.json"), py_run_args=ra.py_run_args())
        s = json.loads((work_dir / "probe.json").read_text())
        return {"rows": s["num_rows"], "einsum_cells": s["einsum_params"]["total_einsum_col_size"],
                "gen_settings_s": time.perf_counter() - t0}

    def choose(settings: dict):
        layout = choose_layout(settings["num_rows"], 0, 0)
        return layout.logrows, layout.num_inner_cols

    data = {"input_data": [[float(v) for v in x.reshape(-1).tolist()]]}
    res = run_pipeline(onnx, ra.py_run_args(), data, work_dir, Path(cache) / "ezkl", choose=choose)
    exact = (x @ dW.T).reshape(-1)
    out = res.to_dict()
    out["outputs"] = len(res.outputs)
    out.pop("output_felts", None)
    out["exact"] = bool(np.array_equal(np.rint(np.asarray(res.outputs)).astype(np.int64), exact))
    out["total_s"] = res.total_s
    return out


def cells(probe: dict) -> int:
    """The size measure the RSS prediction scales with: gen_settings' rows plus Freivalds einsum cells."""
    return int(probe.get("rows", 0)) + int(probe.get("einsum_cells", 0))


def run_case(case: DenseCase, cache: Path, timeout: float, rss_limit_mib: float,
             measured: list[dict]) -> dict:
    """Probe, predict, and (if it may fit) run one case under the lock and the memory guard."""
    work = Path(tempfile.mkdtemp(prefix="zkref-dense-"))
    spec = json.dumps(asdict(case))
    try:
        probe_run = run_guarded([sys.executable, __file__, "--child", spec, "--work", str(work), "--cache", str(cache),
                                 "--probe"], timeout_s=1200, rss_limit_mib=rss_limit_mib)
        if not probe_run.ok:
            return {"case": asdict(case), "ok": False, "error": f"gen_settings: {probe_run.error()}"}
        probe = probe_run.result
        per_cell = max((m["result"]["peak_rss_mib"] / cells(m["probe"]) for m in measured), default=None)
        predicted = per_cell * cells(probe) if per_cell else None
        entry = {"case": asdict(case), "probe": probe, "predicted_rss_mib": predicted,
                 "rss_limit_mib": rss_limit_mib}
        if predicted is not None and predicted > rss_limit_mib:
            basis = max(measured, key=lambda m: m["result"]["peak_rss_mib"] / cells(m["probe"]))
            entry.update(ok=False, error=f"not run: predicted peak RSS {predicted / 1024:.1f} GiB > guard limit "
                                         f"{rss_limit_mib / 1024:.1f} GiB ({cells(probe):,} rows + einsum cells × "
                                         f"{per_cell * 1024:.2f} KiB per cell measured on "
                                         f"{DenseCase(**basis['case']).name})")
            return entry
        with heavy_lock(f"dense {case.name}") as waited:
            run = run_guarded([sys.executable, __file__, "--child", spec, "--work", str(work), "--cache", str(cache)],
                              timeout_s=timeout, rss_limit_mib=rss_limit_mib)
        entry.update(ok=run.ok, result=run.result, error=None if run.ok else run.error(), wall_s=run.wall_s,
                     polled_peak_rss_mib=run.polled_peak_rss_mib, load_average=run.load_average, lock_wait_s=waited)
        return entry
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(data: dict) -> str:
    """The dense table from dense_ezkl.json's content."""
    meta = data["meta"]
    lines = ["# Dense ΔW·x on EZKL (the design note's straw man)", "",
             f"{meta['machine']}; ezkl {meta['versions'].get('ezkl')}; development SRS. y = x·ΔWᵀ with ΔW = B_q·A_q "
             "(int4 factors, so |ΔW| ≤ 64·r) fixed in the circuit, x and y polycommit, the EZKL backend's pinned "
             "settings and layout rule; one process per case (all phases). Times in seconds; total = settings + "
             "compile + setup + witness + prove (SRS excluded). exact: the witness's y equals x_q·ΔWᵀ.", "",
             "| case | MACs | k | cols | rows | einsum cells | settings | compile | setup | witness | prove | verify | "
             "total | proof B | pk MiB | peak RSS MiB | exact | load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    missing = []
    for e in data["results"]:
        c = DenseCase(**e["case"])
        if not e["ok"]:
            missing.append(f"- {c.name} ({c.macs:,} MACs): {e['error']}")
            continue
        r, t = e["result"], e["result"]["timings"]
        lines.append(f"| {c.name} | {c.macs:,} | {r['logrows']} | {r['num_inner_cols']} | {r['rows']:,} | "
                     f"{r['einsum_cells']:,} | {t['settings']:.1f} | {t['compile']:.1f} | {t['setup']:.1f} | "
                     f"{t['witness']:.1f} | {t['prove']:.1f} | {t['verify']:.2f} | {r['total_s']:.1f} | "
                     f"{r['proof_bytes']:,} | {r['pk_mib']:,.0f} | {r['peak_rss_mib']:,.0f} | "
                     f"{'yes' if r['exact'] else 'NO'} | {e['load_average'][1]:.1f} |")
    if missing:
        lines += ["", "Did not fit or failed:", *missing]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run only cases whose name contains one of these")
    add_part_arguments(ap, "dense_ezkl", timeout=1800.0, timeout_help="seconds per case",
                       quick_help="two tiny cases (smoke test)", probe=True)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.work, args.cache, args.probe)), flush=True)
        return
    if args.render:
        data = json.loads((args.results / "dense_ezkl.json").read_text())
        (args.results / "dense_ezkl.md").write_text(markdown(data))
        return
    cache = bench_cache(args.cache)
    limit = meminfo_mib("MemTotal") - RESERVE_MIB
    start, results, measured = time.perf_counter(), [], []
    for case in QUICK if args.quick else CASES:
        if args.only and not any(s in case.name for s in args.only):
            continue
        print(f"-- dense {case.name}", flush=True)
        entry = run_case(case, cache, args.timeout, limit, measured)
        results.append(entry)
        if entry["ok"]:
            measured.append(entry)
            print(f"   prove {entry['result']['timings']['prove']:.1f} s, peak "
                  f"{entry['result']['peak_rss_mib']:.0f} MiB", flush=True)
        else:
            print(f"   {entry['error']}", flush=True)
    machine = Machine.here()
    data = {"meta": {"machine": machine.describe(), "versions": versions(), "elapsed_s": time.perf_counter() - start,
                     "quick": args.quick}, "results": results}
    write_results(args.results, "dense_ezkl", data, markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
