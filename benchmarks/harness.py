"""Shared machinery of the EZKL benchmarks: a memory-guarded child process, the heavy-run lock, and the plain EZKL
pipeline (settings → compile → SRS → setup → witness → prove → verify) timed phase by phase with each phase's peak RSS.

Why a guarded child: the original zkLoRA recipe at logrows 20 peaks near this machine's 24 GiB; a run that would take
the whole box down is killed by the parent (the child's resident memory, or the machine's available memory, crossing
a limit) and reported as "did not fit", never allowed to reach the kernel's OOM killer.
Why a lock: timings are only comparable when no other heavy run shares the 2 cores; every timed EZKL case holds
/tmp/zkref-heavy.lock (ZKREF_HEAVY_LOCK; empty disables it) for the duration of that case only.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DEFAULT_LOCK = "/tmp/zkref-heavy.lock"
MIN_AVAILABLE_MIB = 768
"""The guard kills a child when the machine's MemAvailable drops below this (whatever the child's own size)."""
RESERVE_MIB = 1024
"""The guard's default cap on the child's RSS: total memory minus this."""


# ----------------------------------------------------------------------------------------------------------------------
# Machine, memory
# ----------------------------------------------------------------------------------------------------------------------

def meminfo_mib(field: str) -> float:
    """A /proc/meminfo field in MiB (MemTotal, MemAvailable, …)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def utc_now() -> str:
    """The time a measurement is stamped with (minutes, UTC): what `performance.py` cites for "same run"."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def merge_entries(old: list[dict], fresh: list[dict], key: Callable[[dict], str]) -> list[dict]:
    """A results list where the entries measured now replace the earlier ones with the same `key`, in the earlier
    order, and new ones follow (a part's --merge: re-measure a few cases, keep the rest)."""
    by_key = {key(e): e for e in fresh}
    return [by_key.pop(key(e), e) for e in old] + list(by_key.values())


def versions() -> dict[str, str | None]:
    """Installed versions of the packages whose behaviour the EZKL figures depend on."""
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for pkg in ("ezkl", "torch", "onnx", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


@dataclass(frozen=True)
class Machine:
    """Where a result was measured."""

    machine: str
    cores: int
    memory_gib: float
    python: str

    @classmethod
    def here(cls) -> "Machine":
        return cls(platform.machine(), os.cpu_count() or 0, round(meminfo_mib("MemTotal") / 1024, 1),
                   platform.python_version())

    def describe(self) -> str:
        return f"{self.machine}, {self.cores} cores, {self.memory_gib:g} GiB RAM, Python {self.python}"


def reset_peak_rss() -> None:
    """Reset this process's VmHWM (peak RSS) so the next phase's peak can be read on its own (Linux clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """This process's peak resident memory since start or the last `reset_peak_rss`, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------------------------------
# The heavy-run lock
# ----------------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def heavy_lock(what: str = "") -> Iterator[float]:
    """Hold the heavy-run lock (path from ZKREF_HEAVY_LOCK, default /tmp/zkref-heavy.lock; empty: no lock) for one
    timed run; yields the seconds spent waiting for it. Do not wrap the suite in `flock` on the same file: it locks
    per case itself, and a second lock on the same file from a child would wait forever."""
    path = os.environ.get("ZKREF_HEAVY_LOCK", DEFAULT_LOCK)
    if not path:
        yield 0.0
        return
    t0 = time.perf_counter()
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"   (waiting for {path}{' for ' + what if what else ''})", flush=True)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - t0
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------------------------------------
# A guarded child process
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GuardedRun:
    """How a child process ended: its last JSON line, and whether the guard (memory or time) killed it."""

    returncode: int | None
    result: dict | None
    stderr_tail: str
    wall_s: float
    polled_peak_rss_mib: float
    """Largest RSS of the child's process tree seen by polling (the child's own VmHWM is exact; this is the guard's view)."""
    min_available_mib: float
    """Smallest MemAvailable of the machine seen while the child ran."""
    killed: str | None
    """Why the guard killed the child (memory or timeout), else None."""
    load_average: tuple[float, float]
    """1-minute load average when the child started and when it ended (above the core count: shared machine)."""

    @property
    def ok(self) -> bool:
        return self.killed is None and self.returncode == 0 and self.result is not None

    def error(self) -> str:
        """A one-line reason this run produced no result."""
        if self.killed:
            return self.killed
        if self.returncode != 0:
            return f"exit code {self.returncode}: {self.stderr_tail.strip().splitlines()[-1][:300] if self.stderr_tail.strip() else 'no stderr'}"
        return "no JSON result line on stdout"

    def to_dict(self) -> dict:
        return asdict(self)


def _tree_rss_mib(pid: int) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def run_guarded(cmd: list[str], *, timeout_s: float, rss_limit_mib: float | None = None,
                min_available_mib: float = MIN_AVAILABLE_MIB, poll_s: float = 0.2,
                env: dict[str, str] | None = None, echo: bool = False) -> GuardedRun:
    """Run `cmd` in its own session; kill its process group if its tree's RSS exceeds `rss_limit_mib` (default: total
    memory minus RESERVE_MIB), the machine's MemAvailable falls below `min_available_mib`, or `timeout_s` passes.
    The result is the last stdout line starting with '{' parsed as JSON. echo: copy the child's stderr lines to ours."""
    limit = rss_limit_mib if rss_limit_mib is not None else meminfo_mib("MemTotal") - RESERVE_MIB
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True, env=env, cwd=str(ROOT))
        peak, low, killed = 0.0, meminfo_mib("MemAvailable"), None
        while proc.poll() is None:
            time.sleep(poll_s)
            rss, avail = _tree_rss_mib(proc.pid), meminfo_mib("MemAvailable")
            peak, low = max(peak, rss), min(low, avail)
            elapsed = time.perf_counter() - t0
            if rss > limit:
                killed = f"killed by the memory guard: RSS {rss / 1024:.1f} GiB > limit {limit / 1024:.1f} GiB " \
                         f"after {elapsed:.0f} s"
            elif avail < min_available_mib:
                killed = f"killed by the memory guard: machine's available memory {avail:.0f} MiB < " \
                         f"{min_available_mib:.0f} MiB (child RSS {rss / 1024:.1f} GiB) after {elapsed:.0f} s"
            elif elapsed > timeout_s:
                killed = f"timed out after {timeout_s:.0f} s"
            if killed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if echo and stderr:
        sys.stderr.write(stderr[-4000:])
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    result = None
    if lines and not killed:
        with contextlib.suppress(json.JSONDecodeError):
            result = json.loads(lines[-1])
    return GuardedRun(proc.returncode, result, stderr[-2000:], wall, peak, low, killed, (load0, os.getloadavg()[0]))


