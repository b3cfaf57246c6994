"""Variants of the EZKL backend's circuit for measurements: the statement's graph or a part of it, with the backend's
pinned run arguments or some of them changed, set up once and proven many times in fresh processes, interleaved.

Used by bench_profile.py (where the proving time goes: graph parts, phases) and bench_ezkl_levers.py (settings and
graph changes against today's pinned settings). A variant is a JSON-able dict:

    {"module": "c_attn" | "q_proj" | "tiny", "graph": GRAPH, "run": {run-arg overrides}, "logrows": k | None,
     "settings_only": bool (lay out only: rows and k, no compile or setup),
     "trim": bool (default true: the einsum chip sized to its Freivalds products, as the backend does —
               backends.ezkl.settings.trim_einsum_equations; false leaves EZKL's sizing),
     "fit": bool (default true: the main region sized without the committed x, as the backend does —
              backends.ezkl.settings.fit_main_region; false leaves EZKL's sizing)}

GRAPH is "statement" (backends.ezkl.graph.export_onnx, the backend's graph), "unfolded" (the statement's graph before
graph/6: `unfolded_module`), "floor" (the same with the Floor
requantisation and EZKL's clamp, i.e. with boolean range checks: the graph until the boolean-free one was measured),
"unpacked" (the Floor graph with its output unpacked: y_q·2^shift cells, the graph until packing was measured) or an
ablation: "no_requant"
(y = x·Aᵀ·Bᵀ, no rounding or clamp), "xa" (z = x·Aᵀ only), "xa_requant" (z_q only), "bz" (y = z_q·Bᵀ with z_q the
input, packed as the statement's graph packs it), "requant" (the requantisation alone: z the input, z_q the output),
each requantising as the statement's graph does (`graph.requantise`). Ablations only measure; their witness is not
the statement's and is not checked. Layout: as the backend
(`choose_layout` on a probe at the instance floor) unless `logrows` (and optionally `num_inner_cols`) is forced.

Each setup runs in a child process (`python ezkl_variants.py setup SPEC WORKDIR`), each prove in another (`prove`):
the prover's peak RSS and time are its own, and interleaving variants in one run keeps their comparison fair on a
shared machine.
"""
from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MODULES = {
    "c_attn": dict(label="GPT-2 c_attn 768→2304 r8 T15", d_in=768, d_out=2304, rank=8, tokens=15, shift=9),
    "q_proj": dict(label="Llama-3-8B q_proj 4096→4096 r16 T1", d_in=4096, d_out=4096, rank=16, tokens=1, shift=10),
    "tiny": dict(label="tiny 16→24 r2 T15", d_in=16, d_out=24, rank=2, tokens=15, shift=5),
}
"""The measured shapes: the targets' (int4 weights and the shifts bench_ezkl.py uses) and a tiny one for --quick."""
GRAPHS = ("statement", "unfolded", "floor", "unpacked", "no_requant", "xa", "xa_requant", "bz", "requant")


def statement_and_witness(module: str, seed: int = 0):
    """The module's statement (x and y polycommit, adapter fixed: the measured mode) and a random int4 witness."""
    import numpy as np

    from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness

    m = MODULES[module]
    st = LoRAStatement(shape=LoRAShape(d_in=m["d_in"], d_out=m["d_out"], rank=m["rank"], tokens=m["tokens"]),
                       shift=m["shift"], x_binding="polycommit", adapter_binding="fixed", y_binding="polycommit",
                       weight_bits=4)
    rng = np.random.default_rng(seed)
    w = LoRAWitness(A_q=rng.integers(-8, 8, st.shape.a_shape), B_q=rng.integers(-8, 8, st.shape.b_shape),
                    x_q=rng.integers(-128, 128, st.shape.x_shape))
    return st, w


