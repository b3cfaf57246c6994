"""The contributor's HTTP server (FastAPI on uvicorn): answers calls at once, proves them in the background.

Endpoints (specs/protocol.md; the schema is served at /openapi.json):

    GET  /healthz                               Health           (no auth)
    GET  /v1/manifest                           Manifest
    GET  /v1/commitment                         AdapterCommitment  computed before the server starts, then fixed
    GET  /v1/modules/{module}/anchors/{tokens}  AnchorStatus     one anchor of the commitment
    POST /v1/modules/{module}/calls             CallAccepted     body: safetensors {x_q: int8 T × d_in}
    GET  /v1/calls/{call_id}                    CallStatus       ?wait=S long-polls until done or failed

Bounds, each answered with a JSON `ErrorResponse` and a 4xx status while the server keeps serving:
- the connection layer and `Guard` (zkref.protocol.http: open connections, request-head and keep-alive timeouts,
  bearer tokens, routing before any body byte is read, request slots overall and per client, the body's size and
  transfer-rate deadline);
- the handlers: unknown module or call (404), wrong content type (415), bytes that are not exactly the expected
  safetensors tensor — dtype int8, T × d_in with 1 ≤ T ≤ max_tokens (400), a statement the backend cannot prove
  (422), a full proving queue or a client's full share of it (429).
Stored results are bounded per client and overall (zkref.protocol.store.CallStore); a call is visible only to the
client that made it; an evicted, unknown or another client's call id is a 404.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import itertools
import json
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from fastapi import Depends, FastAPI, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from backends import get_backend
from backends.base import MAX_PROOF_BYTES, AdapterAnchor, Backend
from zkref.lora.statement import LoRAPublic, LoRAStatement, encode_instances
from zkref.primitives.ranges import MAX_TOKENS, IntRange
from zkref.protocol import messages as m
from zkref.protocol.contributor import Contributor, ServedModule
from zkref.protocol.http import ConnectionLimits, Guard, RequestLimits, client_of, error_bytes, token_index
from zkref.protocol.http import ServerThread, bind_socket, uvicorn_server  # noqa: F401 - re-exported for callers
from zkref.protocol.provers import Prover, job_request
from zkref.protocol.store import CallStore
from zkref.protocol.tensors import TensorFormatError, decode_tensors, encode_tensors

TENSOR_HEADER_ALLOWANCE = 1024
"""Bytes allowed for the safetensors length prefix and header of a call body (a real one is under 100 bytes)."""
BACKEND_NOTES = {
    "zkref": ("zkref MockProver replay: NOT zero-knowledge and not succinct. The 'proof' is the witness itself, so "
              "whoever fetches it learns the quantised adapter (A_q, B_q). For development and tests only."),
    "ezkl": ("EZKL Halo2/KZG zero-knowledge proofs. Sound only under an SRS whose secret nobody knows: each proof's "
             "meta says dev_srs=true when a locally generated development SRS was used (its secret is known to "
             "the contributor, who could then forge proofs)."),
}
STATEMENT_IDS = ("A call's rows are proven under LoRAStatement.from_canonical(M.statement with tokens = T') "
                 "(zkref.lora.statement), T' an allowed T of the adapter commitment (GET /v1/commitment) at least the "
                 "rows proven: the call alone, zero-padded, or stacked with the session's other calls of M (the "
                 "proof's scope lists them). The id is the first 128 bits (32 hex digits) of SHA-256 over that "
                 "statement's canonical JSON (sorted keys, no spaces); its anchor is the commitment's for (M, T').")


def default_buckets(max_tokens: int) -> tuple[int, ...]:
    """The token counts proven by default: powers of 4 below `max_tokens`, and `max_tokens` (1, 4, 16, 64 for 64).

    Each is one circuit, with its own keys, set up once at startup; a call is padded to the next one, at most 4× its
    rows (EZKL checks matrix products by Freivalds, so a padded row costs far less than a row at T = 1)."""
    out, t = [], 1
    while t < max_tokens:
        out.append(t)
        t *= 4
    return tuple(out) + (max_tokens,)


MAX_TOKENS_CONFIGURED = 4096
"""At most this many bearer tokens (each a client; every request compares against all of them)."""
EXCHANGE_ALLOWANCE = 60.0
"""Seconds a request may take beyond its body deadline and long-poll wait (handling, writing the answer) before its
connection is dropped (`ConnectionLimits.exchange_timeout`)."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """The server's bounds and where its proofs run. Every bound is published in the manifest's `limits`.

    Per-client bounds larger than their global bound are lowered to it, and keep_alive_timeout to header_timeout."""

    backend: str = "zkref"
    backend_options: dict = field(default_factory=dict)
    """JSON-able keyword arguments of the backend (EZKL: cache_dir, srs), passed to every proving job as-is."""
    token: str | None = None
    """One bearer token: becomes the first of `tokens` (`zkref serve --token`, ZKREF_TOKEN)."""
    tokens: tuple[str, ...] = ()
    """Accepted bearer tokens, each a separate client ("token 1", "token 2", … in this order, `token` first). None
    at all: no auth, and a client is its peer address."""
    max_tokens: int = 64
    max_body_bytes: int | None = None
    """Default: exactly what the largest valid call needs (max_tokens · max d_in + header allowance)."""
    max_queue: int = 64
    max_queue_per_client: int = 16
    max_concurrent_requests: int = 32
    max_concurrent_per_client: int = 8
    request_timeout: float = 30.0
    """No request body takes longer than this to arrive, whatever its size."""
    body_min_rate: int = 16 << 10
    """A body of n bytes must arrive within body_grace + n / body_min_rate seconds (and request_timeout)."""
    body_grace: float = 2.0
    body_idle_timeout: float = 5.0
    """Longest silence between two parts of a body."""
    max_connections: int = 1024
    max_connections_per_ip: int = 128
    header_timeout: float = 10.0
    """A request head must be complete within this of the connection opening or of the previous answer."""
    keep_alive_timeout: float = 5.0
    prove_timeout: float = 600.0
    max_wait: float = 30.0
    result_ttl: float = 3600.0
    max_results: int = 1024
    max_result_bytes: int = 256 << 20
    max_results_per_client: int = 256
    max_result_bytes_per_client: int = 64 << 20
    access_log: bool = False
    """One log line per request on the `zkref.access` logger (rate-limited); `zkref serve` turns it on."""
    token_buckets: tuple[int, ...] | None = None
    """The token counts calls are proven at (anchors published for each); default `default_buckets(max_tokens)`."""
    batching: bool = True
    """Prove a session's queued calls of one module together, as one statement of stacked rows."""
    batch_window: float = 0.25
    """Seconds a call waits in the queue for its session's next calls before it may be dispatched alone."""

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_queue", "max_queue_per_client", "max_concurrent_requests",
                     "max_concurrent_per_client", "body_min_rate", "max_connections", "max_connections_per_ip",
                     "max_results", "max_result_bytes", "max_results_per_client", "max_result_bytes_per_client"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("request_timeout", "body_grace", "body_idle_timeout", "header_timeout", "keep_alive_timeout",
                     "prove_timeout", "max_wait", "result_ttl"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= 1e6:
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        for per_client, overall in (("max_queue_per_client", "max_queue"),
                                    ("max_concurrent_per_client", "max_concurrent_requests"),
                                    ("max_connections_per_ip", "max_connections"),
                                    ("max_results_per_client", "max_results"),
                                    ("max_result_bytes_per_client", "max_result_bytes")):
            object.__setattr__(self, per_client, min(getattr(self, per_client), getattr(self, overall)))
        # an idle connection is waiting for its next request head: the head timeout bounds its idleness too
        object.__setattr__(self, "keep_alive_timeout", min(self.keep_alive_timeout, self.header_timeout))
        if self.max_results <= self.max_queue:
            raise ValueError("max_results must exceed max_queue (queued calls are stored until they finish)")
        if self.max_results_per_client <= self.max_queue_per_client:
            raise ValueError("max_results_per_client must exceed max_queue_per_client (a client's queued calls are "
                             "stored until they finish)")
        tokens = tuple(self.tokens)
        if len(set(tokens)) != len(tokens):
            raise ValueError("bearer tokens must differ (each is a client of its own)")
        if self.token is not None and self.token not in tokens:  # (already there after dataclasses.replace)
            tokens = (self.token,) + tokens
        for token in tokens:
            if not isinstance(token, str) or len(token) < 8 or not token.isprintable() or " " in token:
                raise ValueError("a bearer token must be at least 8 printable characters without spaces")
        if len(tokens) > MAX_TOKENS_CONFIGURED:
            raise ValueError(f"at most {MAX_TOKENS_CONFIGURED} bearer tokens")
        object.__setattr__(self, "tokens", tokens)
        try:
            json.dumps(self.backend_options)
        except (TypeError, ValueError):
            raise ValueError("backend options must be JSON-able (they travel to every proving worker)") from None
        if not isinstance(self.batch_window, (int, float)) or not 0 <= self.batch_window <= 60:
            raise ValueError(f"batch_window must be 0..60 seconds, got {self.batch_window!r}")
        if self.token_buckets is not None:
            buckets = tuple(self.token_buckets)
            if (not buckets or len(buckets) > m.MAX_BUCKETS or list(buckets) != sorted(set(buckets))
                    or any(isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= MAX_TOKENS
                           for t in buckets)):
                raise ValueError(f"token buckets must be 1 to {m.MAX_BUCKETS} increasing integers in 1..{MAX_TOKENS}")
            if buckets[-1] < self.max_tokens:
                raise ValueError(f"the largest token bucket ({buckets[-1]}) is below max_tokens ({self.max_tokens})")
            object.__setattr__(self, "token_buckets", buckets)

    def buckets(self) -> tuple[int, ...]:
        return self.token_buckets if self.token_buckets is not None else default_buckets(self.max_tokens)

    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(max_connections=self.max_connections,
                                max_connections_per_ip=self.max_connections_per_ip,
                                header_timeout=self.header_timeout, keep_alive_timeout=self.keep_alive_timeout,
                                exchange_timeout=self.request_timeout + self.max_wait + EXCHANGE_ALLOWANCE)

    def request_limits(self, contributor: Contributor) -> RequestLimits:
        return RequestLimits(max_body=self.body_limit(contributor), max_concurrent=self.max_concurrent_requests,
                             max_concurrent_per_client=self.max_concurrent_per_client,
                             body_timeout=self.request_timeout, body_min_rate=self.body_min_rate,
                             body_grace=self.body_grace, body_idle_timeout=self.body_idle_timeout)

    def body_limit(self, contributor: Contributor) -> int:
        needed = TENSOR_HEADER_ALLOWANCE + self.max_tokens * max(s.d_in for s in contributor.modules.values())
        return needed if self.max_body_bytes is None else min(self.max_body_bytes, needed)


class ProtocolError(Exception):
    """A refused request: becomes an `ErrorResponse` with this status and code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# ----------------------------------------------------------------------------------------------------------------------
# The proving queue
# ----------------------------------------------------------------------------------------------------------------------

class QueueFull(Exception):
    pass


@dataclass(eq=False)
class _Job:
    """One queued call. Jobs with the same `group` (one client's session and module) may be proven together."""

    record: "CallRecord"
    group: tuple
    queued_at: float

    @property
    def tokens(self) -> int:
        return self.record.tokens


GroupRunner = Callable[[list[_Job]], Awaitable[None]]
"""Proves a group of jobs (one statement of their stacked rows) and finishes every job's call record."""


class ProvingQueue:
    """Calls wait here (at most `max_queue` queued or being proven) and at most `workers` groups are proven at once.

    Dispatch takes the oldest call that has waited `window` seconds (or whose group already fills `max_tokens`
    rows), together with every later queued call of the same group while their rows fit in `max_tokens`: one proof
    of T = Σ rows instead of one per call. EZKL checks matrix-matrix products by Freivalds' random linear
    combination, which makes T > 1 several times cheaper per row than T = 1, and a session's calls pile up here while
    a worker proves. Jobs stay in this queue, not the executor's, so that this choice is made when a worker is free.
    """

    def __init__(self, *, workers: int, max_queue: int, window: float, max_tokens: int, run: GroupRunner):
        self.workers, self.max_queue, self.window, self.max_tokens, self.run = \
            workers, max_queue, window, max_tokens, run
        self.pending: collections.deque[_Job] = collections.deque()
        self.running = 0
        """Groups being proven."""
        self.running_calls = 0
        self.groups = 0
        """Groups dispatched so far (each one proof)."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def load(self) -> int:
        """Calls queued or being proven: what `max_queue` bounds."""
        return len(self.pending) + self.running_calls

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self.pending:
            job.record.status, job.record.reason = "failed", "the server shut down before proving it"
        self.pending.clear()

    def submit(self, record: "CallRecord", group: tuple) -> None:
        """Queue a call; the runner finishes its record when its group is proven (or fails). QueueFull when full."""
        if self.load >= self.max_queue:
            raise QueueFull()
        self.pending.append(_Job(record, group, time.monotonic()))
        self._wake.set()

    def _take(self, now: float) -> list[_Job] | None:
        """The next group to prove, removed from `pending`, or None if no call is ready yet."""
        for i, job in enumerate(self.pending):
            mates = [j for j in itertools.islice(self.pending, i, None) if j.group == job.group]
            if now - job.queued_at < self.window and sum(j.tokens for j in mates) < self.max_tokens:
                continue
            group, rows = [], 0
            for mate in mates:
                if rows + mate.tokens > self.max_tokens:
                    break
                group.append(mate)
                rows += mate.tokens
            for mate in group:
                self.pending.remove(mate)
            return group
        return None

    async def _dispatch(self) -> None:
        while True:
            timeout = None
            while self.pending and self.running < self.workers:
                now = time.monotonic()
                group = self._take(now)
                if group is None:
                    timeout = max(0.001, min(j.queued_at for j in self.pending) + self.window - now)
                    break
                self.running += 1
                self.running_calls += len(group)
                self.groups += 1
                asyncio.get_running_loop().create_task(self._execute(group))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            self._wake.clear()

    async def _execute(self, group: list[_Job]) -> None:
        try:
            await self.run(group)
        finally:
            self.running -= 1
            self.running_calls -= len(group)
            self._wake.set()


async def run_on_prover(prover: Prover, spec: str, tensors: bytes, timeout: float, *,
                        on_timeout: Callable[[BaseException], None]) -> str:
    """One `run_job` on the prover. After `timeout` seconds `on_timeout` is told at once (the calls fail now), the
    task is cancelled where the executor can (Ray), and a process-pool job that keeps running is waited for before
    TimeoutError is raised: the caller's worker slot is freed only when the worker really is, so the executor is
    never oversubscribed."""
    future = prover.submit(spec, tensors)
    wrapped = asyncio.wrap_future(future)
    try:
        return await asyncio.wait_for(asyncio.shield(wrapped), timeout=timeout)
    except asyncio.TimeoutError:
        exc = TimeoutError(f"proving exceeded {timeout:g} s")
        on_timeout(exc)
        prover.cancel(future)
        if not future.cancelled():
            with contextlib.suppress(Exception):
                await wrapped
        raise exc from None


def describe_failure(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:m.MAX_REASON]


# ----------------------------------------------------------------------------------------------------------------------
# Calls and their results
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class CallRecord:
    """One call: what was answered, and its proof's state. x_q and y_q are kept only until the proof is checked."""

    call_id: str
    module: str
    tokens: int
    x_q: np.ndarray | None
    y_q: np.ndarray | None
    status: str = "pending"
    reason: str = ""
    answer: bytes | None = None
    """The finished call's CallStatus JSON (what the proof fetch returns); counted in the store's bytes."""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def status_message(self) -> m.CallStatus:
        return m.CallStatus(call_id=self.call_id, module=self.module, tokens=self.tokens, status=self.status,
                            reason=self.reason, proof=None, scope=None, worker=None, timings={})

    @property
    def size(self) -> int:
        return len(self.answer or b"")


# ----------------------------------------------------------------------------------------------------------------------
# The application
# ----------------------------------------------------------------------------------------------------------------------

class ServerState:
    """Everything the handlers share; created inside the server's event loop (lifespan)."""

    def __init__(self, contributor: Contributor, config: ServerConfig, prover: Prover, backend: Backend,
                 commitment: m.AdapterCommitment, run: GroupRunner):
        self.contributor, self.config, self.prover, self.backend = contributor, config, prover, backend
        self.commitment = commitment
        self.commitment_bytes = commitment.canonical_bytes()
        self.queue = ProvingQueue(workers=prover.workers, max_queue=config.max_queue,
                                  window=config.batch_window if config.batching else 0.0,
                                  max_tokens=commitment.tokens[-1] if config.batching else 1, run=run)
        self.store = CallStore(ttl=config.result_ttl, max_results=config.max_results,
                               max_bytes=config.max_result_bytes, max_results_per_client=config.max_results_per_client,
                               max_bytes_per_client=config.max_result_bytes_per_client)
        self.keys: dict[str, bytes] = {}
        """Verifying keys by SHA-256, taken from the workers' proofs: only the committed anchors' (at most one per
        module and allowed T), each sent to a client once instead of inside every proof."""
        self.tasks: set[asyncio.Task] = set()
        self.manifest = build_manifest(contributor, config, prover, backend, commitment)

    def spawn(self, coro: Awaitable) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def build_manifest(contributor: Contributor, config: ServerConfig, prover: Prover, backend: Backend,
                   commitment: m.AdapterCommitment) -> m.Manifest:
    request, connection = config.request_limits(contributor), config.connection_limits()
    limits = m.Limits(max_body_bytes=request.max_body, max_tokens=config.max_tokens,
                      max_queue=config.max_queue, max_queue_per_client=config.max_queue_per_client,
                      max_concurrent_requests=config.max_concurrent_requests,
                      max_concurrent_per_client=config.max_concurrent_per_client,
                      request_timeout_seconds=config.request_timeout, body_min_bytes_per_second=config.body_min_rate,
                      body_grace_seconds=config.body_grace, body_idle_timeout_seconds=config.body_idle_timeout,
                      max_connections=connection.max_connections,
                      max_connections_per_ip=connection.max_connections_per_ip,
                      header_timeout_seconds=connection.header_timeout,
                      keep_alive_timeout_seconds=connection.keep_alive_timeout,
                      exchange_timeout_seconds=connection.exchange_timeout,
                      prove_timeout_seconds=config.prove_timeout,
                      max_wait_seconds=config.max_wait, result_ttl_seconds=config.result_ttl,
                      max_results=config.max_results, max_result_bytes=config.max_result_bytes,
                      max_results_per_client=config.max_results_per_client,
                      max_result_bytes_per_client=config.max_result_bytes_per_client)
    batching = m.BatchingInfo(enabled=config.batching, window_seconds=config.batch_window if config.batching else 0.0,
                              max_tokens=commitment.tokens[-1] if config.batching else config.max_tokens)
    return m.Manifest(format=m.FORMAT,
                      backend=m.BackendInfo(name=backend.name, zero_knowledge=backend.zero_knowledge,
                                            note=BACKEND_NOTES.get(backend.name, "")),
                      base_model=contributor.base_model_info(), calibration=contributor.calibration_info(),
                      statement_ids=STATEMENT_IDS, modules=[s.info() for s in contributor.modules.values()],
                      limits=limits, prover=m.ProverInfo(kind=prover.kind, workers=prover.workers),
                      auth="bearer" if config.tokens else "none", commitment_id=commitment.id, batching=batching)


def publish_commitment(contributor: Contributor, config: ServerConfig, *,
                       progress: Callable[[int, int, str], None] | None = None) -> m.AdapterCommitment:
    """The adapter commitment: every module's anchor at every allowed T, computed now, in this process (EZKL:
    settings, compile and key setup, cached on disk where the proving workers find them), before the server answers
    anything — so no request can ever cause a setup, and every client pins the same object.
    `progress(done, total, label)` after each anchor.

    ValueError if the backend cannot prove some module at some T (e.g. too many public instances for EZKL at the
    largest T: lower max_tokens, give smaller buckets or use polycommit bindings)."""
    backend = get_backend(config.backend, **config.backend_options)
    buckets = config.buckets()
    for served in contributor.modules.values():
        for tokens in buckets:
            support = backend.supports(served.statement(tokens))
            if not support:
                raise ValueError(f"backend {backend.name} cannot prove {served.name} at T={tokens}: {support.reason}")
    modules, done, total = [], 0, len(contributor.modules) * len(buckets)
    for served in contributor.modules.values():
        anchors = []
        for tokens in buckets:
            statement = served.statement(tokens)
            witness = served.witness(np.zeros(statement.shape.x_shape, dtype=np.int64))
            anchors.append(m.AnchorInfo.of(backend.anchor(statement, witness)))
            done += 1
            if progress:
                progress(done, total, f"{served.name} T={tokens}")
        modules.append(m.ModuleCommitment(name=served.name, statement=m.StatementTemplate.of(served.statement(1)),
                                          dequantisation=m.DequantisationInfo.of(served.quantised.dequantisation),
                                          anchors=anchors))
    return m.AdapterCommitment(format=m.COMMITMENT_FORMAT, backend=backend.name,
                               base_model=contributor.base_model_info(), tokens=list(buckets), modules=modules)


ERROR_RESPONSES = {code: {"model": m.ErrorResponse, "description": text} for code, text in (
    (400, "malformed request (tensor bytes, Content-Length)"), (401, "missing or wrong bearer token"),
    (404, "unknown module or call id (or an evicted call, or another client's)"),
    (408, "request head or body not received in time"),
    (413, "body too large (or a body sent to an endpoint that takes none)"),
    (415, "body is not application/octet-stream"),
    (422, "parameters out of range, or a statement the backend cannot prove"),
    (429, "too many requests in progress (overall or of this client), or the proving queue (or this client's share) "
          "is full"))}


def create_app(contributor: Contributor, config: ServerConfig, prover: Prover,
               commitment: m.AdapterCommitment | None = None):
    """The FastAPI application serving `contributor`, proving with `prover` (which the caller owns and shuts down).

    commitment: the adapter commitment this server publishes (`publish_commitment`, computed now when not given); a
    given one must be this contributor's (same backend, base model, modules, statements and dequantisation)."""
    backend = get_backend(config.backend, **config.backend_options)
    if not contributor.modules:
        raise ValueError("the contributor serves no modules")
    if commitment is None:
        commitment = publish_commitment(contributor, config)
    check_commitment(contributor, config, backend, commitment)
    holder: dict[str, ServerState] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        state = ServerState(contributor, config, prover, backend, commitment, prove_group)
        state.queue.start()
        holder["state"] = state
        try:
            yield
        finally:
            await state.queue.stop()
            for task in list(state.tasks):
                task.cancel()

    app = FastAPI(title="zkref contributor", version=m.FORMAT, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="A LoRA contributor: answers each call with the adapter's output at once and proves it "
                              "in the background (specs/protocol.md).")
    bearer = HTTPBearer(auto_error=False, description="required when the manifest's auth is 'bearer'")

    def state() -> ServerState:
        return holder["state"]

    def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return Response(error_bytes(status, code, message), status_code=status, media_type="application/json",
                        headers=headers)

    @app.exception_handler(ProtocolError)
    async def _protocol_error(_request, exc: ProtocolError):
        return json_error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return json_error(422, "invalid_parameter", f"{where}: {first.get('msg', 'invalid')}"[:500])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_error(exc.status_code, code, str(exc.detail)[:500])

    @app.exception_handler(Exception)
    async def _bug(_request, exc: Exception):  # a 5xx is a bug: the fuzz tests assert none happen
        return JSONResponse(status_code=500, content={"error": {"status": 500, "code": "internal_error",
                                                                "message": describe_failure(exc)}})

    def served_module(name: str) -> ServedModule:
        served = contributor.modules.get(name)
        if served is None:
            raise ProtocolError(404, "unknown_module", f"no module {name[:80]!r} is served (see /v1/manifest)")
        return served

    def bucket_for(served: ServedModule, tokens: int) -> int:
        bucket = commitment.bucket(tokens)
        if bucket is None:
            raise ProtocolError(422, "unsupported_statement",
                                f"{served.name}: {tokens} tokens exceed the largest committed T ({commitment.tokens[-1]})")
        return bucket

    @app.get("/healthz", response_model=m.Health)
    async def health() -> m.Health:
        s = state()
        return m.Health(status="ok", queued=len(s.queue.pending), running=s.queue.running,
                        stored_calls=len(s.store.calls), stored_bytes=s.store.bytes, evicted_calls=s.store.evicted)

    def require_token(credentials=Security(bearer)) -> None:
        """The Guard already refused requests without a token; checked again here, and documented in OpenAPI."""
        if not config.tokens:
            return
        given = credentials.credentials if credentials is not None else ""
        if token_index([b"Bearer " + given.encode()], config.tokens) is None:
            raise ProtocolError(401, "unauthorized", "a valid bearer token is required",
                                {"WWW-Authenticate": 'Bearer realm="zkref"'})

    auth = [Depends(require_token)]

    @app.get("/v1/manifest", response_model=m.Manifest, responses=ERROR_RESPONSES, dependencies=auth)
    async def manifest() -> m.Manifest:
        return state().manifest

    # -- the commitment and its anchors ---------------------------------------------------------------------------
    @app.get("/v1/commitment", response_model=m.AdapterCommitment, responses=ERROR_RESPONSES, dependencies=auth)
    async def published_commitment():
        return Response(state().commitment_bytes, media_type="application/json")

    @app.get("/v1/modules/{module}/anchors/{tokens}", response_model=m.AnchorStatus, responses=ERROR_RESPONSES,
             dependencies=auth)
    async def anchor(module: str, tokens: int = Path(ge=1, le=MAX_TOKENS)) -> m.AnchorStatus:
        served = served_module(module)
        if tokens not in commitment.tokens:
            raise ProtocolError(404, "not_committed", f"no anchor at T={tokens}: calls are proven at the committed "
                                                      f"T {commitment.tokens} (GET /v1/commitment)")
        info = commitment.module(served.name).anchors[commitment.tokens.index(tokens)]
        return m.AnchorStatus(module=served.name, tokens=tokens, statement_id=info.statement_id, status="done",
                              anchor=info, reason="")

    # -- calls --------------------------------------------------------------------------------------------------
    async def prove_group(jobs: list[_Job]) -> None:
        """Prove the jobs' stacked rows as one statement at the committed T that holds them, and publish the proof
        (with its scope) as every one of their answers; any failure fails every one of them, with the reason."""
        s = state()
        records = [job.record for job in jobs]

        def fail(exc: BaseException) -> None:
            for record in records:
                if record.status in ("pending", "running"):
                    record.status, record.reason = "failed", describe_failure(exc)
                    record.answer = record.status_message().model_dump_json().encode()
                    record.x_q = record.y_q = None
                    s.store.finish(record)

        try:
            served = contributor.modules[records[0].module]
            tokens = commitment.bucket(sum(r.tokens for r in records))
            statement = served.statement(tokens)
            x_q = np.zeros(statement.shape.x_shape, dtype=np.int64)
            y_q = np.zeros(statement.shape.y_shape, dtype=np.int64)
            scope_rows, start = [], 0
            for record in records:
                x_q[start:start + record.tokens] = record.x_q
                y_q[start:start + record.tokens] = record.y_q
                scope_rows.append(m.ScopeRows(call_id=record.call_id, start=start, tokens=record.tokens))
                start += record.tokens
                record.status = "running"
            scope = m.ProofScope(module=served.name, tokens=tokens, statement_id=statement.id, calls=scope_rows)
            q = served.quantised
            spec, tensors = job_request(kind="prove", backend=config.backend, options=config.backend_options,
                                        statement=statement, A_q=q.A_q, B_q=q.B_q, x_q=x_q)
            answer = json.loads(await run_on_prover(s.prover, spec, tensors, config.prove_timeout, on_timeout=fail))
            proof = m.ProofMessage.model_validate(answer["proof"])
            worker = m.WorkerInfo(kind=s.prover.kind, **answer["worker"])
            timings = {str(k)[:64]: float(v) for k, v in dict(answer.get("timings", {})).items()
                       if isinstance(v, (int, float)) and 0 <= v < 1e9}
            check_worker_answer(statement, x_q, y_q, proof, answer["public"], commitment.anchor(served.name, tokens))
            if proof.vk_hash not in s.keys:
                key = m.b64decode(proof.vk, "verifying key", MAX_PROOF_BYTES)
                if hashlib.sha256(key).hexdigest() != proof.vk_hash:
                    raise ValueError("the worker's verifying key does not match its hash")
                s.keys[proof.vk_hash] = key
            proof = proof.model_copy(update={"vk": ""})         # served once by its hash: GET /v1/keys/{vk_hash}
        except Exception as exc:  # noqa: BLE001 - the calls' proof failed: say why to whoever fetches them
            fail(exc)
            return
        for record in records:
            record.status, record.reason = "done", ""
            record.answer = m.CallStatus(call_id=record.call_id, module=record.module, tokens=record.tokens,
                                         status="done", reason="", proof=proof, scope=scope, worker=worker,
                                         timings=dict(list(timings.items())[:32])).model_dump_json().encode()
            record.x_q = record.y_q = None  # checked: only the answer is kept
            s.store.finish(record)

    @app.post("/v1/modules/{module}/calls", response_model=m.CallAccepted, responses=ERROR_RESPONSES,
              dependencies=auth, openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {
                      "schema": {"type": "string", "format": "binary"},
                      "description": "safetensors holding x_q: T × d_in (the module's d_in), 1 ≤ T ≤ max_tokens, I8 "
                                     "(I16 for activations wider than 8 bits); with per-token scales also x_scales: "
                                     "F64, T"}}}})
    async def call(module: str, request: Request) -> m.CallAccepted:
        s = state()
        owner = client_of(request.scope)
        served = served_module(module)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/octet-stream":
            raise ProtocolError(415, "unsupported_media_type", "the body must be application/octet-stream "
                                                               "(safetensors bytes)")
        session = request.headers.get(m.SESSION_HEADER)
        if session is not None and not re.fullmatch(m.SESSION_ID, session):
            raise ProtocolError(400, "bad_session", f"{m.SESSION_HEADER} must be 32 lowercase hex digits")
        body = await request.body()
        info = s.manifest.module(served.name)
        try:
            tensors = decode_tensors(body, info.x_specs(max_tokens=config.max_tokens))
        except TensorFormatError as exc:
            raise ProtocolError(400, "bad_tensors", f"x_q: {exc}") from None
        x_q, x_scales = tensors["x_q"].astype(np.int64), tensors.get("x_scales")
        width = IntRange(info.dequantisation.activation_bits)
        if not width.contains(x_q):
            raise ProtocolError(400, "bad_tensors", f"x_q: values must lie in {width}")
        if x_scales is not None and not (np.isfinite(x_scales).all() and (x_scales > 0).all()):
            raise ProtocolError(400, "bad_tensors", "x_scales: every token's scale must be a positive finite number")
        bucket_for(served, x_q.shape[0])
        if s.queue.load >= s.queue.max_queue:
            raise ProtocolError(429, "queue_full", f"{s.queue.load} calls queued or being proven (limit "
                                                   f"{s.queue.max_queue}); retry later", {"Retry-After": "1"})
        if s.store.pending(owner) >= config.max_queue_per_client:
            raise ProtocolError(429, "queue_full", f"{s.store.pending(owner)} of this client's proofs queued or "
                                                   f"running (limit {config.max_queue_per_client} per client); "
                                                   "retry later", {"Retry-After": "1"})
        _, y_q = served.evaluate(x_q)
        record = CallRecord(call_id=secrets.token_hex(16), module=served.name, tokens=x_q.shape[0], x_q=x_q, y_q=y_q)
        group = (owner, session, served.name) if session and config.batching else (record.call_id,)
        s.queue.submit(record, group)
        s.store.add(record, owner=owner)
        delta = served.quantised.dequantize(y_q, x_scales)
        payload = encode_tensors({"y_q": y_q.astype(np.int32), "delta": delta.astype(np.float64)})
        return m.CallAccepted(call_id=record.call_id, module=served.name, tokens=record.tokens, status="pending",
                              tensors=m.b64encode(payload))

    @app.get("/v1/calls/{call_id}", response_model=m.CallStatus, responses=ERROR_RESPONSES, dependencies=auth)
    async def call_status(request: Request, call_id: str = Path(pattern=m.CALL_ID),
                          wait: float = Query(0.0, ge=0.0, le=config.max_wait)):
        s = state()
        record = s.store.get(call_id, owner=client_of(request.scope))
        if record is None:
            raise ProtocolError(404, "unknown_call",
                                f"unknown call id (never issued to this client, or evicted: finished calls are kept "
                                f"{config.result_ttl:g} s, at most {config.max_results_per_client} calls and "
                                f"{config.max_result_bytes_per_client:,} bytes per client)")
        if wait and not record.done.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(record.done.wait(), timeout=wait)
        if record.answer is not None:
            return Response(record.answer, media_type="application/json")
        return record.status_message()

    @app.get("/v1/keys/{vk_hash}", responses=ERROR_RESPONSES | {200: {"content": {"application/octet-stream": {}},
                                                                       "description": "the verifying key's bytes"}},
             dependencies=auth)
    async def verifying_key(vk_hash: str = Path(pattern=r"^[0-9a-f]{64}$")):
        key = state().keys.get(vk_hash)
        if key is None:
            raise ProtocolError(404, "unknown_key", "no verifying key with this hash has been used yet (a proof names "
                                                    "its key once it is made; keys are the committed anchors')")
        return Response(key, media_type="application/octet-stream")

    app.add_middleware(Guard, router=app.router, tokens=config.tokens, limits=config.request_limits(contributor),
                       access_log=config.access_log)
    app.state.connection_limits = config.connection_limits()
    return app


