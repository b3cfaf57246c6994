"""Smoke tests of the benchmark suite (benchmarks/): its pieces run at tiny sizes, and every table and plot
regenerates from the JSON they wrote. No timing is asserted anywhere (timings live in benchmarks/results).

The EZKL parts run once per session, at their --quick sizes, into a temporary results directory with a temporary
SRS cache, without the heavy-run lock (ZKREF_HEAVY_LOCK empty).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_accounting  # noqa: E402
import harness  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------------
# harness
# ----------------------------------------------------------------------------------------------------------------------

def test_guarded_child_returns_its_last_json_line():
    run = harness.run_guarded([sys.executable, "-c", "print('noise'); print('{\"a\": 1}'); print('{\"b\": 2}')"],
                              timeout_s=60)
    assert run.ok and run.result == {"b": 2} and run.killed is None and run.returncode == 0


def test_guard_kills_a_child_over_its_memory_limit():
    code = "import time\nx = bytearray(400 * 2**20)\nfor i in range(0, len(x), 4096): x[i] = 1\ntime.sleep(30)"
    run = harness.run_guarded([sys.executable, "-c", code], timeout_s=60, rss_limit_mib=150, poll_s=0.05)
    assert not run.ok
    assert run.killed and "memory guard" in run.killed
    assert run.polled_peak_rss_mib > 150


def test_guard_kills_on_timeout_and_reports_failures():
    run = harness.run_guarded([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert run.killed and "timed out" in run.killed
    failed = harness.run_guarded([sys.executable, "-c", "raise SystemExit('boom')"], timeout_s=60)
    assert not failed.ok and "boom" in failed.error()


def test_heavy_lock_can_be_disabled_and_is_exclusive(tmp_path, monkeypatch):
    monkeypatch.setenv("ZKREF_HEAVY_LOCK", "")
    with harness.heavy_lock() as waited:
        assert waited == 0.0
    lock = tmp_path / "heavy.lock"
    monkeypatch.setenv("ZKREF_HEAVY_LOCK", str(lock))
    probe = ("import fcntl, sys\nf = open(sys.argv[1], 'a+b')\n"
             "try:\n    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')")
    with harness.heavy_lock():
        held = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True).stdout
    free = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True).stdout
    assert held.strip() == "held" and free.strip() == "free"


def test_phase_peak_rss_can_be_reset():
    big = bytearray(64 * 2**20)
    for i in range(0, len(big), 4096):
        big[i] = 1
    before = harness.peak_rss_mib()
    del big
    harness.reset_peak_rss()
    assert harness.peak_rss_mib() < before


# ----------------------------------------------------------------------------------------------------------------------
# accounting (no EZKL)
# ----------------------------------------------------------------------------------------------------------------------

def test_accounting_quick_regenerates_from_json(tmp_path):
    bench_accounting.main(["--quick", "--results", str(tmp_path)])
    data = json.loads((tmp_path / "accounting.json").read_text())
    assert (tmp_path / "accounting.md").read_text() == bench_accounting.markdown(data)
    assert {e["lanes"] for e in data["lanes"]} == set(bench_accounting.LANES)
    strategies = data["modules"][0]["report"]["strategies"]
    assert {"dense", "lowrank-table", "lowrank-table+plain", "lowrank-table+packed"} <= set(strategies)


def test_architecture_ratio_is_the_linear_weights_over_the_adapter():
    gpt2 = next(a for a in bench_accounting.ARCHITECTURES if a.key == "gpt2-c_attn")
    per_block = sum(i * o for _, i, o in bench_accounting.GPT2_SMALL)
    assert gpt2.base_macs_per_token() == gpt2.blocks * per_block
    assert gpt2.adapter_macs_per_token() == gpt2.blocks * gpt2.rank * (768 + 2304)
    assert gpt2.linear_weight_bytes() == gpt2.base_macs_per_token() * gpt2.weight_bytes


def test_note_example_reproduces_the_notes_mac_counts():
    ex = bench_accounting.note_example()
    d_in, d_out, r = bench_accounting.NOTE_EXAMPLE
    assert ex["dense_macs"] == d_in * d_out and ex["lowrank_macs"] == r * (d_in + d_out)


# ----------------------------------------------------------------------------------------------------------------------
# The EZKL parts at --quick sizes, then the report and plots from their JSON
# ----------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """Run every EZKL part of the suite at its tiny sizes (bench_ezkl and the sweep on subsets) into one directory."""
    pytest.importorskip("ezkl")
    root = tmp_path_factory.mktemp("bench-quick")
    results, cache = root / "results", root / "cache"
    env = {**os.environ, "ZKREF_HEAVY_LOCK": ""}
    commands = [
        ["bench_accounting.py", "--quick"],
        ["bench_ezkl.py", "--quick", "--only", "pc/fixed/pc"],
        ["bench_ezkl_sweep.py", "--quick", "--only", "d", "T", "c_attn", "int8", "lanes"],
        ["bench_dense_ezkl.py", "--quick"],
        ["bench_baseline.py", "--quick"],
        ["bench_ezkl_levers.py", "--quick"],
        ["bench_profile.py", "--quick", "--no-perf"],
    ]
    for cmd in commands:
        full = [sys.executable, str(BENCH / cmd[0]), *cmd[1:], "--results", str(results)]
        if cmd[0] != "bench_accounting.py":
            full += ["--cache", str(cache)]
        proc = subprocess.run(full, capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return results




@pytest.mark.ezkl
@pytest.mark.slow
def test_quick_parts_prove_and_verify(quick_results):
    base = json.loads((quick_results / "baseline.json").read_text())
    attempt = base["modules"][0]["attempts"][0]
    assert attempt["ok"] and attempt["result"]["verified"]
    assert attempt["result"]["settings_summary"]["run_args"]["param_visibility"] == "Private"
    assert attempt["result"]["settings_summary"]["run_args"]["input_scale"] == 7
    dense = json.loads((quick_results / "dense_ezkl.json").read_text())
    assert all(e["ok"] and e["result"]["exact"] and e["result"]["verified"] for e in dense["results"])
    sweep = json.loads((quick_results / "ezkl_sweep.json").read_text())
    lanes = [e for e in sweep["results"] if e["case"]["inner_cols"]]
    assert lanes and all(e["pipeline"]["exact"] and e["pipeline"]["verified"] for e in lanes)
    assert [e["pipeline"]["num_inner_cols"] for e in lanes] == [e["case"]["inner_cols"] for e in lanes]
    backend = [e for e in sweep["results"] if not e["case"]["inner_cols"]]
    assert backend and all(e["warm"]["verified"] for e in backend)
    ours = json.loads((quick_results / "ezkl.json").read_text())
    assert ours["results"] and all(r["warm"]["verified"] for r in ours["results"])


@pytest.mark.ezkl
@pytest.mark.slow
def test_markdown_regenerates_from_json(quick_results, tmp_path):
    import bench_baseline
    import bench_dense_ezkl
    import bench_ezkl
    import bench_ezkl_sweep

    for name, render in (("baseline", bench_baseline.markdown), ("dense_ezkl", bench_dense_ezkl.markdown),
                         ("ezkl_sweep", bench_ezkl_sweep.markdown)):
        data = json.loads((quick_results / f"{name}.json").read_text())
        assert render(data) == (quick_results / f"{name}.md").read_text(), name
    data = json.loads((quick_results / "ezkl.json").read_text())
    assert bench_ezkl.markdown(data["results"], data["meta"]) == (quick_results / "ezkl.md").read_text()
    import bench_ezkl_levers
    import bench_profile

    for name, render in (("ezkl_levers", bench_ezkl_levers.markdown), ("profile", bench_profile.markdown)):
        data = json.loads((quick_results / f"{name}.json").read_text())
        assert render(data) == (quick_results / f"{name}.md").read_text(), name


@pytest.mark.ezkl
@pytest.mark.slow
def test_levers_and_ablations_prove_verify_and_compare(quick_results):
    """Every quick lever and ablation was set up, proven and verified; the statement's graph stayed equal to
    evaluate() under every lever; each non-baseline variant has its per-round ratio to the baseline."""
    levers = json.loads((quick_results / "ezkl_levers.json").read_text())["modules"]["tiny"]
    assert [r["variant"]["name"] for r in levers][0] == "pinned"
    for r in levers:
        assert r["verified"] and r["witness_exact"], r["variant"]["name"]
        assert ("ratio" in r) == (r["variant"]["name"] != "pinned")
    pinned, legs3 = levers[0], next(r for r in levers if r["variant"]["name"] == "legs3")
    floor = next(r for r in levers if r["variant"]["name"] == "floor")
    assert [0, 1] in floor["setup"]["range_checks"] and [0, 1] not in pinned["setup"]["range_checks"]  # booleans
    assert (pinned["setup"]["decomp_base"], pinned["setup"]["decomp_legs"]) == (256, 2)      # 15-bit values
    assert [0, 255] in pinned["setup"]["range_checks"] and [0, 31] not in pinned["setup"]["range_checks"]
    assert (legs3["setup"]["decomp_base"], legs3["setup"]["decomp_legs"]) == (32, 3)
    assert [0, 31] in legs3["setup"]["range_checks"]
    ablations = json.loads((quick_results / "profile.json").read_text())["modules"]["tiny"]["ablations"]
    assert {r["variant"]["graph"] for r in ablations} == {g for g, _ in __import__("bench_profile").ABLATIONS}
    assert all(r["verified"] for r in ablations)


@pytest.mark.ezkl
@pytest.mark.slow
def test_report_and_plots_regenerate_from_json(quick_results):
    import performance
    import plots

    made = plots.render_all(quick_results)
    names = {p.name for p in made}
    assert {"prove_vs_d.png", "prove_vs_T.png", "rows_vs_lanes.png", "ours_vs_baseline.png",
            "dense_vs_lowrank.png"} <= names
    assert all(p.stat().st_size < plots.MAX_PNG_BYTES for p in made)
    md1, data1 = performance.build(quick_results)
    md2, data2 = performance.build(quick_results)
    assert md1 == md2 and data1 == data2
    assert "### End to end" in md1 and "| Low-rank factorisation | 512× |" in md1
    (e2e,) = data1["end_to_end"]
    assert e2e["baseline"] is not None and e2e["ours"]
    assert data1["factors"]["lowrank"]["pairs"], "dense and low-rank should both be measured at the tiny shape"
    for claim in performance.CLAIMS:
        assert claim.key in data1["factors"]


def test_performance_report_handles_an_empty_results_directory(tmp_path):
    import performance

    md, data = performance.build(tmp_path)
    assert "The baseline was not run." in md and data["end_to_end"] == []
    assert "Parts not run in this run" in md


# ----------------------------------------------------------------------------------------------------------------------
# the profile's perf attribution and the levers' decomposition width (no EZKL)
# ----------------------------------------------------------------------------------------------------------------------

PERF_SCRIPT = """\
 100  5.000: 
