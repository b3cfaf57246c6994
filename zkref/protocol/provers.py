"""Proving away from the request path: a local process pool by default, Ray tasks when given a cluster.

One job function, `run_job(spec, tensors)`, does all the work: it takes plain JSON text (which job, which backend and
its options, the canonical statement) and safetensors bytes (A_q, B_q, x_q), and returns JSON text (the proof, the
public values, timings, where it ran). Nothing else crosses the process or machine boundary — no model objects, no
backend objects — so the same function runs in a spawned local process (`ProcessProver`) or as a Ray remote task on
any node of a cluster (`RayProver`), and a contributor who outgrows one machine adds machines, not code.

Both executors submit a job and hand back a `concurrent.futures.Future` of its JSON answer; the server's queue
(zkref.protocol.server) decides what runs when. The executors pickle the two arguments internally (the standard
library's process pool and Ray both do): that is trusted traffic between the contributor's own processes and nodes,
and it is only ever `str` and `bytes` — never data a client sent in pickled form.

Ray: `RayProver(address=...)` calls `ray.init(address=...)`: "auto" or "HOST:6379" joins a running cluster started
with `ray start --head` (workers `ray start --address=HEAD:6379`); "ray://HOST:10001" connects through Ray Client;
"local" starts a private single-node instance. Every node needs this package installed and the same backend
options to make sense there (for EZKL: the same SRS file path, or a shared cache directory) — see specs/protocol.md.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import socket
import threading
import time
from typing import Protocol

import numpy as np

from zkref.protocol.tensors import Dim, TensorSpec, decode_tensors, encode_tensors

JOB_FORMAT = "zkref-proving-job/1"
JOB_KINDS = ("prove", "anchor", "ping")


def _dtype(bits: int) -> tuple[str, type]:
    """The narrowest safetensors integer type holding `bits`-bit signed values (weights and activations ≤ 16 bits)."""
    return ("I8", np.int8) if bits <= 8 else ("I16", np.int16)


def _spec_for(statement) -> dict[str, TensorSpec]:
    s = statement.shape
    w, x = _dtype(statement.weight_bits)[0], _dtype(statement.activation_bits)[0]
    return {"A_q": TensorSpec(w, (Dim.exactly(s.rank), Dim.exactly(s.d_in))),
            "B_q": TensorSpec(w, (Dim.exactly(s.d_out), Dim.exactly(s.rank))),
            "x_q": TensorSpec(x, (Dim.exactly(s.tokens), Dim.exactly(s.d_in)))}


def job_request(*, kind: str, backend: str, options: dict, statement, A_q: np.ndarray, B_q: np.ndarray,
                x_q: np.ndarray | None) -> tuple[str, bytes]:
    """The two plain arguments of `run_job` for one statement: JSON text and safetensors bytes.

    For an anchor job x_q may be None (zeros stand in: an anchor does not depend on the activations).
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind must be one of {JOB_KINDS}")
    if x_q is None:
        x_q = np.zeros(statement.shape.x_shape, dtype=np.int8)
    spec = json.dumps({"format": JOB_FORMAT, "kind": kind, "backend": backend, "options": options,
                       "statement": statement.canonical()}, sort_keys=True)
    w, x = _dtype(statement.weight_bits)[1], _dtype(statement.activation_bits)[1]
    tensors = encode_tensors({"A_q": np.asarray(A_q, dtype=w), "B_q": np.asarray(B_q, dtype=w),
                              "x_q": np.asarray(x_q, dtype=x)})
    return spec, tensors


def _where() -> dict:
    return {"host": socket.gethostname()[:255], "pid": os.getpid()}


def run_job(spec: str, tensors: bytes) -> str:
    """Run one proving job (importable, plain arguments: what process pools and Ray tasks execute).

    spec: JSON {"format", "kind": "prove"|"anchor"|"ping", "backend", "options", "statement"}.
    tensors: safetensors with A_q, B_q, x_q (I8, or I16 for widths above 8 bits) of the statement's shapes (ignored for "ping").
    Returns JSON: prove → {"proof": ProofMessage, "public": LoRAPublic.to_json(), "timings", "worker"};
    anchor → {"anchor": AnchorInfo, "worker"}; ping → {"worker"}. Raises on any failure (the caller records why).
    """
    job = json.loads(spec)
    if not isinstance(job, dict) or job.get("format") != JOB_FORMAT or job.get("kind") not in JOB_KINDS:
        raise ValueError(f"not a {JOB_FORMAT} job")
    if job["kind"] == "ping":
        return json.dumps({"worker": _where()})
    from backends import get_backend
    from zkref.lora.statement import LoRAStatement, LoRAWitness
    from zkref.protocol.messages import AnchorInfo, ProofMessage

    statement = LoRAStatement.from_canonical(job["statement"])
    arrays = decode_tensors(tensors, _spec_for(statement))
    witness = LoRAWitness(A_q=arrays["A_q"].astype(np.int64), B_q=arrays["B_q"].astype(np.int64),
                          x_q=arrays["x_q"].astype(np.int64))
    options = job.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError("backend options must be a JSON object")
    backend = get_backend(job["backend"], **options)
    if job["kind"] == "anchor":
        anchor = backend.anchor(statement, witness)
        return json.dumps({"anchor": AnchorInfo.of(anchor).model_dump(), "worker": _where()})
    t0 = time.perf_counter()
    result = backend.prove(statement, witness)
    timings = {k: float(v) for k, v in result.timings.items() if isinstance(v, (int, float))}
    timings["job"] = time.perf_counter() - t0
    return json.dumps({"proof": ProofMessage.of(result.proof).model_dump(), "public": result.public.to_json(),
                       "timings": timings, "worker": _where()})