def check_commitment(contributor: Contributor, config: ServerConfig, backend: Backend,
                     commitment: m.AdapterCommitment) -> None:
    """ValueError unless `commitment` is this contributor's: backend, base model, allowed T, and per module the
    statement and dequantisation it serves (anchors are checked against every proof before it is published)."""
    if commitment.backend != backend.name or commitment.base_model != contributor.base_model_info():
        raise ValueError("the adapter commitment is for another backend or base model")
    if tuple(commitment.tokens) != config.buckets():
        raise ValueError(f"the adapter commitment's T {commitment.tokens} differ from the server's "
                         f"{list(config.buckets())}")
    if [mod.name for mod in commitment.modules] != list(contributor.modules):
        raise ValueError("the adapter commitment's modules differ from those served")
    for mod in commitment.modules:
        served = contributor.modules[mod.name]
        if mod.statement != m.StatementTemplate.of(served.statement(1)) or \
                mod.dequantisation != m.DequantisationInfo.of(served.quantised.dequantisation):
            raise ValueError(f"the adapter commitment's statement or dequantisation of {mod.name} differs from the "
                             "one served")


def check_worker_answer(statement: LoRAStatement, x_q: np.ndarray, y_q: np.ndarray, proof_message: m.ProofMessage,
                        public_json: object, anchor: AdapterAnchor) -> None:
    """Before publishing a worker's proof: it is for this statement, its public values are exactly the rows the
    server received (x_q) and answered (y_q), padding included, and its verifying key is the committed anchor's (a
    node with another SRS or a stale cache would otherwise publish proofs no client can verify)."""
    proof = proof_message.proof()
    public = LoRAPublic.from_json(statement, public_json)
    if proof.statement_id != statement.id:
        raise ValueError(f"the worker proved statement {proof.statement_id}, not {statement.id}")
    if not np.array_equal(public.y_q, y_q):
        raise ValueError("the worker's y_q differs from the one answered (a bug)")
    if public.x_q is not None and not np.array_equal(public.x_q, x_q):
        raise ValueError("the worker's x_q differs from the one received (a bug)")
    if list(proof.instances) != encode_instances(statement, public):
        raise ValueError("the proof's instances are not the call's public values")
    if anchor.vk_hash != proof.vk_hash:
        raise ValueError("the proof's verifying key differs from the committed anchor's (workers must share the "
                         "SRS and circuit cache)")
