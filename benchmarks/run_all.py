"""Run the whole benchmark suite, then regenerate every plot and the performance report from its JSON results.

    python benchmarks/run_all.py [--quick] [--only PART ...] [--skip PART ...] [--results DIR] [--cache DIR]
    python benchmarks/run_all.py --headline     (the end-to-end comparison alone, about 20 minutes and ~23 GiB)
    make bench                          (the same, default run)

Parts, in order (each a script in this folder writing NAME.json and NAME.md into the results directory):
  accounting  zkref's accounting of its custom circuit (seconds)
  ezkl        ours on EZKL per binding mode and shape (bench_ezkl.py)
  ezkl_sweep  ours on EZKL against d, r, T; int8 weights; EZKL's inner columns
  profile     where EZKL's proving time goes (perf phases, graph-part ablations) for c_attn T=15 and q_proj T=1
  ezkl_levers settings and graph changes against today's pinned settings, interleaved
  generation  a whole generation through the server: 12-layer GPT-2-small c_attn LoRA, call by call vs batched,
              1 and 2 workers, Ray local (about 40 minutes)
  dense_ezkl  the dense ΔW·x straw man on EZKL, where it fits in memory
  baseline    the original zkLoRA recipe (logrows 20; about 20 minutes and ~23 GiB for GPT-2 c_attn)
  lora, mock_prover, poseidon, digest, accuracy   the older zkref benchmarks (not in --quick: no tiny mode)
  soak        the contributor server (zkref serve) under ≥ 5,000 hostile requests while an honest client verifies
  plots       PNGs from the JSON (plots.py)
  performance the README's performance section, results/performance.md (performance.py)
Every part's wall time goes to results/suite.{json,md}. EZKL parts take the heavy-run lock (/tmp/zkref-heavy.lock,
ZKREF_HEAVY_LOCK; empty disables) per case; the run itself must not be wrapped in flock on the same file.
--headline: only the README's end-to-end comparison, in one run: ours on GPT-2 c_attn T=15 in every binding mode
(`HEADLINE_CASES`, merged into ezkl.json), then the original recipe on the same module (merged into baseline.json),
then the report.
--quick: tiny shapes for every EZKL part and the accounting, into a temporary results directory (smoke test); no
figure from it is meaningful. A failing part does not stop the run; the exit code is 1 if any part failed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import RESULTS, bench_cache, heavy_lock, utc_now  # noqa: E402


@dataclass(frozen=True)
class Part:
    """One step of the suite: its script, whether it takes --results/--cache/--quick, and whether it locks itself."""

    name: str
    script: str
    results_flag: bool = True
    cache_flag: bool = False
    quick: bool = True
    """Runs in --quick mode (with --quick); False: skipped there (no tiny mode, writes into benchmarks/results)."""
    locks_itself: bool = True
    """Takes the heavy-run lock per case; otherwise run_all holds it around the whole part (timed parts only)."""
    timed: bool = True


PARTS = (
    Part("accounting", "bench_accounting.py", locks_itself=False, timed=False),
    Part("ezkl", "bench_ezkl.py", cache_flag=True),
    Part("ezkl_sweep", "bench_ezkl_sweep.py", cache_flag=True),
    Part("profile", "bench_profile.py", cache_flag=True),
    Part("ezkl_levers", "bench_ezkl_levers.py", cache_flag=True),
    Part("generation", "bench_generation.py", cache_flag=True),
    Part("dense_ezkl", "bench_dense_ezkl.py", cache_flag=True),
    Part("baseline", "bench_baseline.py", cache_flag=True),
    Part("lora", "bench_lora.py", results_flag=False, quick=False, locks_itself=False),
    Part("mock_prover", "bench_mock_prover.py", results_flag=False, quick=False, locks_itself=False),
    Part("poseidon", "bench_poseidon.py", results_flag=False, quick=False, locks_itself=False),
    Part("digest", "bench_digest.py", results_flag=False, quick=False, locks_itself=False),
    Part("accuracy", "bench_accuracy.py", results_flag=False, cache_flag=True, quick=False),
    Part("soak", "soak.py", locks_itself=False),
    Part("plots", "plots.py", locks_itself=False, timed=False),
    Part("performance", "performance.py", locks_itself=False, timed=False),
)
REPORT_PARTS = ("plots", "performance")
HEADLINE_CASES = ("c_attn 768→2304 r8 T15 pc/", "c_attn 768→2304 r8 T15 pub/")
"""bench_ezkl case-name filters of `--headline`: c_attn T=15 in the modes performance.md compares (not its k sweeps)."""
HEADLINE_ARGS = {"ezkl": ["--merge", "--only", *HEADLINE_CASES], "baseline": ["--merge", "--modules", "c_attn"]}
"""The extra arguments of each part `--headline` runs (the report parts run as always)."""


@dataclass(frozen=True)
class PartRun:
    """How one part went."""

    name: str
    seconds: float
    status: str
    command: list[str]


def command(part: Part, results: Path, cache: Path, quick: bool, extra: list[str] | None = None) -> list[str]:
    cmd = [sys.executable, str(HERE / part.script), *(extra or [])]
    if part.results_flag:
        cmd += ["--results", str(results)]
    if part.cache_flag:
        cmd += ["--cache", str(cache)]
    if quick and part.name not in REPORT_PARTS and part.quick:
        cmd.append("--quick")
    return cmd


def run_part(part: Part, cmd: list[str]) -> PartRun:
    print(f"\n== {part.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    if part.locks_itself or not part.timed:
        rc = subprocess.call(cmd)
    else:
        with heavy_lock(part.name):
            rc = subprocess.call(cmd)
    seconds = time.perf_counter() - t0
    status = "ok" if rc == 0 else f"failed (exit code {rc})"
    print(f"== {part.name}: {status} in {seconds:,.0f} s", flush=True)
    return PartRun(part.name, seconds, status, cmd)


def suite_markdown(data: dict) -> str:
    lines = ["# Benchmark suite run", "", f"`{data['command']}`, started {data['started']}; "
             f"{data['elapsed_s'] / 60:,.1f} min in all.", "", "| part | seconds | status |", "|---|---:|---|"]
    lines += [f"| {p['name']} | {p['seconds']:,.0f} | {p['status']} |" for p in data["parts"]]
    return "\n".join(lines) + "\n"


def write_suite(results: Path, started: str, t0: float, runs: list[PartRun], quick: bool, argv: list[str]) -> None:
    data = {"started": started, "elapsed_s": time.perf_counter() - t0, "quick": quick,
            "command": "python benchmarks/run_all.py" + ("" if not argv else " " + " ".join(argv)),
            "parts": [asdict(r) for r in runs]}
    results.mkdir(parents=True, exist_ok=True)
    (results / "suite.json").write_text(json.dumps(data, indent=1) + "\n")
    (results / "suite.md").write_text(suite_markdown(data))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = [p.name for p in PARTS]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes into a temporary results directory (smoke test)")
    ap.add_argument("--only", nargs="*", choices=names, help="run only these parts (plots and performance always run)")
    ap.add_argument("--skip", nargs="*", choices=names, default=[], help="skip these parts")
    ap.add_argument("--headline", action="store_true",
                    help="only ours and the original recipe on GPT-2 c_attn T=15, in one run, then the report")
    ap.add_argument("--results", type=Path, help="results directory (default benchmarks/results; --quick: a new "
                                                  "temporary directory)")
    ap.add_argument("--cache", help="SRS cache root (default $ZKREF_BENCH_CACHE or ~/.cache/zkref-bench)")
    args = ap.parse_args(argv)
    if args.headline and (args.quick or args.only):
        ap.error("--headline runs its own parts: not with --quick or --only")
    if args.headline:
        args.only = list(HEADLINE_ARGS)
    results = args.results or (Path(tempfile.mkdtemp(prefix="zkref-bench-quick-")) if args.quick else RESULTS)
    cache = bench_cache(args.cache)
    started = utc_now()
    t0, runs = time.perf_counter(), []
    for part in PARTS:
        wanted = (not args.only or part.name in args.only or part.name in REPORT_PARTS) and part.name not in args.skip
        if not wanted:
            continue
        if args.quick and not part.quick:
            runs.append(PartRun(part.name, 0.0, "skipped in --quick (no tiny mode)", []))
            continue
        if part.name == "plots":          # the report parts read suite.json: write what ran so far first
            write_suite(results, started, t0, runs, args.quick, argv)
        extra = HEADLINE_ARGS.get(part.name) if args.headline else None
        runs.append(run_part(part, command(part, results, cache, args.quick, extra)))
        if part.name == "plots":          # performance.md lists the plots and the part times, plots included
            write_suite(results, started, t0, runs, args.quick, argv)
    write_suite(results, started, t0, runs, args.quick, argv)
    if any(r.name == "performance" for r in runs):      # final part times (the report's own time included)
        subprocess.call([sys.executable, str(HERE / "performance.py"), "--results", str(results)],
                        stdout=subprocess.DEVNULL)
    print(f"\nresults in {results}")
    print(suite_markdown(json.loads((results / "suite.json").read_text())))
    return 1 if any(r.status.startswith("failed") for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