class Prover(Protocol):
    """Runs `run_job` somewhere; `submit` returns a Future of its JSON answer."""

    kind: str
    workers: int

    def submit(self, spec: str, tensors: bytes) -> cf.Future: ...

    def cancel(self, future: cf.Future) -> None: ...

    def shutdown(self) -> None: ...


class ProcessProver:
    """`run_job` in a local pool of `workers` spawned processes (spawn: no state forked from the server).

    A crashed worker breaks a standard-library pool for good; the pool is then replaced, the jobs that were in it
    fail with the reason, and later jobs run in the new pool. A running job cannot be interrupted: `cancel` only
    drops queued ones (the server stops waiting for a timed-out job but its worker stays busy until it ends).
    """

    kind = "process"

    def __init__(self, *, workers: int = 1):
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
            raise ValueError(f"workers must be an int in 1..256, got {workers!r}")
        self.workers = workers
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"))

    def submit(self, spec: str, tensors: bytes) -> cf.Future:
        with self._lock:
            try:
                return self._pool.submit(run_job, spec, tensors)
            except cf.BrokenExecutor:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                return self._pool.submit(run_job, spec, tensors)

    def cancel(self, future: cf.Future) -> None:
        future.cancel()

    def warm_up(self, timeout: float = 120.0) -> list[dict]:
        """Start every worker process now (spawn and imports take seconds) rather than on the first call."""
        futures = [self.submit(json.dumps({"format": JOB_FORMAT, "kind": "ping"}), b"") for _ in range(self.workers)]
        return [json.loads(f.result(timeout=timeout))["worker"] for f in futures]

    def shutdown(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=False, cancel_futures=True)


class RayProver:
    """`run_job` as Ray remote tasks (one CPU each) on the cluster at `address` (see the module docstring).

    address "local" starts a private single-node Ray with `workers` CPUs and no dashboard (what the tests use);
    any other address joins an existing cluster, whose size decides how many tasks really run at once (the server
    still dispatches at most `workers` jobs at a time). `cancel` asks Ray to stop the task (force-kills its worker).
    """

    kind = "ray"

    def __init__(self, *, address: str, workers: int = 1, runtime_env: dict | None = None):
        import ray

        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 4096:
            raise ValueError(f"workers must be an int in 1..4096, got {workers!r}")
        if not isinstance(address, str) or not address:
            raise ValueError("a Ray address is required (e.g. auto, HOST:6379, ray://HOST:10001 or local)")
        self.workers = workers
        self._started_here = not ray.is_initialized()
        if self._started_here:
            kwargs: dict = {"include_dashboard": False, "log_to_driver": False}
            if address == "local":
                kwargs |= {"address": "local", "num_cpus": workers}
            else:
                kwargs["address"] = address
            if runtime_env:
                kwargs["runtime_env"] = runtime_env
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError) as exc:
                raise ValueError(f"cannot connect to Ray at {address!r}: {exc}") from None
        self._remote = ray.remote(num_cpus=1, max_retries=0)(run_job)
        self._refs: dict[int, object] = {}
        self._lock = threading.Lock()

    def submit(self, spec: str, tensors: bytes) -> cf.Future:
        ref = self._remote.remote(spec, tensors)
        future = ref.future()
        with self._lock:
            self._refs[id(future)] = ref
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: cf.Future) -> None:
        with self._lock:
            self._refs.pop(id(future), None)

    def cancel(self, future: cf.Future) -> None:
        import ray

        with self._lock:
            ref = self._refs.get(id(future))
        if ref is not None:
            ray.cancel(ref, force=True)

    def warm_up(self, timeout: float = 120.0) -> list[dict]:
        futures = [self.submit(json.dumps({"format": JOB_FORMAT, "kind": "ping"}), b"") for _ in range(self.workers)]
        return [json.loads(f.result(timeout=timeout))["worker"] for f in futures]

    def shutdown(self) -> None:
        import ray

        if self._started_here and ray.is_initialized():
            ray.shutdown()


def make_prover(*, workers: int, ray_address: str | None = None) -> ProcessProver | RayProver:
    """The prover the server uses: Ray when an address is given, else a local process pool."""
    if ray_address:
        return RayProver(address=ray_address, workers=workers)
    return ProcessProver(workers=workers)
