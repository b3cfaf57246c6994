"""Bad command-line input is one line on stderr and exit 2 (never a traceback), checked before any work; sizes whose
product is too large are refused from a memory estimate; a failing build leaves no temporaries; a modified proof is
invalid (exit 1); --version; the option names and help."""
from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkref.cli.main import build_parser, main
from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness
from zkref.primitives.ranges import MEMORY_BUDGET, check_memory, format_bytes

ROOT = Path(__file__).resolve().parent.parent
HUGE = ["--d-in", "1048576", "--d-out", "1048576", "--rank", "4096", "--tokens", "65536"]
SMALL = ["--d-in", "12", "--d-out", "8", "--rank", "2", "--tokens", "2", "--seed", "3"]


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run `zkref argv`: exit 2, one line on stderr holding every needle, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err and err.startswith("zkref"), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize("argv,needles", [
    (["prove", "--backend", "zkref", *HUGE], ["memory", "16 GiB budget"]),
    (["prove", "--backend", "ezkl", *HUGE], ["memory", "16 GiB budget"]),
    (["prove", "--backend", "ezkl", "--d-in", "16384", "--d-out", "16384", "--rank", "1024"],
     ["an EZKL proof of 16384→16384 r=1024 T=1", "budget"]),
    (["mock", *HUGE], ["memory"]),
    (["mock", "--d-in", "4096", "--d-out", "4096", "--rank", "4096"], ["a mock proof of 4096→4096 r=4096", "budget"]),
    (["mock", "--preset", "llama3-8b", "--rank", "4096", "--tokens", "65536"], ["budget"]),
    (["report", "--d-in", "1048576", "--d-out", "1048576", "--rank", "4096", "--method", "analytic"],
     ["analytic layout", "--method formula"]),
    (["report", "--d-in", "1048576", "--d-out", "1048576", "--rank", "4096", "--commitments"], ["analytic layout"]),
    (["report", "--backend", "ezkl", "--d-in", "1048576", "--d-out", "1048576", "--rank", "4096"],
     ["too large to predict"]),
    (["serve", "--base", "b", "--adapter", "a", "--port", "-1"], ["--port", "0..65535"]),
    (["serve", "--base", "b", "--adapter", "a", "--port", "70000"], ["--port", "0..65535"]),
    (["serve", "--base", "b", "--adapter", "a", "--port", "http"], ["--port"]),
    (["serve", "--base", "b", "--adapter", "a", "--prove-timeout", "inf"], ["--prove-timeout", "greater than 0"]),
    (["serve", "--base", "b", "--adapter", "a", "--max-tokens", "0"], ["--max-tokens"]),
    (["demo", "--tokens", "100000"], ["--tokens", "1..8"]),
    (["demo", "--rank", "0"], ["--rank"]),
    (["mock", *SMALL, "--alpha", "nan"], ["--alpha"]),
    (["mock", *SMALL, "--lanes", "0"], ["--lanes", "1..16"]),
    (["mock", "--d-in", "12x"], ["--d-in"]),
    (["mock", *SMALL, "--shift", "-1"], ["--shift"]),
    (["mock", *SMALL, "--seed", "-5"], ["--seed"]),
    (["report", "--rank", "0"], ["--rank"]),
    (["audit", "--sample", "0"], ["--sample"]),
    (["digest", ".", "--workers", "0"], ["--workers"]),
    (["client", "--base", "b", "--timeout", "-1"], ["--timeout"]),
    (["prove", "--backend", "nope"], ["--backend"]),
    (["nope"], ["invalid choice"]),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, needles):
    monkeypatch.setenv("ZKREF_CACHE", str(tmp_path / "cache"))
    if argv[0] == "prove":
        argv = [*argv, "--out", str(tmp_path / "bundle")]
    one_line_error(capsys, argv, *needles)
    assert not (tmp_path / "cache").exists()                     # refused before any backend work
    assert not (tmp_path / "bundle").exists()


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    """The installed entry point's path (python -m zkref.cli.main) gives the same one line and exit code 2."""
    for argv in (["serve", "--base", "b", "--adapter", "a", "--port", "-1"],
                 ["prove", "--backend", "ezkl", *HUGE, "--out", str(tmp_path / "b")]):
        done = subprocess.run([sys.executable, "-m", "zkref.cli.main", *argv], capture_output=True, text=True,
                              timeout=120, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "ZKREF_CACHE": str(tmp_path),
                                                          "PATH": "/usr/bin:/bin"})
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr


def test_digest_of_a_file_says_not_a_directory(capsys, tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    one_line_error(capsys, ["digest", str(file)], "not a directory")
    one_line_error(capsys, ["digest", str(tmp_path / "missing")], "does not exist")


def test_version_comes_from_the_package_metadata(capsys):
    assert main(["--version"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == f"zkref {importlib.metadata.version('zkref')}"


def test_help_exits_0_and_every_option_says_what_it_does(capsys):
    assert main(["--help"]) == 0
    assert "COMMAND" in capsys.readouterr().out
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    for name, command in sub.choices.items():
        assert main([name, "--help"]) == 0
        text = capsys.readouterr().out
        assert "(default: None)" not in text and "(default: False)" not in text, name
        for action in command._actions:
            if action.help == "==SUPPRESS==":
                continue                                   # a hidden alias of a documented option
            assert action.help and len(action.help) > 8, (name, action.option_strings or action.dest)


def test_bindings_use_one_scheme_and_the_old_spellings_still_work(tmp_path, capsys):
    """--x-binding/--adapter-binding/--y-binding everywhere; --x and --y stay as hidden aliases."""
    assert main(["prove", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--x-binding" in text and "--y-binding" in text and "--x " not in text and "--y " not in text
    for flags in (["--x-binding", "hashed", "--y-binding", "public"], ["--x", "hashed", "--y", "public"]):
        assert main(["mock", *SMALL, *flags, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["statement"]["x_binding"] == "hashed" and doc["statement"]["y_binding"] == "public"


# -- --out: checked before proving --------------------------------------------------------------------------------
def test_out_is_checked_before_any_proving(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZKREF_CACHE", str(tmp_path / "cache"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    one_line_error(capsys, ["prove", "--backend", "ezkl", *SMALL, "--out", str(full)], "refusing to overwrite")
    assert (full / "keep.txt").read_text() == "mine" and not (tmp_path / "cache").exists()
    missing = tmp_path / "no" / "such" / "dir"
    one_line_error(capsys, ["prove", "--backend", "zkref", *SMALL, "--out", str(missing)], "not an existing directory")
    assert not (tmp_path / "no").exists()                           # parents are never created
    one_line_error(capsys, ["mock", *SMALL, "--out", str(missing / "r.json")], "not an existing directory")
    assert main(["prove", "--backend", "zkref", *SMALL, "--out", str(tmp_path / "empty"), "--quiet"]) == 0


def test_a_modified_proof_is_invalid_not_bad_input(tmp_path, capsys):
    bundle = tmp_path / "b"
    assert main(["prove", "--backend", "zkref", *SMALL, "--out", str(bundle), "--quiet"]) == 0
    data = bytearray((bundle / "proof.bin").read_bytes())
    data[len(data) // 2] ^= 1                                       # one bit
    (bundle / "proof.bin").write_bytes(bytes(data))
    capsys.readouterr()
    pin = ["--anchor", str(bundle / "anchor.json")]
    assert main(["verify", str(bundle), *pin, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert not doc["valid"] and "proof.bin was modified" in doc["reason"]
    (bundle / "proof.bin").unlink()                                  # unreadable structure stays bad input
    one_line_error(capsys, ["verify", str(bundle), *pin], "proof.bin is missing")


# -- the memory budget --------------------------------------------------------------------------------------------
def test_format_bytes_and_check_memory():
    assert format_bytes(7) == "7 B" and format_bytes(3 << 29) == "1.5 GiB" and format_bytes(300 << 40) == "300 TiB"
    assert check_memory("x", MEMORY_BUDGET) == MEMORY_BUDGET
    with pytest.raises(ValueError, match="x would need about 16 GiB"):
        check_memory("x", MEMORY_BUDGET + 1)


def test_tensor_bytes_count_every_tensor_of_the_call():
    shape = LoRAShape(d_in=10, d_out=6, rank=2, tokens=3)
    assert shape.values == 2 * 10 + 6 * 2 + 3 * 10 + 3 * 2 + 3 * 6
    assert shape.tensor_bytes == 32 * shape.values


def test_the_mock_backend_refuses_what_exceeds_the_budget():
    from backends.zkref_backend import ZkrefBackend, memory_estimate

    fits = LoRAStatement(shape=LoRAShape(d_in=4096, d_out=4096, rank=16), shift=8)
    too_big = LoRAStatement(shape=LoRAShape(d_in=4096, d_out=4096, rank=4096), shift=8)
    assert ZkrefBackend().supports(fits) and memory_estimate(fits) < MEMORY_BUDGET
    support = ZkrefBackend().supports(too_big)
    assert not support and "budget" in support.reason
    hashed = LoRAStatement(shape=LoRAShape(d_in=64, d_out=64, rank=8), shift=8, x_binding="hashed",
                           adapter_binding="hashed")
    packed = LoRAStatement(shape=LoRAShape(d_in=64, d_out=64, rank=8), shift=8, x_binding="hashed-packed",
                           adapter_binding="hashed-packed")
    assert hashed.hashed_felts == 64 + 8 * 128 + 4 and packed.hashed_felts == 3 + 17
    public = LoRAStatement(shape=LoRAShape(d_in=64, d_out=64, rank=8), shift=8)
    assert memory_estimate(hashed) > memory_estimate(packed) > memory_estimate(public)


def _ezkl_cases() -> list[tuple[str, LoRAStatement, float]]:
    """Every statement benchmarks/results/ezkl.json measured, with its peak RSS (MiB)."""
    modes = {"pc": "polycommit", "pub": "public", "fixed": "fixed", "hashed": "hashed", "unbound": "unbound"}
    doc = json.loads((ROOT / "benchmarks/results/ezkl.json").read_text())
    cases = []
    for entry in doc["results"]:
        if "cold" not in entry:
            continue
        c = entry["case"]
        x, a, y = (modes[m] for m in c["mode"].split("/"))
        statement = LoRAStatement(shape=LoRAShape(d_in=c["d_in"], d_out=c["d_out"], rank=c["rank"],
                                                  tokens=c["tokens"]), shift=c["shift"],
                                  x_binding=x, adapter_binding=a, y_binding=y)
        cases.append((c["name"], statement, entry["cold"]["peak_rss_mib"]))
    return cases


def test_the_ezkl_memory_estimate_bounds_every_measured_peak():
    """The estimate (tensors, BASE_BYTES, BYTES_PER_ROW, BYTES_PER_POSEIDON_ROW) is at least the peak RSS measured on
    every statement and batch of benchmarks/results/ezkl*.json, and within 3× of it (not uselessly loose)."""
    from backends.ezkl.backend import EzklBackend
    from backends.ezkl.cost import memory_estimate
    from zkref.lora.batch import LoRABatch

    cases = _ezkl_cases()
    assert len(cases) >= 30
    for name, statement, peak_mib in cases:
        estimate_mib = memory_estimate(statement) / (1 << 20)
        assert peak_mib <= estimate_mib <= 3 * peak_mib, (name, peak_mib, estimate_mib)
        assert EzklBackend().supports(statement), name
    batches = json.loads((ROOT / "benchmarks/results/ezkl_batch.json").read_text())["results"]
    for entry in batches:
        batch = LoRABatch.of([(m["name"], LoRAStatement(
            shape=LoRAShape(d_in=m["d_in"], d_out=m["d_out"], rank=m["rank"], tokens=m["tokens"]), shift=m["shift"],
            x_binding="polycommit", y_binding="polycommit")) for m in entry["members"]])
        peak_mib = entry["batch"]["raw"]["cold"]["peak_rss_mib"]
        assert peak_mib <= memory_estimate(batch) / (1 << 20) <= 3 * peak_mib, entry["workload"]


@settings(max_examples=40, deadline=None)
@given(d_in=st.integers(1, 300), d_out=st.integers(1, 300), rank=st.integers(1, 16), tokens=st.integers(1, 20),
       shift=st.integers(0, 12), x=st.sampled_from(["public", "polycommit", "hashed"]),
       y=st.sampled_from(["public", "polycommit"]))
def test_the_quick_lower_bound_never_exceeds_the_replayed_layout(d_in, d_out, rank, tokens, shift, x, y):
    """memory_estimate refuses from an O(1) lower bound before replaying a huge layout: it must be a lower bound."""
    from backends.ezkl.cost import _rows_lower_bound, predict
    from backends.ezkl.settings import NUM_INNER_COLS

    statement = LoRAStatement(shape=LoRAShape(d_in=d_in, d_out=d_out, rank=rank, tokens=tokens), shift=shift,
                              x_binding=x, y_binding=y)
    cost = predict(statement)
    assert _rows_lower_bound(statement, NUM_INNER_COLS) <= max(cost.rows, 1 << cost.logrows) + cost.einsum_cells


def test_the_ezkl_refusal_of_a_huge_statement_is_immediate():
    """The lower bound answers without replaying ~10^13 cells (the replay would take hours)."""
    from backends.ezkl.backend import EzklBackend

    huge = LoRAStatement(shape=LoRAShape(d_in=1 << 20, d_out=1 << 20, rank=4096, tokens=1 << 16), shift=8,
                         x_binding="polycommit", y_binding="polycommit")
    support = EzklBackend().supports(huge)
    assert not support and "budget" in support.reason


# -- temporaries --------------------------------------------------------------------------------------------------
class PanicException(BaseException):
    """Stands for pyo3_runtime.PanicException, which EZKL raises on a Rust panic: not an Exception."""


@pytest.mark.parametrize("error", [RuntimeError("gen_settings failed"), PanicException("rust panicked")])
def test_a_failing_cache_build_leaves_nothing_behind(tmp_path, error):
    from backends.ezkl.cache import build_entry

    final = tmp_path / "circuits" / "id" / "key"
    final.parent.mkdir(parents=True)

    def build(tmp: Path) -> dict:
        (tmp / "model.onnx").write_bytes(b"\0" * 4096)
        raise error

    with pytest.raises(type(error)):
        build_entry(final, ("model.onnx",), build)
    assert sorted(p.name for p in final.parent.iterdir()) == ["key.lock"]


def test_a_build_removes_what_a_dead_process_left(tmp_path):
    """A Rust abort or SIGKILL runs no cleanup: the next build of the entry (under its lock) removes the leftovers."""
    from backends.ezkl.cache import build_entry

    final = tmp_path / "key"
    stale = tmp_path / ".key.tmp-dead1234"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"\0" * 1024)
    other = tmp_path / ".other.tmp-alive"
    other.mkdir()
    meta, built = build_entry(final, ("f",), lambda tmp: (tmp / "f").write_text("ok") and {"m": 1})
    assert built and meta == {"m": 1} and not stale.exists() and other.exists()


@pytest.mark.ezkl
def test_a_failing_ezkl_build_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    """EZKL itself failing (an unreadable graph) mid-build: the cache holds no file but the entry's lock."""
    pytest.importorskip("ezkl")
    from backends.ezkl import graph
    from backends.ezkl.backend import EzklBackend

    monkeypatch.setattr(graph, "export_onnx", lambda statement, witness, path: Path(path).write_bytes(b"junk" * 999))
    rng = np.random.default_rng(0)
    statement = LoRAStatement(shape=LoRAShape(d_in=8, d_out=8, rank=2), shift=4)
    witness = LoRAWitness(A_q=rng.integers(-8, 8, (2, 8)), B_q=rng.integers(-8, 8, (8, 2)),
                          x_q=rng.integers(-128, 128, (1, 8)))
    with pytest.raises(BaseException) as failure:
        EzklBackend(cache_dir=tmp_path).prepare(statement, witness)
    assert not isinstance(failure.value, (KeyboardInterrupt, SystemExit))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.suffix for p in files] == [".lock"], files


# -- output -------------------------------------------------------------------------------------------------------
def test_ezkls_meaningless_scale_warning_is_dropped_and_others_are_kept(caplog):
    import backends.ezkl.backend  # noqa: F401  (installs the filter)

    with caplog.at_level(logging.WARNING):
        logging.getLogger("ezkl").warning("low scale values (<8) may impact precision")
        logging.getLogger("ezkl").warning("something that matters")
    assert [r.getMessage() for r in caplog.records] == ["something that matters"]


def test_progress_is_silent_when_quiet_and_lines_in_logs(capsys):
    from zkref.cli.console import phases

    with phases("work", quiet=True) as phase:
        phase("step one")
    assert capsys.readouterr().err == ""
    with phases("work") as phase:                       # stderr is not a terminal under pytest: one line a phase
        phase("step one")
        phase("step two")
    assert capsys.readouterr().err.splitlines() == ["work: step one…", "work: step two…"]
