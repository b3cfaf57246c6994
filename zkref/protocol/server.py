"""The contributor's HTTP server (FastAPI on uvicorn): answers calls at once, proves them in the background.

Endpoints (specs/protocol.md; the schema is served at /openapi.json):

    GET  /healthz                               Health           (no auth)
    GET  /v1/manifest                           Manifest
    GET  /v1/modules/{module}/anchors/{tokens}  AnchorStatus     ?wait=S long-polls until computed
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
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from fastapi import Depends, FastAPI, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from backends import get_backend
from backends.base import Backend
from zkref.lora.statement import LoRAPublic, LoRAStatement, encode_instances
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
STATEMENT_IDS = ("A call of T tokens to module M is proven under the statement "
                 "LoRAStatement.from_canonical(M.statement with tokens = T) (zkref.lora.statement); its id is the "
                 "first 128 bits (32 hex digits) of SHA-256 over that statement's canonical JSON (sorted keys, no "
                 "spaces). Its adapter anchor is GET /v1/modules/{M}/anchors/{T}: clients pin it before their first "
                 "call.")


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
    spec: str
    tensors: bytes
    result: asyncio.Future
    on_start: Callable[[], None] | None = None


class ProvingQueue:
    """Jobs wait here (at most `max_queue`, queued + running), and at most `prover.workers` run at once.

    Jobs stay in this queue — not in the executor's — until a worker is free, so a later version can coalesce the
    queued calls of one module into one proof with T = Σ tokens (EZKL checks matrix products by Freivalds'
    random linear combination, which makes T > 1 several times cheaper per product). A job that exceeds
    `timeout` fails; its executor task is cancelled where the executor can (Ray), and its worker slot is freed only
    when the task really ends, so the executor is never oversubscribed.
    """

    def __init__(self, prover: Prover, *, max_queue: int, timeout: float):
        self.prover, self.max_queue, self.timeout = prover, max_queue, timeout
        self.pending: collections.deque[_Job] = collections.deque()
        self.running = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def load(self) -> int:
        return len(self.pending) + self.running

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self.pending:
            if not job.result.done():
                job.result.set_exception(RuntimeError("server shutting down"))
        self.pending.clear()

    def submit(self, spec: str, tensors: bytes, *, on_start: Callable[[], None] | None = None,
               priority: bool = False) -> asyncio.Future:
        """Queue a job; its future resolves to the job's JSON answer (or its failure). QueueFull when full."""
        if self.load >= self.max_queue:
            raise QueueFull()
        job = _Job(spec, tensors, asyncio.get_running_loop().create_future(), on_start)
        (self.pending.appendleft if priority else self.pending.append)(job)
        self._wake.set()
        return job.result

    async def _dispatch(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending and self.running < self.prover.workers:
                job = self.pending.popleft()
                self.running += 1
                asyncio.get_running_loop().create_task(self._execute(job))

    async def _execute(self, job: _Job) -> None:
        try:
            if job.on_start:
                job.on_start()
            try:
                future = self.prover.submit(job.spec, job.tensors)
            except Exception as exc:  # noqa: BLE001 - an executor that cannot take the job fails this job only
                job.result.set_exception(exc)
                return
            wrapped = asyncio.wrap_future(future)
            try:
                answer = await asyncio.wait_for(asyncio.shield(wrapped), timeout=self.timeout)
            except asyncio.TimeoutError:
                self.prover.cancel(future)
                job.result.set_exception(TimeoutError(f"proving exceeded {self.timeout:g} s"))
                if not future.cancelled():  # still running: its worker is busy until it ends
                    with contextlib.suppress(Exception):
                        await wrapped
                return
            except Exception as exc:  # noqa: BLE001 - the worker's failure is the job's failure
                job.result.set_exception(exc)
                return
            job.result.set_result(answer)
        finally:
            self.running -= 1
            self._wake.set()


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
    statement: LoRAStatement
    x_q: np.ndarray | None
    y_q: np.ndarray | None
    status: str = "pending"
    reason: str = ""
    answer: bytes | None = None
    """The finished call's CallStatus JSON (what the proof fetch returns); counted in the store's bytes."""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def status_message(self) -> m.CallStatus:
        return m.CallStatus(call_id=self.call_id, module=self.module, tokens=self.tokens,
                            statement_id=self.statement.id, status=self.status, reason=self.reason, proof=None,
                            worker=None, timings={})

    @property
    def size(self) -> int:
        return len(self.answer or b"")


@dataclass(eq=False)
class _AnchorEntry:
    status: str = "pending"
    anchor: m.AnchorInfo | None = None
    reason: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)


# ----------------------------------------------------------------------------------------------------------------------
# The application
# ----------------------------------------------------------------------------------------------------------------------

