"""`EzklBackend`: real Halo2/KZG proofs of a `LoRAStatement` with EZKL 23, equal to zkref's semantics bit for bit.

prove: export the statement's graph (backends.ezkl.graph) → pinned settings and a chosen layout → compile → setup
(cached per statement, adapter and SRS) → witness, checked equal to `evaluate()` → prove → the proof is verified once
before it is returned (EZKL's prover accepts unsatisfied witnesses; a proof that does not verify is a bug, raised).
verify: `check_binding`, then the settings carried in the verifying key must be the statement's pinned ones, then EZKL
verifies with instances BUILT from the caller's public values and, for polycommit bindings, with KZG commitments the
verifier computes itself (x, y) or pinned (the adapter) written over the proof's. A `LoRABatch` goes the same way as
one graph (`prove_batch`, `verify_batch`: backends/ezkl/batch.py), under a verifying key that names the batch.
Spec: specs/ezkl-backend.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends.base import (MAX_PROOF_BYTES, AdapterAnchor, BatchProofResult, Progress, Proof, ProofResult, Support,
                           Verdict, canonical_json, check_binding, sha256_hex)
from backends.ezkl import batch as batch_graph
from backends.ezkl import cost, graph, instances
from backends.ezkl.cache import (CacheError, build_entry, cache_root, dev_srs, sha256_file,
                                 srs_header_k)
from backends.ezkl.settings import (K_MAX, K_SPREAD, K_SPREAD_BATCH, Layout, RunSettings, canonicalise, choose_layout,
                                    fit_main_region, k_floor, run_args_for, trim_einsum_equations)
from zkref.lora.batch import LoRABatch, batch_public_values, encode_batch_instances, evaluate_batch
from zkref.lora.commitments import requant_constants
from zkref.lora.statement import (ActivationBinding, AdapterBinding, LoRAPublic, LoRAStatement, LoRAWitness,
                                  OutputBinding, encode_instances, evaluate, instance_length, public_values)
from zkref.primitives.field import P, felt_from_str, felt_to_str, signed
from zkref.primitives.jsonsafe import parse_json
from zkref.primitives.poseidon import poseidon_hash_fast
from zkref.primitives.ranges import over_budget

NAME = "ezkl"
GRAPH_VERSION = "zkref-ezkl-graph/6"
"""Names the ONNX formulation and its run arguments' circuit-shaping choices; part of every cache key, so a changed
graph never reuses old circuits or keys. /2: decompositions in base 2^shift (one range table fewer). /3: packed
outputs (graph.OutputPacking) with y polycommit and the adapter fixed. /4: a fixed adapter's requantisation
without booleans (graph.floor_by_rebase, graph.clamp_by_relu). /5: the einsum chip sized to its Freivalds products
only (settings.trim_einsum_equations). /6: the clamp's lower bound folded into the rounding constant, the tokens
packed by a Freivalds product (graph.pack_tokens), two-digit decompositions (graph.decomposition) and the main region
sized without the committed x (settings.fit_main_region)."""
BATCH_GRAPH_VERSION = "zkref-ezkl-batch-graph/4"
"""Names the batch's ONNX formulation (backends/ezkl/batch.py) in its cache keys. /3: the einsum chip sized to its
Freivalds products only (settings.trim_einsum_equations). /4: the main region sized without the members' committed x
(settings.fit_main_region)."""
BATCH_VK_FORMAT = b"zkref-ezkl-batch-vk/1\n"
"""A batch's published verifying key: this tag, the batch id (32 hex digits), then as `VK_FORMAT`'s: the batch id is
part of what `vk_hash` covers, so the key of one batch is never another batch's (other names or order)."""
VK_FORMAT = b"zkref-ezkl-vk/1\n"
"""The verifying key this backend publishes: this tag, the canonical settings JSON (length-prefixed), EZKL's vk.
EZKL's vk file alone does not fix the constraint system: the verifier rebuilds it from the settings, so both are
the key, and `vk_hash` covers both."""
MAX_SETTINGS_BYTES = 4 << 20
MAX_VK_BYTES = 256 << 20
MAX_HASHED_VALUES = 3000
"""Largest number of values hashed in-circuit (hashed x plus hashed adapter params): EZKL's Poseidon takes ~41 rows
per value in ONE column, so 3,000 values need k = 17 (2^17 rows), the largest k whose setup and prove stay within
a couple of minutes here (benchmarks/results/ezkl.md: hashed ladder)."""


def hashed_values(statement: LoRAStatement) -> int:
    """How many values EZKL's Poseidon absorbs for this statement: x if hashed, the graph's params if hashed."""
    s = statement.shape
    n = s.tokens * s.d_in if statement.x_binding is ActivationBinding.HASHED else 0
    if statement.adapter_binding is AdapterBinding.HASHED:
        n += s.rank * (s.d_in + s.d_out) + len(requant_constants(statement.shift, statement.z_bits))
    return n
BINDINGS_UNSUPPORTED = {
    ActivationBinding.HASHED_PACKED: "packed Poseidon commitments exist only in zkref (EZKL hashes one felt per value)",
    AdapterBinding.HASHED_PACKED: "packed Poseidon commitments exist only in zkref (EZKL hashes one felt per value)",
}
MAX_COMMITMENT_POINTS = 4096
"""More columns than any supported adapter's commitment has; longer commitment strings are refused unparsed."""
CIRCUIT_FILES = ("model.onnx", "settings.json", "model.compiled")
KEY_FILES = ("vk.key", "pk.key")
SECTION_ORDER = ("x", "adapter", "y")
"""Polycommit tensors in the order the proof transcript carries their commitments: inputs, params, outputs."""


MEANINGLESS_WARNINGS = ("low scale values (<8) may impact precision",)
"""What EZKL warns about (through Python's logging: its Rust `log` records reach the "ezkl" logger) that means nothing
here: the graph's input scale is the requant shift and every value is an exact integer, so a scale below 8 loses no
precision. Dropped; every other EZKL message, errors included, is shown as before."""