def _export(graph_name: str, st, w, path: Path) -> dict:
    """Write the variant's ONNX; returns its input data (EZKL's data JSON)."""
    import numpy as np
    import torch

    from backends.ezkl import graph
    from harness import export_onnx
    from zkref.lora.statement import evaluate

    if graph_name == "statement":
        graph.export_onnx(st, w, path)
        return graph.input_data(w.x_q, st.shift)
    if graph_name == "unfolded":
        module = unfolded_module(st, w)
        export_onnx(module, torch.zeros(st.shape.x_shape, dtype=torch.float32), path)
        return graph.input_data(w.x_q, st.shift)
    if graph_name in ("floor", "unpacked"):
        packing = graph.output_packing(st) if graph_name == "floor" else unpacked(st)
        module = graph.statement_module(w.A_q, w.B_q, shift=st.shift, z_bits=st.z_bits, packing=packing,
                                        tokens=st.shape.tokens, boolean_free=False)
        export_onnx(module, torch.zeros(st.shape.x_shape, dtype=torch.float32), path)
        return graph.input_data(w.x_q, st.shift)
    s = st.shift
    packing = graph.output_packing(st)
    boolean_free = graph.boolean_free_requant(st)
    full = graph.statement_module(w.A_q, w.B_q, shift=s, z_bits=st.z_bits, packing=packing, tokens=st.shape.tokens,
                                  boolean_free=boolean_free)

    class Part(torch.nn.Module):
        """A part of the statement's graph, with the statement module's own constants (A, B packed as its output is,
        the token weights) and requantisation."""

        def __init__(self) -> None:
            super().__init__()
            self.A, self.B_packed = full.A, full.B
            self.B = graph.frozen_parameter(w.B_q)       # no_requant: y unbounded, so unpacked
            if packing.tokens > 1:
                self.W = full.W

        def forward(self, x):
            if graph_name == "no_requant":
                return (x @ self.A.t()) @ self.B.t()
            if graph_name == "xa":
                return x @ self.A.t()
            if graph_name in ("xa_requant", "requant"):
                z = x @ self.A.t() if graph_name == "xa_requant" else x
                return graph.requantise(z, s, st.z_bits, boolean_free=boolean_free)
            if graph_name == "bz":
                if packing.tokens > 1:
                    x = graph.pack_tokens(x, self.W)
                return x @ self.B_packed.t()
            raise ValueError(graph_name)

    if graph_name == "requant":
        z = evaluate(st, w).z
        export_onnx(Part(), torch.zeros(z.shape, dtype=torch.float32), path)
        return graph.input_data(np.asarray(z), s)
    if graph_name == "bz":
        z_q = evaluate(st, w).z_q
        export_onnx(Part(), torch.zeros(z_q.shape, dtype=torch.float32), path)
        return graph.input_data(np.asarray(z_q), s)
    export_onnx(Part(), torch.zeros(st.shape.x_shape, dtype=torch.float32), path)
    return graph.input_data(w.x_q, s)