class ServerState:
    """Everything the handlers share; created inside the server's event loop (lifespan)."""

    def __init__(self, contributor: Contributor, config: ServerConfig, prover: Prover, backend: Backend):
        self.contributor, self.config, self.prover, self.backend = contributor, config, prover, backend
        self.queue = ProvingQueue(prover, max_queue=config.max_queue, timeout=config.prove_timeout)
        self.store = CallStore(ttl=config.result_ttl, max_results=config.max_results,
                               max_bytes=config.max_result_bytes, max_results_per_client=config.max_results_per_client,
                               max_bytes_per_client=config.max_result_bytes_per_client)
        self.anchors: dict[tuple[str, int], _AnchorEntry] = {}
        self.tasks: set[asyncio.Task] = set()
        self.manifest = build_manifest(contributor, config, prover, backend)

    def spawn(self, coro: Awaitable) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def build_manifest(contributor: Contributor, config: ServerConfig, prover: Prover, backend: Backend) -> m.Manifest:
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
    return m.Manifest(format=m.FORMAT,
                      backend=m.BackendInfo(name=backend.name, zero_knowledge=backend.zero_knowledge,
                                            note=BACKEND_NOTES.get(backend.name, "")),
                      base_model=contributor.base_model_info(), calibration=contributor.calibration_info(),
                      statement_ids=STATEMENT_IDS, modules=[s.info() for s in contributor.modules.values()],
                      limits=limits, prover=m.ProverInfo(kind=prover.kind, workers=prover.workers),
                      auth="bearer" if config.tokens else "none")


ERROR_RESPONSES = {code: {"model": m.ErrorResponse, "description": text} for code, text in (
    (400, "malformed request (tensor bytes, Content-Length)"), (401, "missing or wrong bearer token"),
    (404, "unknown module or call id (or an evicted call, or another client's)"),
    (408, "request head or body not received in time"),
    (413, "body too large (or a body sent to an endpoint that takes none)"),
    (415, "body is not application/octet-stream"),
    (422, "parameters out of range, or a statement the backend cannot prove"),
    (429, "too many requests in progress (overall or of this client), or the proving queue (or this client's share) "
          "is full"))}