class _DropMeaningless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.strip() in MEANINGLESS_WARNINGS)


logging.getLogger("ezkl").addFilter(_DropMeaningless())


def _interrupt(exc: BaseException) -> bool:
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("ezkl", "torch", "onnx"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def encode_vk(settings: dict, vk: bytes) -> bytes:
    """The published verifying key: `VK_FORMAT`, 8-byte length, canonical settings JSON, EZKL's vk bytes."""
    blob = canonical_json(settings)
    return VK_FORMAT + len(blob).to_bytes(8, "little") + blob + vk


def encode_batch_vk(batch_id: str, settings: dict, vk: bytes) -> bytes:
    """A batch's published verifying key: `BATCH_VK_FORMAT`, the batch id, then `encode_vk`'s layout."""
    return BATCH_VK_FORMAT + batch_id.encode("ascii") + encode_vk(settings, vk)[len(VK_FORMAT):]


def decode_vk(data: bytes) -> tuple[dict, bytes]:
    """Inverse of `encode_vk` with every size bounded; ValueError on anything malformed."""
    if not isinstance(data, (bytes, bytearray)) or not data.startswith(VK_FORMAT):
        raise ValueError("verifying key is not a zkref EZKL verifying key")
    return _decode_vk_body(bytes(data), len(VK_FORMAT))


def decode_batch_vk(data: bytes) -> tuple[str, dict, bytes]:
    """Inverse of `encode_batch_vk`: (batch id, settings, EZKL's vk); ValueError on anything malformed."""
    if not isinstance(data, (bytes, bytearray)) or not data.startswith(BATCH_VK_FORMAT):
        raise ValueError("verifying key is not a zkref EZKL batch verifying key")
    head = len(BATCH_VK_FORMAT)
    try:
        batch_id = bytes(data[head:head + 32]).decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("verifying key's batch id is not ASCII") from None
    settings, vk = _decode_vk_body(bytes(data), head + 32)
    return batch_id, settings, vk


def _decode_vk_body(data: bytes, head: int) -> tuple[dict, bytes]:
    if len(data) > MAX_VK_BYTES:
        raise ValueError(f"verifying key of {len(data)} bytes exceeds {MAX_VK_BYTES}")
    n = int.from_bytes(data[head:head + 8], "little")
    if n > MAX_SETTINGS_BYTES or head + 8 + n > len(data):
        raise ValueError("verifying key's settings length is out of range")
    settings = parse_json(data[head + 8:head + 8 + n], what="verifying key's settings", max_bytes=MAX_SETTINGS_BYTES)
    if not isinstance(settings, dict):
        raise ValueError("verifying key's settings are not a JSON object")
    vk = data[head + 8 + n:]
    if not vk:
        raise ValueError("verifying key has no EZKL key bytes")
    return settings, vk


def settings_mismatch(statement: LoRAStatement, settings: dict) -> str | None:
    """Why `settings` are not this statement's pinned settings (None if they are): run arguments, scales, shapes."""
    return _settings_mismatch(settings, run_args=lambda **kw: run_args_for(statement, **kw),
                              instance_shapes=_instance_shapes(statement), input_scales=[statement.shift],
                              output_scales=[graph.output_scale(statement)], instances=instance_length(statement),
                              what=str(statement.shape))


def batch_settings_mismatch(batch: LoRABatch, settings: dict) -> str | None:
    """Why `settings` are not this batch's pinned settings (None if they are)."""
    shapes = [list(m.shape.x_shape) for m in batch.members if m.x_binding is ActivationBinding.PUBLIC] + \
        [list(m.shape.y_shape) for m in batch.members if m.y_binding is OutputBinding.PUBLIC]
    scale = batch_graph.batch_input_scale(batch)
    return _settings_mismatch(settings, run_args=lambda **kw: batch_graph.batch_run_args(batch, **kw),
                              instance_shapes=shapes, input_scales=[scale] * len(batch.members),
                              output_scales=batch_graph.output_scales(batch),
                              instances=sum(instance_length(m) for m in batch.members),
                              what=f"batch of {len(batch.members)}")


def _settings_mismatch(settings: dict, *, run_args: Callable[..., RunSettings], instance_shapes: list,
                       input_scales: list[int], output_scales: list[int], instances: int, what: str) -> str | None:
    run = settings.get("run_args")
    if not isinstance(run, dict):
        return "settings have no run_args"
    logrows, cols = run.get("logrows"), run.get("num_inner_cols")
    if isinstance(logrows, bool) or not isinstance(logrows, int) or not isinstance(cols, int):
        return "settings' logrows or num_inner_cols is not an integer"
    try:
        expected = run_args(logrows=logrows, num_inner_cols=cols).settings_json()
    except ValueError as exc:
        return f"settings' layout is out of range: {exc}"
    if run != expected:
        keys = sorted(k for k in set(run) | set(expected) if run.get(k) != expected.get(k))
        return f"settings' run arguments are not the statement's pinned ones (differ in {', '.join(keys)})"
    checks = {"model_instance_shapes": instance_shapes, "model_input_scales": input_scales,
              "model_output_scales": output_scales, "required_lookups": []}
    for key, value in checks.items():
        if settings.get(key) != value:
            return f"settings' {key} is {settings.get(key)!r:.200}, the statement needs {value!r:.200}"
    modules = settings.get("module_sizes")
    try:
        module_rows = int(modules["poseidon"][0])
    except (KeyError, IndexError, TypeError, ValueError):
        return "settings' module_sizes are malformed"
    if k_floor(instances, module_rows) > logrows:
        return f"logrows {logrows} cannot hold the statement's {instances} instances and {module_rows} Poseidon rows " \
               f"({what})"
    return None


def _instance_shapes(statement: LoRAStatement) -> list[list[int]]:
    """EZKL's model_instance_shapes: the public tensors' shapes (x if public, y if public)."""
    s = statement.shape
    out = []
    if statement.x_binding is ActivationBinding.PUBLIC:
        out.append(list(s.x_shape))
    if statement.y_binding is OutputBinding.PUBLIC:
        out.append(list(s.y_shape))
    return out


def adapter_key(statement: LoRAStatement, witness: LoRAWitness) -> str:
    """Cache key of the circuit compiled for this adapter (the compiled circuit holds the adapter's values)."""
    h = hashlib.sha256()
    h.update(GRAPH_VERSION.encode())
    h.update(statement.id.encode())
    for arr in (witness.A_q, witness.B_q):
        h.update(repr(arr.shape).encode())
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    return h.hexdigest()[:32]


def batch_adapter_key(batch: LoRABatch, witnesses: Sequence[LoRAWitness]) -> str:
    """Cache key of the batch's circuit compiled for these adapters."""
    h = hashlib.sha256()
    h.update(BATCH_GRAPH_VERSION.encode())
    h.update(batch.id.encode())
    for w in witnesses:
        for arr in (w.A_q, w.B_q):
            h.update(repr(arr.shape).encode())
            h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    return h.hexdigest()[:32]


@dataclass(frozen=True, kw_only=True, eq=False)
class _Target:
    """What `_prepare` needs of a statement or a batch: its id and cache key, its graph and pinned run arguments."""

    id: str
    key: str
    canonical: dict
    graph_version: str
    instances: int
    export: Callable[[Path], None]
    run_args: Callable[..., RunSettings]
    mismatch: Callable[[dict], str | None]
    k_spread: int = K_SPREAD


def _points_hex(points) -> str:
    from backends import kzg

    return "".join(kzg.to_transcript_bytes(p).hex() for p in points)


def _points_from_hex(text: str) -> list:
    from backends import kzg

    if not isinstance(text, str) or len(text) % 128 or not text or len(text) > 128 * MAX_COMMITMENT_POINTS:
        raise ValueError(f"a commitment must be a hex string of 1 to {MAX_COMMITMENT_POINTS} 64-byte points")
    raw = bytes.fromhex(text)
    return [kzg.from_transcript_bytes(raw[i:i + 64]) for i in range(0, len(raw), 64)]


@dataclass(frozen=True, eq=False)
class Prepared:
    """A statement's (or batch's) compiled circuit and keys for its adapter(s), in the cache, with the choices made."""

    statement: LoRAStatement | LoRABatch
    circuit_dir: Path
    keys_dir: Path
    settings: dict
    run: RunSettings
    layout: Layout
    srs_path: Path
    srs_sha256: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def vk_bytes(self) -> bytes:
        vk = (self.keys_dir / "vk.key").read_bytes()
        if isinstance(self.statement, LoRABatch):
            return encode_batch_vk(self.statement.id, self.settings, vk)
        return encode_vk(self.settings, vk)

    @property
    def logrows(self) -> int:
        return self.run.logrows


class EzklBackend:
    """Proves and verifies LoRA statements with EZKL (Halo2, KZG on BN254); zero-knowledge proofs."""

    name = NAME
    zero_knowledge = True

    def __init__(self, *, cache_dir: str | os.PathLike | None = None, srs: str | os.PathLike | None = None,
                 logrows: int | None = None):
        """cache_dir: the cache root (default `ZKREF_CACHE` or the user's cache dir); srs: a real SRS file (RawBytes,
        as EZKL reads it) used instead of a cached development SRS; it must cover every k this backend needs;
        logrows: force k instead of `choose_layout`'s choice (for measurements; never below the instance floor)."""
        self.cache = cache_root(cache_dir) / "ezkl"
        self.forced_logrows = logrows
        self.srs_file: Path | None = None
        self.srs_file_k = 0
        if srs is not None:
            self.srs_file = Path(srs)
            self.srs_file_k = srs_header_k(self.srs_file)

    # -- what is supported ---------------------------------------------------------------------------------------
    def supports(self, statement: LoRAStatement) -> Support:
        for binding in (statement.x_binding, statement.adapter_binding):
            if binding in BINDINGS_UNSUPPORTED:
                return Support(False, BINDINGS_UNSUPPORTED[binding])
        reason = graph.unsupported_reason(statement)
        if reason:
            return Support(False, reason)
        hashed = hashed_values(statement)
        if hashed > MAX_HASHED_VALUES:
            what = " and ".join(n for n, b in (("x", statement.x_binding is ActivationBinding.HASHED),
                                                ("the adapter", statement.adapter_binding is AdapterBinding.HASHED)) if b)
            return Support(False, f"hashing {what} means {hashed} values > {MAX_HASHED_VALUES} in EZKL's Poseidon "
                                  "(~41 rows each, in one column): use polycommit")
        floor = k_floor(instance_length(statement))
        if floor > K_MAX:
            return Support(False, f"{instance_length(statement)} public instances need logrows {floor} > {K_MAX}; "
                                  "use polycommit x and y")
        if self.srs_file is not None and floor > self.srs_file_k:
            return Support(False, f"the SRS {self.srs_file} (k = {self.srs_file_k}) is smaller than the "
                                  f"2^{floor} rows the public instances need")
        reason = over_budget(f"an EZKL proof of {statement.shape}", cost.memory_estimate(statement))
        if reason:
            return Support(False, reason)
        return Support(True, "EZKL (Halo2/KZG) zero-knowledge proof")

    # -- setup ---------------------------------------------------------------------------------------------------
    def _srs(self, k: int) -> Path:
        if self.srs_file is not None:
            if self.srs_file_k < k:
                raise ValueError(f"the SRS {self.srs_file} has k = {self.srs_file_k}; this circuit needs k = {k}")
            return self.srs_file
        return dev_srs(self.cache, k)

    def prepare(self, statement: LoRAStatement, witness: LoRAWitness, *,
                progress: Progress | None = None) -> Prepared:
        """Settings, compiled circuit and keys for (statement, adapter), from the cache or built now."""
        support = self.supports(statement)
        if not support:
            raise ValueError(f"EZKL backend cannot prove this statement: {support.reason}")
        statement.check_witness(witness)
        target = _Target(id=statement.id, key=adapter_key(statement, witness), canonical=statement.canonical(),
                         graph_version=GRAPH_VERSION, instances=instance_length(statement),
                         export=lambda path: graph.export_onnx(statement, witness, path),
                         run_args=lambda **kw: run_args_for(statement, **kw),
                         mismatch=lambda settings: settings_mismatch(statement, settings))
        return self._prepare(target, statement, progress)

    def prepare_batch(self, batch: LoRABatch, witnesses: Sequence[LoRAWitness], *,
                      progress: Progress | None = None) -> Prepared:
        """Settings, compiled circuit and keys for (batch, adapters): one graph, one circuit, one key pair."""
        support = self.supports_batch(batch)
        if not support:
            raise ValueError(f"EZKL backend cannot prove this batch: {support.reason}")
        batch.check_witnesses(witnesses)
        target = _Target(id=batch.id, key=batch_adapter_key(batch, witnesses), canonical=batch.canonical(),
                         graph_version=BATCH_GRAPH_VERSION, instances=sum(instance_length(m) for m in batch.members),
                         export=lambda path: batch_graph.export_batch_onnx(batch, witnesses, path),
                         run_args=lambda **kw: batch_graph.batch_run_args(batch, **kw),
                         mismatch=lambda settings: batch_settings_mismatch(batch, settings), k_spread=K_SPREAD_BATCH)
        return self._prepare(target, batch, progress)

    def _prepare(self, target: _Target, statement: LoRAStatement | LoRABatch,
                 progress: Progress | None) -> Prepared:
        timings: dict[str, float] = {}
        key = target.key + ("" if self.forced_logrows is None else f"-k{self.forced_logrows}")
        circuit_dir = self.cache / "circuits" / target.id / key
        circuit_dir.parent.mkdir(parents=True, exist_ok=True)

        def build_circuit(tmp: Path) -> dict:
            import ezkl

            if progress:
                progress("settings")
            t0 = time.perf_counter()
            onnx = tmp / "model.onnx"
            target.export(onnx)
            probe_k = k_floor(target.instances)
            probe = target.run_args(logrows=probe_k)
            if not ezkl.gen_settings(str(onnx), str(tmp / "probe.json"), py_run_args=probe.py_run_args()):
                raise RuntimeError("ezkl.gen_settings failed")
            probed = json.loads((tmp / "probe.json").read_text())
            rows, module_rows = probed["num_rows"], probed["module_sizes"]["poseidon"][0]
            (tmp / "probe.json").unlink()
            layout = choose_layout(rows, target.instances, module_rows, k_spread=target.k_spread)
            if self.forced_logrows is not None:
                k = max(self.forced_logrows, layout.k_floor)
                layout = Layout(logrows=k, num_inner_cols=layout.num_inner_cols, rows=rows, k_floor=layout.k_floor,
                                reason=f"k={k}: forced")
            run = target.run_args(logrows=layout.logrows, num_inner_cols=layout.num_inner_cols)
            if not ezkl.gen_settings(str(onnx), str(tmp / "settings.json"), py_run_args=run.py_run_args()):
                raise RuntimeError("ezkl.gen_settings failed")
            settings = trim_einsum_equations(canonicalise(json.loads((tmp / "settings.json").read_text())))
            members = statement.members if isinstance(statement, LoRABatch) else [statement]
            settings = fit_main_region(settings, members)
            (tmp / "settings.json").write_text(json.dumps(settings, sort_keys=True))
            timings["settings"] = time.perf_counter() - t0
            if progress:
                progress("compile")
            t0 = time.perf_counter()
            if not ezkl.compile_circuit(str(onnx), str(tmp / "model.compiled"), str(tmp / "settings.json")):
                raise RuntimeError("ezkl.compile_circuit failed")
            timings["compile"] = time.perf_counter() - t0
            return {"layout": {"logrows": layout.logrows, "num_inner_cols": layout.num_inner_cols,
                               "rows": layout.rows, "k_floor": layout.k_floor, "reason": layout.reason},
                    "statement": target.canonical, "graph": target.graph_version}

        meta, _ = build_entry(circuit_dir, CIRCUIT_FILES, build_circuit)
        settings = json.loads((circuit_dir / "settings.json").read_text())
        lay = meta.get("layout", {})
        try:
            layout = Layout(logrows=lay["logrows"], num_inner_cols=lay["num_inner_cols"], rows=lay["rows"],
                            k_floor=lay["k_floor"], reason=lay["reason"])
            run = target.run_args(logrows=layout.logrows, num_inner_cols=layout.num_inner_cols)
        except (KeyError, TypeError, ValueError) as exc:
            raise CacheError(f"cache entry {circuit_dir} has unusable layout metadata ({exc}); delete it") from None
        mismatch = target.mismatch(settings)
        if mismatch:
            raise CacheError(f"cache entry {circuit_dir}: {mismatch}; delete it to rebuild")
        if progress:
            progress("setup")
        t0 = time.perf_counter()
        srs_path = self._srs(layout.logrows)
        srs_sha = sha256_file(srs_path)
        keys_dir = circuit_dir / f"keys-{srs_sha[:16]}"

        def build_keys(tmp: Path) -> dict:
            import ezkl

            if not ezkl.setup(str(circuit_dir / "model.compiled"), str(tmp / "vk.key"), str(tmp / "pk.key"),
                              srs_path=str(srs_path)):
                raise RuntimeError("ezkl.setup failed")
            return {"srs_sha256": srs_sha}

        build_entry(keys_dir, KEY_FILES, build_keys)
        timings["setup"] = time.perf_counter() - t0
        return Prepared(statement=statement, circuit_dir=circuit_dir, keys_dir=keys_dir, settings=settings, run=run,
                        layout=layout, srs_path=srs_path, srs_sha256=srs_sha, timings=timings)

    # -- commitments ----------------------------------------------------------------------------------------------
    def _commit(self, values: list[int], k: int, vk_path: Path, settings_path: Path, srs_path: Path) -> list:
        """EZKL's polycommit commitment to one tensor as the PROOF carries it: `circuit_columns` points."""
        return self._commit_many([values], k, vk_path, settings_path, srs_path)[0]

    def _commit_many(self, tensors: Sequence[Sequence[int]], k: int, vk_path: Path, settings_path: Path,
                     srs_path: Path) -> list[list]:
        """EZKL's polycommit commitments to several tensors (each as the proof carries it: `circuit_columns` points).

        With an SRS of exactly 2^k: ONE `ezkl.kzg_commit` call over the tensors each zero-padded to whole columns
        (`witness_columns`·n values): a column's commitment depends only on the values in it, so this gives every
        tensor's column points, and the message's last column (all padding) is the padding-only column a tensor gets
        when the circuit allocates more columns than its values fill. One call because each call re-reads the vk,
        whose cost grows with the circuit (a batch's x and y tensors would otherwise re-read a large vk each).
        With a larger SRS (kzg_commit does not downsize): backends.kzg (py_ecc), tensor by tensor.
        """
        from backends import kzg

        if srs_header_k(srs_path) != k:
            srs = kzg.read_srs(srs_path, max_k=max(kzg.MAX_SRS_K, srs_header_k(srs_path)))
            return [list(kzg.commit(list(t), srs, k=k, columns=kzg.circuit_columns(len(t), k))) for t in tensors]
        import ezkl

        n = kzg.column_capacity(k)
        message: list[str] = []
        spans: list[tuple[int, int, int]] = []                 # (first point, points with values, circuit columns)
        zero = felt_to_str(0)
        for t in tensors:
            filled = kzg.witness_columns(len(t), k)
            spans.append((len(message) // n, filled, kzg.circuit_columns(len(t), k)))
            message += [felt_to_str(int(v) % P) for v in t] + [zero] * (filled * n - len(t))
        points = [kzg.from_ezkl_point(p) for p in ezkl.kzg_commit(message, str(vk_path), str(settings_path),
                                                                   str(srs_path))]
        if len(points) != len(message) // n + 1:
            raise RuntimeError(f"ezkl.kzg_commit returned {len(points)} points for {len(message) // n} full columns")
        pad = points[-1]
        return [points[first:first + filled] + [pad] * (cols - filled) for first, filled, cols in spans]

    def _tensors(self, statement: LoRAStatement, public: LoRAPublic,
                 adapter_points: list | None, k: int, vk_path: Path, settings_path: Path,
                 srs_path: Path) -> dict[str, list]:
        """The polycommit commitments a verifier holds: x and y computed from its values, the adapter as given."""
        mine: dict[str, list[int]] = {}
        if statement.x_binding is ActivationBinding.POLYCOMMIT:
            mine["x"] = [int(v) for v in public.x_q.reshape(-1).tolist()]
        if statement.y_binding is OutputBinding.POLYCOMMIT:
            mine["y"] = graph.output_cells(statement, public.y_q)
        out = dict(zip(mine, self._commit_many(list(mine.values()), k, vk_path, settings_path, srs_path))) \
            if mine else {}
        if statement.adapter_binding is AdapterBinding.POLYCOMMIT:
            if adapter_points is None:
                raise ValueError("the adapter is polycommit: its commitment is needed")
            out["adapter"] = adapter_points
        return out

    def _adapter_commitment(self, prep: Prepared, witness: LoRAWitness) -> list:
        return self._commit(graph.params_message(witness.A_q, witness.B_q, prep.statement.shift,
                                                 prep.statement.z_bits), prep.logrows,
                            prep.keys_dir / "vk.key", prep.circuit_dir / "settings.json", prep.srs_path)

    # -- anchor, prove ---------------------------------------------------------------------------------------------
    def anchor(self, statement: LoRAStatement, witness: LoRAWitness) -> AdapterAnchor:
        """What the contributor publishes once: the vk hash (a fixed adapter is in the vk), the polycommit adapter's
        KZG commitment or the hashed adapter's digest."""
        prep = self.prepare(statement, witness)
        commitment = digest = None
        if statement.adapter_binding is AdapterBinding.POLYCOMMIT:
            commitment = _points_hex(self._adapter_commitment(prep, witness))
        if statement.adapter_binding is AdapterBinding.HASHED:
            d = poseidon_hash_fast(graph.params_message(witness.A_q, witness.B_q, statement.shift,
                                                                  statement.z_bits))
            digest = f"0x{d:064x}"
        return AdapterAnchor(backend=NAME, statement_id=statement.id, vk_hash=sha256_hex(prep.vk_bytes),
                             commitment=commitment, digest=digest)

    @staticmethod
    def _witness_and_prove(prep: Prepared, input_data: dict, check_witness: Callable[[dict], None],
                           timings: dict[str, float], progress: Progress | None) -> tuple[bytes, dict]:
        """EZKL's witness for `input_data` (checked equal to zkref's semantics by `check_witness` before anything is
        proven), then the proof: its bytes and parsed JSON. Records the witness and prove phase times in `timings`."""
        import ezkl

        work = Path(tempfile.mkdtemp(prefix="zkref-ezkl-"))
        try:
            if progress:
                progress("witness")
            t0 = time.perf_counter()
            data, wit_path, proof_path = work / "input.json", work / "witness.json", work / "proof.json"
            data.write_text(json.dumps(input_data))
            ezkl.gen_witness(str(data), str(prep.circuit_dir / "model.compiled"), str(wit_path),
                             vk_path=str(prep.keys_dir / "vk.key"), srs_path=str(prep.srs_path))
            check_witness(json.loads(wit_path.read_text()))
            timings["witness"] = time.perf_counter() - t0
            if progress:
                progress("prove")
            t0 = time.perf_counter()
            ezkl.prove(str(wit_path), str(prep.circuit_dir / "model.compiled"), str(prep.keys_dir / "pk.key"),
                       proof_path=str(proof_path), srs_path=str(prep.srs_path))
            timings["prove"] = time.perf_counter() - t0
            proof_bytes = proof_path.read_bytes()
            return proof_bytes, json.loads(proof_bytes)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _self_verified_proof(self, prep: Prepared, statement_id: str, canonical: list[int], proof_bytes: bytes,
                             ezkl_proof: dict, commitments: dict[str, str], graph_meta: dict,
                             timings: dict[str, float], verify: Callable[[Proof], Verdict]) -> Proof:
        """The `Proof` object around EZKL's proof (vk, pinned settings, layout and versions in `meta`), verified
        (against the prover's own anchor) before it is returned: EZKL's prover accepts unsatisfied witnesses, so a
        proof that fails here is a bug."""
        vk = prep.vk_bytes
        transcript = len(bytes(ezkl_proof["proof"])) if isinstance(ezkl_proof.get("proof"), list) else None
        meta = {"versions": _versions(), **graph_meta, "logrows": prep.logrows,
                "num_inner_cols": prep.run.num_inner_cols, "rows": prep.layout.rows,
                "layout_reason": prep.layout.reason, "srs_sha256": prep.srs_sha256,
                "dev_srs": self.srs_file is None, "proof_bytes": transcript, "run_args": prep.run.to_json()}
        proof = Proof(backend=NAME, statement_id=statement_id, instances=tuple(canonical), data=proof_bytes,
                      zero_knowledge=True, vk=vk, vk_hash=sha256_hex(vk), settings=prep.settings,
                      commitments=commitments, meta=meta)
        t0 = time.perf_counter()
        verdict = verify(proof)
        self_verify = time.perf_counter() - t0
        if not verdict:
            raise RuntimeError(f"EZKL produced a proof that does not verify ({verdict.reason}): the witness does not "
                               "satisfy the circuit or a cached key is corrupt")
        meta["timings"] = dict(timings, self_verify=self_verify)
        return proof

    def prove(self, statement: LoRAStatement, witness: LoRAWitness, *,
              progress: Progress | None = None) -> ProofResult:
        support = self.supports(statement)
        if not support:
            raise ValueError(f"EZKL backend cannot prove this statement: {support.reason}")
        trace = evaluate(statement, witness)
        public = public_values(statement, witness, trace)
        canonical = encode_instances(statement, public)
        prep = self.prepare(statement, witness, progress=progress)
        timings = {"settings": prep.timings.get("settings", 0.0), "compile": prep.timings.get("compile", 0.0),
                   "setup": prep.timings.get("setup", 0.0)}
        proof_bytes, ezkl_proof = self._witness_and_prove(
            prep, graph.input_data(witness.x_q, statement.shift),
            lambda wit: self._check_witness(statement, witness, trace, public, wit), timings, progress)
        if instances.from_ezkl(statement, ezkl_proof["instances"]) != canonical:
            raise RuntimeError("EZKL's proof instances differ from the statement's canonical instances (a bug)")
        commitments: dict[str, str] = {}
        if statement.adapter_binding is AdapterBinding.POLYCOMMIT:
            commitments["adapter"] = _points_hex(self._adapter_commitment(prep, witness))
        own = AdapterAnchor(backend=NAME, statement_id=statement.id, vk_hash=sha256_hex(prep.vk_bytes),
                            commitment=commitments.get("adapter"),
                            digest=None if public.adapter_digest is None else f"0x{public.adapter_digest:064x}")
        proof = self._self_verified_proof(prep, statement.id, canonical, proof_bytes, ezkl_proof, commitments,
                                          {"graph": GRAPH_VERSION}, timings,
                                          lambda proof: self.verify(statement, public, proof, anchor=own))
        return ProofResult(public, proof, timings)

    @staticmethod
    def _check_witness(statement: LoRAStatement, witness: LoRAWitness, trace, public: LoRAPublic, wit: dict) -> None:
        """EZKL's witness must be `evaluate()`: inputs x_q, outputs y_q's cells (`graph.output_cells`: y_q·2^shift,
        packed where the graph packs), digests equal zkref's."""
        try:
            xs = [signed(felt_from_str(v)) for v in wit["inputs"][0]]
            ys = [signed(felt_from_str(v)) for v in wit["outputs"][0]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RuntimeError(f"EZKL's witness file is not as expected ({exc})") from None
        if xs != witness.x_q.reshape(-1).tolist():
            raise RuntimeError("EZKL's witness inputs differ from x_q (a bug in the input encoding)")
        if ys != graph.output_cells(statement, trace.y_q):
            raise RuntimeError("EZKL's witness outputs differ from evaluate(): the graph does not compute the "
                               "statement (a bug)")
        if statement.x_binding is ActivationBinding.HASHED:
            got = felt_from_str(wit["processed_inputs"]["poseidon_hash"][0])
            if got != public.x_digest:
                raise RuntimeError("EZKL's input hash differs from zkref's activations_digest (a bug)")
        if statement.adapter_binding is AdapterBinding.HASHED:
            got = felt_from_str(wit["processed_params"]["poseidon_hash"][0])
            if got != public.adapter_digest:
                raise RuntimeError("EZKL's params hash differs from zkref's adapter_digest (a bug)")

    # -- verify ----------------------------------------------------------------------------------------------------
    def _verify_srs(self, k: int) -> Path:
        if self.srs_file is not None:
            if self.srs_file_k < k:
                raise ValueError(f"the SRS {self.srs_file} (k = {self.srs_file_k}) is smaller than the proof's k = {k}")
            return self.srs_file
        path = self.cache / "srs" / f"dev-k{k}.srs"
        if not path.exists():
            raise ValueError(f"no SRS for k = {k}: pass srs= (the SRS the prover used); a development SRS exists "
                             "only in the prover's cache")
        return path

    def verify(self, statement: LoRAStatement, public: LoRAPublic, proof: Proof, *,
               anchor: AdapterAnchor | None) -> Verdict:
        verdict = check_binding(NAME, statement, public, proof, anchor)
        if not verdict:
            return verdict
        support = self.supports(statement)
        if not support:
            return Verdict(False, f"EZKL backend does not verify this statement: {support.reason}")
        try:
            settings, vk = decode_vk(proof.vk)
        except ValueError as exc:
            return Verdict(False, f"cannot verify: {exc}")

        def tensors(adapter_points, k, vk_path, settings_path, srs_path) -> list:
            by_name = self._tensors(statement, public, adapter_points, k, vk_path, settings_path, srs_path)
            return [pt for name in SECTION_ORDER for pt in by_name.get(name, [])]

        return self._verify_ezkl(proof, settings, vk, anchor, mismatch=settings_mismatch(statement, settings),
                                 column=lambda: instances.to_ezkl(statement, encode_instances(statement, public)),
                                 tensors=tensors,
                                 adapter_polycommit=statement.adapter_binding is AdapterBinding.POLYCOMMIT,
                                 unbound=not statement.adapter_binding.bound)

    def _verify_ezkl(self, proof: Proof, settings: dict, vk: bytes, anchor: AdapterAnchor | None, *,
                     mismatch: str | None, column: Callable[[], list], tensors: Callable[..., list],
                     adapter_polycommit: bool, unbound: bool) -> Verdict:
        """The EZKL check shared by statements and batches: the vk's settings are the proof's and the pinned ones,
        then `ezkl.verify` with the instance column built from the verifier's values (`column`) and the polycommit
        points (`tensors`: the verifier's own x and y commitments, the pinned adapter's) written over the proof's."""
        try:
            if proof.settings != settings:
                return Verdict(False, "the proof's settings differ from those its verifying key carries")
            if mismatch:
                return Verdict(False, mismatch)
            try:
                ezkl_proof = parse_json(proof.data, what="proof data", max_bytes=MAX_PROOF_BYTES)
            except ValueError as exc:
                return Verdict(False, f"proof data is not EZKL proof JSON ({exc})")
            if not isinstance(ezkl_proof, dict) or not isinstance(ezkl_proof.get("proof"), (list, str)):
                return Verdict(False, "proof data is not an EZKL proof object")
            k = settings["run_args"]["logrows"]
            srs_path = self._verify_srs(k)
            adapter_points = _points_from_hex(anchor.commitment) if adapter_polycommit else None
        except ValueError as exc:
            return Verdict(False, f"cannot verify: {exc}")
        work = Path(tempfile.mkdtemp(prefix="zkref-ezkl-verify-"))
        try:
            settings_path, vk_path, proof_path = work / "settings.json", work / "vk.key", work / "proof.json"
            settings_path.write_text(json.dumps(settings))
            vk_path.write_bytes(vk)
            points = tensors(adapter_points, k, vk_path, settings_path, srs_path)
            built = {key: ezkl_proof.get(key) for key in ("protocol", "split", "version", "timestamp")}
            built["proof"] = ezkl_proof["proof"]
            built["hex_proof"] = None
            built["pretty_public_inputs"] = None
            built["instances"] = column()
            if points:
                from backends import kzg

                built = kzg.with_commitments(built, points)
                built["hex_proof"] = None
            proof_path.write_text(json.dumps(built))
            import ezkl

            ok = ezkl.verify(str(proof_path), str(settings_path), str(vk_path), srs_path=str(srs_path))
        except BaseException as exc:  # EZKL raises RuntimeError and pyo3 PanicException (not an Exception)
            if _interrupt(exc):
                raise
            hint = ""
            if proof.meta.get("srs_sha256") not in (None, sha256_file(srs_path) if srs_path.exists() else None):
                hint = " (the proof names another SRS than this verifier's)"
            return Verdict(False, f"EZKL rejected the proof: {type(exc).__name__}: {str(exc)[:300]}{hint}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if ok is not True:
            return Verdict(False, f"EZKL verify returned {ok!r}")
        unbound_note = "; adapter UNBOUND: any adapter satisfies this statement" if unbound else ""
        return Verdict(True, f"EZKL KZG proof verified against the pinned verifying key{unbound_note}")

    # -- batches ---------------------------------------------------------------------------------------------------
    def supports_batch(self, batch: LoRABatch) -> Support:
        """One graph for the whole batch (backends/ezkl/batch.py): uniform bindings among x and y public or
        polycommit and the adapter fixed or polycommit; each member within the single-statement limits."""
        reason = batch_graph.unsupported_batch_reason(batch)
        if reason:
            return Support(False, reason)
        for name, member in zip(batch.names, batch.members):
            support = self.supports(member)
            if not support:
                return Support(False, f"{name}: {support.reason}")
        total = sum(instance_length(m) for m in batch.members)
        floor = k_floor(total)
        if floor > K_MAX:
            return Support(False, f"the batch's {total} public instances need logrows {floor} > {K_MAX}; use "
                                  "polycommit x and y")
        if self.srs_file is not None and floor > self.srs_file_k:
            return Support(False, f"the SRS {self.srs_file} (k = {self.srs_file_k}) is smaller than the 2^{floor} "
                                  "rows the batch's public instances need")
        reason = over_budget(f"an EZKL proof of {len(batch.members)} modules", cost.memory_estimate(batch))
        if reason:
            return Support(False, reason)
        return Support(True, f"EZKL (Halo2/KZG) zero-knowledge proof of {len(batch.members)} statements in one circuit")

    def _batch_adapter_commitment(self, prep: Prepared, batch: LoRABatch, witnesses: Sequence[LoRAWitness]) -> list:
        return self._commit(batch_graph.batch_params_message(batch, witnesses), prep.logrows,
                            prep.keys_dir / "vk.key", prep.circuit_dir / "settings.json", prep.srs_path)

    def anchor_batch(self, batch: LoRABatch, witnesses: Sequence[LoRAWitness]) -> AdapterAnchor:
        """What the contributor publishes once for the batch: the batch vk's hash (it names the batch and holds fixed
        adapters) and, for polycommit adapters, the KZG commitment to all members' params (`batch_params_message`)."""
        prep = self.prepare_batch(batch, witnesses)
        commitment = None
        if batch.members[0].adapter_binding is AdapterBinding.POLYCOMMIT:
            commitment = _points_hex(self._batch_adapter_commitment(prep, batch, witnesses))
        return AdapterAnchor(backend=NAME, statement_id=batch.id, vk_hash=sha256_hex(prep.vk_bytes),
                             commitment=commitment)

    def prove_batch(self, batch: LoRABatch, witnesses: Sequence[LoRAWitness], *,
                    progress: Progress | None = None) -> BatchProofResult:
        support = self.supports_batch(batch)
        if not support:
            raise ValueError(f"EZKL backend cannot prove this batch: {support.reason}")
        traces = evaluate_batch(batch, witnesses)
        publics = batch_public_values(batch, witnesses)
        canonical = encode_batch_instances(batch, publics)
        prep = self.prepare_batch(batch, witnesses, progress=progress)
        timings = {"settings": prep.timings.get("settings", 0.0), "compile": prep.timings.get("compile", 0.0),
                   "setup": prep.timings.get("setup", 0.0)}
        proof_bytes, ezkl_proof = self._witness_and_prove(
            prep, batch_graph.batch_input_data(batch, [w.x_q for w in witnesses]),
            lambda wit: self._check_batch_witness(batch, witnesses, traces, wit), timings, progress)
        if instances.batch_from_ezkl(batch, ezkl_proof["instances"]) != canonical:
            raise RuntimeError("EZKL's proof instances differ from the batch's canonical instances (a bug)")
        commitments: dict[str, str] = {}
        if batch.members[0].adapter_binding is AdapterBinding.POLYCOMMIT:
            commitments["adapter"] = _points_hex(self._batch_adapter_commitment(prep, batch, witnesses))
        own = AdapterAnchor(backend=NAME, statement_id=batch.id, vk_hash=sha256_hex(prep.vk_bytes),
                            commitment=commitments.get("adapter"))
        proof = self._self_verified_proof(prep, batch.id, canonical, proof_bytes, ezkl_proof, commitments,
                                          {"graph": BATCH_GRAPH_VERSION, "members": list(batch.names)}, timings,
                                          lambda proof: self.verify_batch(batch, publics, proof, anchor=own))
        return BatchProofResult(tuple(publics), proof, timings)

    @staticmethod
    def _check_batch_witness(batch: LoRABatch, witnesses: Sequence[LoRAWitness], traces, wit: dict) -> None:
        """EZKL's witness must be each member's `evaluate()`: input i is x_q, output i is y_q·2^(output scale)."""
        try:
            xs = [[signed(felt_from_str(v)) for v in column] for column in wit["inputs"]]
            ys = [[signed(felt_from_str(v)) for v in column] for column in wit["outputs"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise RuntimeError(f"EZKL's witness file is not as expected ({exc})") from None
        if len(xs) != len(batch.members) or len(ys) != len(batch.members):
            raise RuntimeError("EZKL's witness has not one input and one output per member (a bug)")
        for name, w, trace, x, y, scale in zip(batch.names, witnesses, traces, xs, ys,
                                               batch_graph.output_scales(batch)):
            if x != w.x_q.reshape(-1).tolist():
                raise RuntimeError(f"{name}: EZKL's witness input differs from x_q (a bug in the input encoding)")
            if y != [int(v) << scale for v in trace.y_q.reshape(-1).tolist()]:
                raise RuntimeError(f"{name}: EZKL's witness output differs from evaluate(): the batch graph does not "
                                   "compute the statement (a bug)")

    def verify_batch(self, batch: LoRABatch, publics: Sequence[LoRAPublic], proof: Proof, *,
                     anchor: AdapterAnchor | None) -> Verdict:
        verdict = check_binding(NAME, batch, publics, proof, anchor)
        if not verdict:
            return verdict
        support = self.supports_batch(batch)
        if not support:
            return Verdict(False, f"EZKL backend does not verify this batch: {support.reason}")
        try:
            batch_id, settings, vk = decode_batch_vk(proof.vk)
        except ValueError as exc:
            return Verdict(False, f"cannot verify: {exc}")
        if batch_id != batch.id:
            return Verdict(False, f"the verifying key is batch {batch_id!r:.40}'s, not {batch.id}")
        publics = tuple(publics)
        scale = batch_graph.batch_input_scale(batch)
        first = batch.members[0]

        def tensors(adapter_points, k, vk_path, settings_path, srs_path) -> list:
            xs = [[int(v) for v in p.x_q.reshape(-1).tolist()] for p in publics] \
                if first.x_binding is ActivationBinding.POLYCOMMIT else []
            ys = [[int(v) << scale for v in p.y_q.reshape(-1).tolist()] for p in publics] \
                if first.y_binding is OutputBinding.POLYCOMMIT else []
            mine = self._commit_many(xs + ys, k, vk_path, settings_path, srs_path) if xs or ys else []
            points = [pt for cols in mine[:len(xs)] for pt in cols]
            if first.adapter_binding is AdapterBinding.POLYCOMMIT:
                points += adapter_points
            return points + [pt for cols in mine[len(xs):] for pt in cols]

        return self._verify_ezkl(proof, settings, vk, anchor, mismatch=batch_settings_mismatch(batch, settings),
                                 column=lambda: instances.batch_to_ezkl(batch, encode_batch_instances(batch, publics)),
                                 tensors=tensors, adapter_polycommit=first.adapter_binding is AdapterBinding.POLYCOMMIT,
                                 unbound=False)