# ----------------------------------------------------------------------------------------------------------------------
# The plain EZKL pipeline, in the child
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PipelineResult:
    """One EZKL circuit taken from ONNX to a verified proof in one process: per-phase seconds and peak RSS."""

    logrows: int
    num_inner_cols: int
    rows: int
    einsum_cells: int
    instances: int
    timings: dict[str, float]
    """settings, compile, srs (0 when the cached SRS was used), setup, witness, prove, verify (best of n)."""
    phase_peak_rss_mib: dict[str, float]
    peak_rss_mib: float
    """Peak RSS over every phase (the process's whole run)."""
    srs_generated: bool
    proof_bytes: int
    pk_mib: float
    vk_bytes: int
    verified: bool
    outputs: list[float]
    """The witness's outputs as floats (rescaled), for accuracy checks by the caller."""
    output_felts: list[str]
    """The witness's outputs as EZKL's felt strings, for exact checks (packed cells exceed a float's precision)."""
    settings_summary: dict
    versions: dict

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def total_s(self) -> float:
        """A prover's time from scratch for one proof, excluding the SRS (a public, one-time artefact)."""
        return sum(self.timings.get(p, 0.0) for p in ("settings", "compile", "setup", "witness", "prove"))


def run_pipeline(onnx: Path, run_args, data: dict, work: Path, srs_root: Path, *, verify_repeat: int = 3,
                 choose=None) -> PipelineResult:
    """Take `onnx` through EZKL with `run_args` (a PyRunArgs) and `data` ({"input_data": [...]}) in `work`.

    choose(settings_dict) -> (logrows, num_inner_cols) | None: called after a first gen_settings; if it returns a
    layout, settings are generated again with it (the backend's probe-then-layout); the probe counts as settings time.
    The development SRS (ezkl.gen_srs, INSECURE) is cached under `srs_root`; its generation is timed apart.
    """
    import ezkl

    sys.path.insert(0, str(ROOT))
    from backends.ezkl.cache import dev_srs

    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    rss: dict[str, float] = {}
    settings_path, compiled = work / "settings.json", work / "model.compiled"

    def phase(name: str):
        reset_peak_rss()
        return time.perf_counter()

    def done(name: str, t0: float) -> None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        rss[name] = max(rss.get(name, 0.0), peak_rss_mib())

    t0 = phase("settings")
    if not ezkl.gen_settings(str(onnx), str(settings_path), py_run_args=run_args):
        raise RuntimeError("ezkl.gen_settings failed")
    if choose is not None:
        layout = choose(json.loads(settings_path.read_text()))
        if layout is not None:
            run_args.logrows, run_args.num_inner_cols = layout
            if not ezkl.gen_settings(str(onnx), str(settings_path), py_run_args=run_args):
                raise RuntimeError("ezkl.gen_settings failed")
    settings = json.loads(settings_path.read_text())
    done("settings", t0)
    k = settings["run_args"]["logrows"]

    t0 = phase("compile")
    if not ezkl.compile_circuit(str(onnx), str(compiled), str(settings_path)):
        raise RuntimeError("ezkl.compile_circuit failed")
    done("compile", t0)

    t0 = phase("srs")
    srs_exists = (srs_root / "srs" / f"dev-k{k}.srs").exists()
    srs = dev_srs(srs_root, k)
    done("srs", t0)
    if srs_exists:
        timings["srs"] = 0.0

    vk, pk = work / "vk.key", work / "pk.key"
    t0 = phase("setup")
    if not ezkl.setup(str(compiled), str(vk), str(pk), srs_path=str(srs)):
        raise RuntimeError("ezkl.setup failed")
    done("setup", t0)

    data_path, wit, proof_path = work / "input.json", work / "witness.json", work / "proof.json"
    data_path.write_text(json.dumps(data))
    t0 = phase("witness")
    ezkl.gen_witness(str(data_path), str(compiled), str(wit), vk_path=str(vk), srs_path=str(srs))
    done("witness", t0)
    witness = json.loads(wit.read_text())
    out_scale = settings["model_output_scales"][0]
    outputs = [ezkl.felt_to_float(f, out_scale) for f in witness["outputs"][0]]

    t0 = phase("prove")
    ezkl.prove(str(wit), str(compiled), str(pk), proof_path=str(proof_path), srs_path=str(srs))
    done("prove", t0)
    proof = json.loads(proof_path.read_text())

    best, verified = float("inf"), True
    for _ in range(max(1, verify_repeat)):
        t0 = phase("verify")
        try:
            ok = bool(ezkl.verify(str(proof_path), str(settings_path), str(vk), srs_path=str(srs)))
        except RuntimeError:
            ok = False
        best = min(best, time.perf_counter() - t0)
        rss["verify"] = max(rss.get("verify", 0.0), peak_rss_mib())
        verified = verified and ok
    timings["verify"] = best
    instances = sum(len(col) for col in proof.get("instances", []))
    summary = {key: settings.get(key) for key in ("model_instance_shapes", "model_input_scales", "model_output_scales",
                                                   "required_range_checks", "required_lookups", "module_sizes")}
    summary["run_args"] = settings["run_args"]
    return PipelineResult(logrows=k, num_inner_cols=settings["run_args"]["num_inner_cols"],
                          rows=settings["num_rows"],
                          einsum_cells=int(settings.get("einsum_params", {}).get("total_einsum_col_size", 0)),
                          instances=instances, timings=timings, phase_peak_rss_mib=rss,
                          peak_rss_mib=max(rss.values()), srs_generated=not srs_exists,
                          proof_bytes=len(bytes(proof["proof"])), pk_mib=pk.stat().st_size / 2**20,
                          vk_bytes=vk.stat().st_size, verified=verified, outputs=outputs,
                          output_felts=list(witness["outputs"][0]),
                          settings_summary=summary, versions=versions())