def create_app(contributor: Contributor, config: ServerConfig, prover: Prover):
    """The FastAPI application serving `contributor`, proving with `prover` (which the caller owns and shuts down)."""
    backend = get_backend(config.backend, **config.backend_options)
    if not contributor.modules:
        raise ValueError("the contributor serves no modules")
    for served in contributor.modules.values():
        support = backend.supports(served.statement(1))
        if not support:
            raise ValueError(f"backend {backend.name} cannot prove module {served.name}: {support.reason}")
    holder: dict[str, ServerState] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        state = ServerState(contributor, config, prover, backend)
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

    def statement_for(served: ServedModule, tokens: int) -> LoRAStatement:
        statement = served.statement(tokens)
        support = state().backend.supports(statement)
        if not support:
            raise ProtocolError(422, "unsupported_statement",
                                f"backend {backend.name} cannot prove {served.name} for {tokens} tokens: "
                                f"{support.reason}")
        return statement

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

    # -- anchors ------------------------------------------------------------------------------------------------
    async def compute_anchor(key: tuple[str, int], entry: _AnchorEntry, served: ServedModule,
                             statement: LoRAStatement) -> None:
        s = state()
        q = served.quantised
        spec, tensors = job_request(kind="anchor", backend=config.backend, options=config.backend_options,
                                    statement=statement, A_q=q.A_q, B_q=q.B_q, x_q=None)
        try:
            answer = json.loads(await s.queue.submit(spec, tensors, priority=True))
            info = m.AnchorInfo.model_validate(answer["anchor"])
            if info.statement_id != statement.id or info.backend != backend.name:
                raise ValueError("the worker's anchor is for another statement or backend")
            entry.anchor, entry.status = info, "done"
        except QueueFull:
            entry.status, entry.reason = "failed", "the proving queue is full; retry later"
            s.anchors.pop(key, None)
        except Exception as exc:  # noqa: BLE001 - recorded; a later request recomputes
            entry.status, entry.reason = "failed", describe_failure(exc)
            s.anchors.pop(key, None)
        finally:
            entry.done.set()

    @app.get("/v1/modules/{module}/anchors/{tokens}", response_model=m.AnchorStatus, responses=ERROR_RESPONSES,
             dependencies=auth)
    async def anchor(module: str, tokens: int = Path(ge=1, le=config.max_tokens),
                     wait: float = Query(0.0, ge=0.0, le=config.max_wait)) -> m.AnchorStatus:
        s = state()
        served = served_module(module)
        statement = statement_for(served, tokens)
        key = (served.name, tokens)
        entry = s.anchors.get(key)
        if entry is None:
            if s.queue.load >= s.queue.max_queue:
                raise ProtocolError(429, "queue_full", "the proving queue is full; retry later", {"Retry-After": "1"})
            entry = s.anchors[key] = _AnchorEntry()
            s.spawn(compute_anchor(key, entry, served, statement))
        if wait and not entry.done.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(entry.done.wait(), timeout=wait)
        return m.AnchorStatus(module=served.name, tokens=tokens, statement_id=statement.id, status=entry.status,
                              anchor=entry.anchor, reason=entry.reason)

    # -- calls --------------------------------------------------------------------------------------------------
    async def prove_call(record: CallRecord, served: ServedModule, result: asyncio.Future) -> None:
        s = state()
        try:
            answer = json.loads(await result)
            proof = m.ProofMessage.model_validate(answer["proof"])
            worker = m.WorkerInfo(kind=s.prover.kind, **answer["worker"])
            timings = {str(k)[:64]: float(v) for k, v in dict(answer.get("timings", {})).items()
                       if isinstance(v, (int, float)) and 0 <= v < 1e9}
            check_worker_answer(record, proof, answer["public"], s.anchors.get((record.module, record.tokens)))
            record.status, record.reason = "done", ""
            record.answer = m.CallStatus(call_id=record.call_id, module=record.module, tokens=record.tokens,
                                         statement_id=record.statement.id, status="done", reason="", proof=proof,
                                         worker=worker, timings=dict(list(timings.items())[:32])
                                         ).model_dump_json().encode()
        except Exception as exc:  # noqa: BLE001 - the call's proof failed: say why to whoever fetches it
            record.status, record.reason = "failed", describe_failure(exc)
            record.answer = record.status_message().model_dump_json().encode()
        record.x_q = record.y_q = None  # checked: only the answer is kept
        s.store.finish(record)

    @app.post("/v1/modules/{module}/calls", response_model=m.CallAccepted, responses=ERROR_RESPONSES,
              dependencies=auth, openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {
                      "schema": {"type": "string", "format": "binary"},
                      "description": "safetensors holding exactly one tensor x_q: int8, T × d_in (the module's d_in), "
                                     "1 ≤ T ≤ max_tokens"}}}})
    async def call(module: str, request: Request) -> m.CallAccepted:
        s = state()
        owner = client_of(request.scope)
        served = served_module(module)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/octet-stream":
            raise ProtocolError(415, "unsupported_media_type", "the body must be application/octet-stream "
                                                               "(safetensors bytes)")
        body = await request.body()
        info = s.manifest.module(served.name)
        try:
            x_q = decode_tensors(body, {"x_q": info.x_spec(config.max_tokens)})["x_q"].astype(np.int64)
        except TensorFormatError as exc:
            raise ProtocolError(400, "bad_tensors", f"x_q: {exc}") from None
        statement = statement_for(served, x_q.shape[0])
        if s.queue.load >= s.queue.max_queue:
            raise ProtocolError(429, "queue_full", f"{s.queue.load} proofs queued or running (limit "
                                                   f"{s.queue.max_queue}); retry later", {"Retry-After": "1"})
        if s.store.pending(owner) >= config.max_queue_per_client:
            raise ProtocolError(429, "queue_full", f"{s.store.pending(owner)} of this client's proofs queued or "
                                                   f"running (limit {config.max_queue_per_client} per client); "
                                                   "retry later", {"Retry-After": "1"})
        _, y_q = served.evaluate(x_q)
        q = served.quantised
        spec, tensors = job_request(kind="prove", backend=config.backend, options=config.backend_options,
                                    statement=statement, A_q=q.A_q, B_q=q.B_q, x_q=x_q)
        record = CallRecord(call_id=secrets.token_hex(16), module=served.name, tokens=x_q.shape[0],
                            statement=statement, x_q=x_q, y_q=y_q)

        def started() -> None:
            if record.status == "pending":
                record.status = "running"

        result = s.queue.submit(spec, tensors, on_start=started)
        s.store.add(record, owner=owner)
        s.spawn(prove_call(record, served, result))
        delta = q.dequantize(y_q)
        payload = encode_tensors({"y_q": y_q.astype(np.int32), "delta": delta.astype(np.float64)})
        return m.CallAccepted(call_id=record.call_id, module=served.name, tokens=record.tokens,
                              statement_id=statement.id, status="pending", tensors=m.b64encode(payload))

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

    app.add_middleware(Guard, router=app.router, tokens=config.tokens, limits=config.request_limits(contributor),
                       access_log=config.access_log)
    app.state.connection_limits = config.connection_limits()
    return app


def check_worker_answer(record: CallRecord, proof_message: m.ProofMessage, public_json: object,
                        anchor: _AnchorEntry | None) -> None:
    """Before publishing a worker's proof: it is for this call's statement, its public values are exactly what the
    server answered (x_q received, y_q returned), and its verifying key is the published anchor's (a node with
    another SRS or a stale cache would otherwise publish proofs no client can verify)."""
    statement = record.statement
    proof = proof_message.proof()
    public = LoRAPublic.from_json(statement, public_json)
    if proof.statement_id != statement.id:
        raise ValueError(f"the worker proved statement {proof.statement_id}, not {statement.id}")
    if not np.array_equal(public.y_q, record.y_q):
        raise ValueError("the worker's y_q differs from the one answered (a bug)")
    if public.x_q is not None and not np.array_equal(public.x_q, record.x_q):
        raise ValueError("the worker's x_q differs from the one received (a bug)")
    if list(proof.instances) != encode_instances(statement, public):
        raise ValueError("the proof's instances are not the call's public values")
    if anchor is not None and anchor.anchor is not None and anchor.anchor.vk_hash is not None \
            and anchor.anchor.vk_hash != proof.vk_hash:
        raise ValueError("the proof's verifying key differs from the published anchor's (workers must share the "
                         "SRS and circuit cache)")