\t  1 <ezkl::graph::model::Model>::layout (/x/ezkl.so)
\t  2 halo2_proofs::plonk::prover::create_proof (/x/ezkl.so)

 101  5.100: 
\t  3 <halo2curves::msm::Schedule>::execute+0x10 (/x/ezkl.so)
\t  4 rayon_core::registry::WorkerThread::run (/x/ezkl.so)

 101  5.200: 
\t  5 halo2_proofs::fft::parallel::serial_fft (/x/ezkl.so)
\t  6 parallelize<Fr, <halo2_proofs::plonk::permutation::Argument>::commit::{closure#0}> (/x/ezkl.so)

 100  5.300: 
\t  7 <halo2curves::msm::Schedule>::execute (/x/ezkl.so)

 100  9.000: 
\t  8 <halo2_proofs::plonk::evaluation::GraphEvaluator>::evaluate (/x/ezkl.so)
"""


def test_perf_samples_are_attributed_to_stages_and_kernels():
    """A sample names its stage through any frame (a worker's closure names its caller); an MSM naming none belongs
    to the stage running then (after synthesis: the advice commitments); kernels come from the sample itself;
    samples outside the prove call are left out."""
    import bench_profile

    samples = bench_profile.parse_perf_script(PERF_SCRIPT)
    assert [(tid, t) for tid, t, _ in samples] == [(100, 5.0), (101, 5.1), (101, 5.2), (100, 5.3), (100, 9.0)]
    assert "+0x" not in samples[1][2][0]
    out = bench_profile.attribute(samples, 4.9, 5.5)
    assert out["samples"] == 4 and out["threads"] == 2
    assert out["stages"] == {"synthesis: EZKL's witness layout": 0.25,
                             "advice: blinding, batch inversion, commitments": 0.25,
                             "permutation: grand products, commitments": 0.5}
    assert out["kernels"] == {"MSM (multi-scalar multiplication)": 0.5, "synthesis (EZKL layout, witness assignment)": 0.25,
                              "FFT / iFFT": 0.25}
    assert bench_profile.attribute(samples, 20.0, 30.0) == {"samples": 0}


def test_decomposition_width_for_another_base_covers_the_values():
    """legs_for_base gives enough digits in the given base AND in base 2^shift (Floor's): for base 2^shift it is the
    backend's Floor graph's graph.decomp_legs (the `legs3` lever), for base 256 enough in both."""
    import math

    import ezkl_variants

    from backends.ezkl import graph

    for module in ("c_attn", "q_proj", "tiny"):
        st, _ = ezkl_variants.statement_and_witness(module)
        bits = graph.value_bound(st).bit_length()
        assert ezkl_variants.legs_for_base(st, 1 << st.shift) == graph.decomp_legs(st)
        assert ezkl_variants.legs_for_base(st, 256) == max(2, math.ceil(bits / 8), math.ceil(bits / st.shift))
        for base in (256, 1 << st.shift):
            assert base ** ezkl_variants.legs_for_base(st, base) > graph.value_bound(st)


def test_run_all_quick_and_only_flags_select_parts():
    import run_all

    parts = {p.name: p for p in run_all.PARTS}
    cmd = run_all.command(parts["baseline"], Path("/r"), Path("/c"), quick=True)
    assert cmd[-1] == "--quick" and "--results" in cmd and "--cache" in cmd
    assert "--quick" not in run_all.command(parts["performance"], Path("/r"), Path("/c"), quick=True)
    assert not parts["digest"].quick and not parts["digest"].results_flag


def test_run_all_headline_runs_ours_then_the_original_recipe_on_c_attn(tmp_path, monkeypatch):
    """--headline runs bench_ezkl on c_attn T=15's binding modes and the original recipe on c_attn, both merged into
    their JSON, then the report; it refuses --only and --quick (it picks its own parts)."""
    import run_all

    ran: list[list[str]] = []

    def fake_run(part, cmd):
        ran.append(cmd)
        return run_all.PartRun(part.name, 0.0, "ok", cmd)

    monkeypatch.setattr(run_all, "run_part", fake_run)
    monkeypatch.setattr(run_all.subprocess, "call", lambda *a, **k: 0)
    assert run_all.main(["--headline", "--results", str(tmp_path), "--cache", str(tmp_path / "c")]) == 0
    scripts = [Path(c[1]).name for c in ran]
    assert scripts == ["bench_ezkl.py", "bench_baseline.py", "plots.py", "performance.py"]
    ezkl, baseline = ran[0], ran[1]
    assert "--merge" in ezkl and all(case in ezkl for case in run_all.HEADLINE_CASES)
    assert "--merge" in baseline and baseline[baseline.index("--modules") + 1] == "c_attn"
    assert "--headline" in json.loads((tmp_path / "suite.json").read_text())["command"]
    for bad in (["--headline", "--quick"], ["--headline", "--only", "ezkl"]):
        with pytest.raises(SystemExit) as exc:
            run_all.main(bad)
        assert exc.value.code == 2


def test_baseline_merge_replaces_only_the_measured_modules(tmp_path):
    """bench_baseline --merge keeps the modules it did not measure (their earlier attempts) and stamps each module
    with when it was measured; without --merge the file holds this run's modules only."""
    import argparse

    import bench_baseline

    def entry(key: str, when: str) -> dict:
        return {"module": {"key": key, "label": key}, "attempts": [], "measured_utc": when}

    args = argparse.Namespace(results=tmp_path, quick=False, reserve_mib=512.0, min_available_mib=256.0, merge=True)
    bench_baseline.save(args, [entry("c_attn", "old"), entry("q_proj", "old")], 1.0, complete=True)
    data = bench_baseline.save(args, [entry("c_attn", "new")], 1.0, complete=True)
    assert [(e["module"]["key"], e["measured_utc"]) for e in data["modules"]] == [("c_attn", "new"), ("q_proj", "old")]
    assert "c_attn: new; q_proj: old" in (tmp_path / "baseline.md").read_text()
    args.merge = False
    data = bench_baseline.save(args, [entry("c_attn", "newer")], 1.0, complete=True)
    assert [e["module"]["key"] for e in data["modules"]] == ["c_attn"]