def export_onnx(module, example, path: Path) -> None:
    """torch → ONNX the way every graph here is exported (opset 17, TorchScript exporter, as the facts file found to
    work with EZKL 23)."""
    import io
    import warnings

    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, input_names=["x"], output_names=["y"], opset_version=17,
                          dynamo=False)
    path.write_bytes(buffer.getvalue())


def bench_cache(explicit: str | None = None) -> Path:
    """Where the benchmarks keep development SRS files between runs (gen_srs at k=20 takes minutes):
    --cache, else $ZKREF_BENCH_CACHE, else ~/.cache/zkref-bench."""
    if explicit:
        return Path(explicit)
    if os.environ.get("ZKREF_BENCH_CACHE"):
        return Path(os.environ["ZKREF_BENCH_CACHE"])
    return Path(os.path.expanduser("~")) / ".cache" / "zkref-bench"


def write_results(results_dir: Path, name: str, data: dict, markdown: str) -> None:
    """Write `name`.json and `name`.md into `results_dir`."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (results_dir / f"{name}.md").write_text(markdown)


def add_part_arguments(ap: argparse.ArgumentParser, name: str, *, timeout: float, timeout_help: str, quick_help: str,
                       child_flag: str = "--child", probe: bool = False) -> None:
    """The options every child-process benchmark part shares: per-process timeout, --quick, where results and the SRS
    cache go, --render (markdown from the saved JSON), and the hidden flags its own child processes are run with."""
    ap.add_argument("--timeout", type=float, default=timeout, help=timeout_help)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--cache", help="SRS cache root (default $ZKREF_BENCH_CACHE or ~/.cache/zkref-bench)")
    ap.add_argument("--render", action="store_true", help=f"rewrite {name}.md from {name}.json and exit")
    ap.add_argument(child_flag, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    if probe:
        ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)


def run_cold_then_warm(script: str, spec: dict, cache: Path, timeout: float) -> dict:
    """A part's case in two fresh processes of `script --child SPEC --phase cold|warm`: cold builds settings and keys
    into `cache`, warm proves from it. Each phase's last JSON line of stdout, or {"error": ...}; stops at the first
    phase that fails, times out or reports the case "unsupported"."""
    out: dict = {}
    for phase in ("cold", "warm"):
        cmd = [sys.executable, script, "--child", json.dumps(spec), "--cache", str(cache), "--phase", phase]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            out[phase] = {"error": f"timed out after {timeout:.0f} s"}
            break
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            out[phase] = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
            break
        out[phase] = json.loads(lines[-1])
        if "unsupported" in out[phase]:
            break
    return out