def unfolded_module(st, w):
    """The statement's graph before graph/6 (lever "unfolded"): the same exact requantisation with the clamp's bound
    subtracted and added back around its relus (lo + relu(⌊u⌋ − lo) − relu(⌊u⌋ − hi)), the remainder formed before
    its comparison, and the tokens packed by a product and a sum in the main region instead of a Freivalds product."""
    import numpy as np
    import torch

    from backends.ezkl import graph
    from zkref.primitives.ranges import IntRange

    s, q = st.shift, IntRange(st.z_bits)
    packing = graph.output_packing(st)
    full = graph.statement_module(w.A_q, w.B_q, shift=s, z_bits=st.z_bits, packing=packing, tokens=st.shape.tokens,
                                  boolean_free=graph.boolean_free_requant(st))

    class Unfolded(torch.nn.Module):
        """The statement module's own constants (A, B packed as its output is); the tokens' weights as graph/5 had
        them, one per token of a group."""

        def __init__(self) -> None:
            super().__init__()
            self.A, self.B = full.A, full.B
            self.W = graph.frozen_parameter(np.array(packing.token_weights()).reshape(1, packing.tokens, 1))

        def forward(self, x):
            u = graph.rounding_input(x @ self.A.t(), s) if s else x @ self.A.t()
            z = u
            if s:
                qq = (u * (2.0 ** -s) + 1.0 - 1.0) * (2.0 ** s)
                z = qq - (u - qq < 0).to(torch.float32)
            z = q.lo + torch.relu(z - q.lo) - torch.relu(z - q.hi)
            if packing.tokens == 1:
                return z @ self.B.t()
            groups = -(-st.shape.tokens // packing.tokens)
            if groups * packing.tokens > st.shape.tokens:
                z = torch.cat([z, torch.zeros(groups * packing.tokens - st.shape.tokens, st.shape.rank)], 0)
            return (z.reshape(groups, packing.tokens, st.shape.rank) * self.W).sum(1) @ self.B.t()

    return Unfolded()


def run_args(st, spec: dict, logrows: int, num_inner_cols: int):
    """The backend's pinned RunSettings for `st` at a layout, with the spec's overrides applied."""
    import dataclasses

    from backends.ezkl.settings import run_args_for

    from backends.ezkl.settings import Visibility

    base = run_args_for(st, logrows=logrows, num_inner_cols=num_inner_cols)
    over = dict(spec.get("run", {}))
    over.pop("num_inner_cols", None)
    for key in ("input_visibility", "param_visibility", "output_visibility"):
        if key in over:
            over[key] = Visibility(over[key])
    if "decomp_base" in over and "decomp_legs" not in over:
        over["decomp_legs"] = legs_for_base(st, over["decomp_base"])
    return dataclasses.replace(base, **over)


def value_bits(module: str) -> int:
    """Bits of the largest magnitude the module's requantisation decomposes (`graph.value_bound`)."""
    from backends.ezkl.graph import value_bound

    return value_bound(statement_and_witness(module)[0]).bit_length()


def legs_for_base(st, base: int) -> int:
    """Digits per decomposition for `base`: enough for the requantisation's values in `base` and, for Floor, in 2^shift
    (as backends.ezkl.graph.decomp_legs does for its base)."""
    from backends.ezkl.graph import value_bound

    bits = value_bound(st).bit_length()
    legs = math.ceil(bits / math.log2(base))
    if st.shift:
        legs = max(legs, math.ceil(bits / st.shift))
    return max(2, legs)


def vk_shape(vk: bytes) -> dict:
    """Counts read from a halo2 verifying key (RawBytes): k, fixed columns (the rest is permutation commitments and
    selectors, whose split the file does not state), and the key's SHA-256 (equal keys: the same circuit)."""
    import hashlib

    return {"k": vk[1], "fixed_columns": int.from_bytes(vk[3:7], "little"), "vk_bytes": len(vk),
            "vk_sha256": hashlib.sha256(vk).hexdigest()}


def setup(spec: dict, work: Path, srs_root: Path) -> dict:
    """Child: ONNX → settings (probe, then the chosen or forced layout) → compile → setup, all into `work`."""
    import ezkl

    from backends.ezkl.cache import dev_srs
    from backends.ezkl.settings import (NUM_INNER_COLS, canonicalise, choose_layout, fit_main_region, k_floor,
                                        trim_einsum_equations)

    work.mkdir(parents=True, exist_ok=True)
    st, w = statement_and_witness(spec["module"])
    data = _export(spec["graph"], st, w, work / "model.onnx")
    (work / "input.json").write_text(json.dumps(data))
    cols = spec.get("run", {}).get("num_inner_cols", NUM_INNER_COLS)
    t0 = time.perf_counter()
    probe = run_args(st, spec, k_floor(0), cols)
    if not ezkl.gen_settings(str(work / "model.onnx"), str(work / "settings.json"), py_run_args=probe.py_run_args()):
        raise RuntimeError("gen_settings failed")
    probed = json.loads((work / "settings.json").read_text())
    rows = probed["num_rows"]
    k = spec.get("logrows") or choose_layout(rows, 0).logrows
    run = run_args(st, spec, k, cols)
    if not ezkl.gen_settings(str(work / "model.onnx"), str(work / "settings.json"), py_run_args=run.py_run_args()):
        raise RuntimeError("gen_settings failed")
    settings = canonicalise(json.loads((work / "settings.json").read_text()))
    if spec.get("trim", True):
        settings = trim_einsum_equations(settings)
    if spec.get("fit", True) and spec["graph"] not in ("requant", "bz"):     # x is the input: committed, fitted
        settings = fit_main_region(settings, [st])
    (work / "settings.json").write_text(json.dumps(settings, sort_keys=True))
    t_settings = time.perf_counter() - t0
    laid_out = {"rows": settings["num_rows"], "probe_rows": rows, "k": k, "num_inner_cols": cols,
                "einsum_cells": int(settings.get("einsum_params", {}).get("total_einsum_col_size", 0)),
                "range_checks": settings.get("required_range_checks"),
                "decomp_base": settings["run_args"]["decomp_base"], "decomp_legs": settings["run_args"]["decomp_legs"],
                "check_mode": settings["run_args"]["check_mode"],
                "disable_freivalds": settings["run_args"]["disable_freivalds"],
                "total_assignments": settings.get("total_assignments"), "settings_s": t_settings,
                "poseidon_rows": settings["module_sizes"]["poseidon"][0]}
    if spec.get("settings_only"):
        return laid_out
    if not ezkl.compile_circuit(str(work / "model.onnx"), str(work / "model.compiled"), str(work / "settings.json")):
        raise RuntimeError("compile_circuit failed")
    srs = dev_srs(srs_root, k)
    t0 = time.perf_counter()
    if not ezkl.setup(str(work / "model.compiled"), str(work / "vk.key"), str(work / "pk.key"), srs_path=str(srs)):
        raise RuntimeError("setup failed")
    t_setup = time.perf_counter() - t0
    (work / "srs.path").write_text(str(srs))
    return {**laid_out, "setup_s": t_setup, "pk_mib": (work / "pk.key").stat().st_size / 2**20,
            **vk_shape((work / "vk.key").read_bytes())}


def prove(spec: dict, work: Path) -> dict:
    """Child: witness (checked equal to evaluate() for the statement's graph), prove, verify; times, peak RSS, and
    each phase's CLOCK_MONOTONIC start and end (`marks`, to cut a `perf record -k CLOCK_MONOTONIC` profile)."""
    import ezkl

    srs = (work / "srs.path").read_text()
    marks: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    marks["witness"] = [time.monotonic()]
    wit = work / f"witness-{os.getpid()}.json"
    proof = work / f"proof-{os.getpid()}.json"
    ezkl.gen_witness(str(work / "input.json"), str(work / "model.compiled"), str(wit), vk_path=str(work / "vk.key"),
                     srs_path=srs)
    t_witness = time.perf_counter() - t0
    marks["witness"].append(time.monotonic())
    exact = None
    if spec["graph"] in ("statement", "unfolded", "floor", "unpacked"):
        exact = witness_exact(spec["module"], json.loads(wit.read_text()), packed=spec["graph"] != "unpacked")
    t0 = time.perf_counter()
    marks["prove"] = [time.monotonic()]
    ezkl.prove(str(wit), str(work / "model.compiled"), str(work / "pk.key"), proof_path=str(proof), srs_path=srs)
    t_prove = time.perf_counter() - t0
    marks["prove"].append(time.monotonic())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    verify_error = None
    try:
        ok = bool(ezkl.verify(str(proof), str(work / "settings.json"), str(work / "vk.key"), srs_path=srs))
    except BaseException as exc:          # EZKL raises RuntimeError, or pyo3's PanicException (not an Exception)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        ok, verify_error = False, f"{type(exc).__name__}: {str(exc)[:200]}"
    t_verify = time.perf_counter() - t0
    size = len(bytes(json.loads(proof.read_text())["proof"]))
    wit.unlink()
    proof.unlink()
    return {"witness_s": t_witness, "prove_s": t_prove, "verify_s": t_verify, "verified": ok,
            "verify_error": verify_error, "proof_bytes": size,
            "peak_rss_mib": rss, "witness_exact": exact, "load_average": os.getloadavg()[0], "marks": marks}


def unpacked(st):
    """The identity packing: output cells y_q·2^shift."""
    from backends.ezkl.graph import OutputPacking, output_packing

    return OutputPacking(digit_bits=output_packing(st).digit_bits)


def witness_exact(module: str, wit: dict, *, packed: bool = True) -> bool:
    """EZKL's outputs equal `evaluate()`'s y_q cells (`graph.output_cells`, or y_q·2^shift for the unpacked graph):
    the backend's check, for variants outside the backend."""
    from backends.ezkl.graph import output_cells
    from zkref.lora.statement import evaluate
    from zkref.primitives.field import felt_from_str, signed

    st, w = statement_and_witness(module)
    ys = [signed(felt_from_str(v)) for v in wit["outputs"][0]]
    y_q = evaluate(st, w).y_q
    return ys == (output_cells(st, y_q) if packed else unpacked(st).cells(y_q, st.shift))


def child(action: str, spec: dict, work: Path, *, srs_root: Path | None = None, timeout: float = 1800.0,
          env: dict | None = None, prefix: list[str] | None = None) -> dict:
    """Run `setup` or `prove` in a fresh process; its JSON line, or {"error": ...}."""
    cmd = (prefix or []) + [sys.executable, str(Path(__file__)), action, json.dumps(spec), str(work)]
    if srs_root is not None:
        cmd.append(str(srs_root))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
                              env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    action, spec, work = argv[0], json.loads(argv[1]), Path(argv[2])
    if action == "setup":
        out = setup(spec, work, Path(argv[3]))
    elif action == "prove":
        out = prove(spec, work)
    else:
        raise SystemExit(f"unknown action {action}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
