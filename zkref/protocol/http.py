"""The contributor server's connection and HTTP layer: everything between a TCP socket and the application's handlers.

Two layers, each bounding what a hostile peer can hold (specs/protocol.md, "Bounds and errors"):

- `GuardedH11Protocol`, uvicorn's h11 protocol with connection-level bounds: at most `max_connections` open
  connections, `max_connections_per_ip` from one address (beyond them a new connection is closed at once, before any
  byte is parsed); a request head must be complete within `header_timeout` seconds of the connection opening or of
  the previous answer (408, or a silent close when nothing was sent); an idle keep-alive connection is closed after
  `keep_alive_timeout`; a request not answered within `exchange_timeout` loses its connection (a peer that never
  reads its answer cannot hold a request slot); a connection closed while its peer is still sending a body the server
  will not read lingers (half-closed, the rest discarded, LINGER_BYTES / LINGER_SECONDS at most) so that the peer
  reads the answer instead of a reset.
- `Guard`, ASGI middleware, in this order and before any body byte is read: bearer token on /v1/* (401); routing —
  only a route that takes a body (the one POST route) reads one, any other request declaring a body is answered at
  once (404, 405, 413); Content-Length (400, 413); a request slot, overall and per client (429); then the body, with
  the size bound (413) and a deadline that grows with its declared size at `body_min_rate` plus an inactivity
  timeout between chunks (408). It names the request's client — its bearer token's label, or its peer address — in
  the ASGI scope (`client_of`), and writes the access log.

Every log line a peer can trigger goes through a `LogThrottle`: a flood costs a few lines and a count, not disk.
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import resource
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import h11
from starlette.routing import Match
from uvicorn.protocols.http.h11_impl import H11Protocol

from zkref.protocol import messages as m

CLIENT_KEY = "zkref.client"
"""ASGI scope key under which `Guard` stores the request's client label (see `client_of`)."""
LINGER_SECONDS = 2.0
"""How long a connection closed with an unread request body keeps discarding what its peer still sends."""
LINGER_BYTES = 4 << 20
"""At most this much of an unread body is discarded while lingering; beyond it the connection is reset."""
FD_HEADROOM = 2
"""The open-file limit must be at least this many times `max_connections` (the rest: models, workers, logs)."""
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""A route whose methods include one of these takes a request body; no other route reads one."""
ACCESS_LOG_RATE, ACCESS_LOG_BURST = 50.0, 200
"""The access log writes at most ACCESS_LOG_BURST lines at once and ACCESS_LOG_RATE per second after that."""

access_logger = logging.getLogger("zkref.access")
"""One line per request (`Guard`, when its access log is on): client, method, path, status, milliseconds."""
http_logger = logging.getLogger("zkref.http")
"""Connection-level events a peer can cause: refused or timed-out connections, parser errors, event-loop errors."""


def error_bytes(status: int, code: str, message: str) -> bytes:
    """An `ErrorResponse` body."""
    body = m.ErrorResponse(error=m.ErrorBody(status=status, code=code, message=message[:m.MAX_REASON]))
    return body.model_dump_json().encode()


def client_of(scope) -> str:
    """The client that sent this request, as `Guard` named it: "token N" (its bearer token's position in the
    server's token list, counted from 1) on /v1/* when tokens are configured, else its peer IP address."""
    return scope.get(CLIENT_KEY) or peer_address(scope)


def peer_address(scope) -> str:
    peer = scope.get("client")
    return str(peer[0]) if peer else "unknown"


def printable_path(scope, limit: int = 160) -> str:
    """The request path for a log line: the raw (percent-encoded) path, no query string, at most `limit`
    characters, anything unprintable escaped (a peer cannot forge log lines)."""
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "backslashreplace")
    text = raw.decode("ascii", "backslashreplace")
    text = "".join(c if c.isprintable() and c != " " else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= limit else text[:limit] + "…"


# ----------------------------------------------------------------------------------------------------------------------
# Rate-limited logging
# ----------------------------------------------------------------------------------------------------------------------

class LogThrottle:
    """A token bucket in front of a logger: at most `burst` lines at once and `rate` lines per second after that.
    Lines over the budget are counted, and the next line that passes says how many were suppressed. Used from the
    event loop's thread only."""

    def __init__(self, logger: logging.Logger, *, rate: float, burst: int):
        if rate <= 0 or burst < 1:
            raise ValueError("a log throttle needs rate > 0 and burst ≥ 1")
        self.logger, self.rate, self.burst = logger, rate, burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self.suppressed = 0
        """Lines suppressed since the last line that passed."""
        self.suppressed_total = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        self.suppressed_total += 1
        return False

    def log(self, level: int, msg: str, *args, **kwargs) -> None:
        if not self.logger.isEnabledFor(level) or not self.allow():
            return
        if self.suppressed:
            msg = f"{msg} [{self.suppressed:,} similar line(s) suppressed before this one]"
            self.suppressed = 0
        self.logger.log(level, msg, *args, **kwargs)

    def loop_exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """For `loop.set_exception_handler`: one line, without traceback, per event-loop error that passes the
        bucket (accept() out of file descriptors, a transport failing, …) instead of a traceback per occurrence."""
        exc = context.get("exception")
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        self.log(logging.ERROR, "event loop: %s%s", context.get("message", "error"), detail)


class _ThrottledLogger:
    """What uvicorn's protocol and request cycle log through (its `logger` attribute): every level goes through one
    `LogThrottle`; `level` is read by uvicorn for its trace checks."""

    def __init__(self, logger: logging.Logger, throttle: LogThrottle):
        self._logger, self._throttle = logger, throttle

    @property
    def level(self) -> int:
        return self._logger.level

    def log(self, level: int, msg: str, *args, **kwargs) -> None:
        self._throttle.log(level, msg, *args, **kwargs)

    def debug(self, msg: str, *args, **kwargs) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: str, *args, **kwargs) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: str, *args, **kwargs) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: str, *args, **kwargs) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Bounds
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    """Connection-level bounds, enforced by `GuardedH11Protocol` (see the module docstring)."""

    max_connections: int = 1024
    max_connections_per_ip: int = 128
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    exchange_timeout: float = 120.0
    max_head_bytes: int = 16 << 10
    """h11 refuses a request head still incomplete with this many bytes buffered (400)."""

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_ip", "max_head_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("header_timeout", "keep_alive_timeout", "exchange_timeout"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 < v < 1e6:
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")


@dataclass(frozen=True, kw_only=True)
class RequestLimits:
    """Request-level bounds, enforced by `Guard` (see the module docstring)."""

    max_body: int
    max_concurrent: int
    max_concurrent_per_client: int
    body_timeout: float
    """No body takes longer than this, whatever its size."""
    body_min_rate: int
    """Bytes per second a body must arrive at, on average, after `body_grace`."""
    body_grace: float
    body_idle_timeout: float
    """Longest silence between two parts of a body."""

    def body_deadline(self, declared: int | None) -> float:
        """Seconds allowed for a body of `declared` bytes (None: chunked, up to `max_body`):
        min(body_timeout, body_grace + size / body_min_rate)."""
        size = self.max_body if declared is None else declared
        return min(self.body_timeout, self.body_grace + size / self.body_min_rate)


# ----------------------------------------------------------------------------------------------------------------------
# Guard: auth, routing, request slots and the body, before the application sees a request
# ----------------------------------------------------------------------------------------------------------------------

def token_index(authorization: Sequence[bytes], tokens: Sequence[str]) -> int | None:
    """Which of `tokens` the request's single `Authorization: Bearer …` header carries (None: none, or not exactly one
    such header). Every token is compared, in constant time, whichever matches."""
    if len(authorization) != 1:
        return None
    found = None
    for i, token in enumerate(tokens):
        if hmac.compare_digest(authorization[0], b"Bearer " + token.encode()):
            found = i
    return found


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Guard:
    """ASGI middleware enforcing the request-level bounds in the order of the module docstring; refusals are
    answered at once with an `ErrorResponse` and `Connection: close`."""

    def __init__(self, app, *, router, tokens: Sequence[str], limits: RequestLimits, access_log: bool = False):
        """router: the application's router (to tell, before reading anything, whether the request's route exists
        and takes a body); tokens: the accepted bearer tokens (empty: no auth, clients are peer addresses)."""
        self.app, self.router, self.tokens, self.limits = app, router, tuple(tokens), limits
        self.active = 0
        self.active_by_client: dict[str, int] = {}
        self.access = (LogThrottle(access_logger, rate=ACCESS_LOG_RATE, burst=ACCESS_LOG_BURST) if access_log
                       else None)

    # -- the decisions, in order ---------------------------------------------------------------------------------------
    def _client(self, scope, headers) -> str:
        if not self.tokens or not scope["path"].startswith("/v1/"):
            return peer_address(scope)
        index = token_index([v for k, v in headers if k == b"authorization"], self.tokens)
        if index is None:
            raise _Refusal(401, "unauthorized", "a valid bearer token is required",
                           {"WWW-Authenticate": 'Bearer realm="zkref"'})
        return f"token {index + 1}"

    def _route(self, scope) -> str:
        """'body' (the route exists for this method and takes a body), 'no_body', 'method' (the path exists for
        other methods) or 'none'."""
        partial = False
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                methods = getattr(route, "methods", None) or set()
                return "body" if methods & BODY_METHODS else "no_body"
            partial = partial or match is Match.PARTIAL
        return "method" if partial else "none"

    def _declared(self, scope, headers) -> tuple[bool, int | None]:
        """(has a body, its Content-Length: None when chunked)."""
        lengths = [v for k, v in headers if k == b"content-length"]
        chunked = any(k == b"transfer-encoding" for k, _ in headers)
        if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
            raise _Refusal(400, "bad_content_length", "Content-Length must be one integer")
        declared = int(lengths[0]) if lengths else None
        return chunked or bool(declared), declared

    def _take_slot(self, client: str) -> None:
        lim = self.limits
        if self.active >= lim.max_concurrent:
            raise _Refusal(429, "too_many_requests", f"{self.active} requests in progress (limit "
                                                     f"{lim.max_concurrent}); retry later", {"Retry-After": "1"})
        mine = self.active_by_client.get(client, 0)
        if mine >= lim.max_concurrent_per_client:
            raise _Refusal(429, "too_many_requests", f"{mine} requests of this client in progress (limit "
                                                     f"{lim.max_concurrent_per_client} per client); retry later",
                           {"Retry-After": "1"})
        self.active += 1
        self.active_by_client[client] = mine + 1

    def _release_slot(self, client: str) -> None:
        self.active -= 1
        left = self.active_by_client[client] - 1
        if left:
            self.active_by_client[client] = left
        else:
            del self.active_by_client[client]

    async def _read_body(self, receive, declared: int | None) -> bytes | None:
        """The whole body within its deadline and size bound (None: the client disconnected)."""
        lim = self.limits
        allowed = lim.body_deadline(declared)
        deadline = time.monotonic() + allowed
        chunks, size = [], 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Refusal(408, "request_timeout", f"body not received within {allowed:.3g} s (at least "
                                                       f"{lim.body_min_rate:,} bytes/s after {lim.body_grace:g} s)")
            try:
                message = await asyncio.wait_for(receive(), timeout=min(remaining, lim.body_idle_timeout))
            except asyncio.TimeoutError:
                if deadline - time.monotonic() > 0:
                    raise _Refusal(408, "request_timeout", f"no body bytes for {lim.body_idle_timeout:g} s") \
                        from None
                continue
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > lim.max_body:
                raise _Refusal(413, "body_too_large", f"body exceeds {lim.max_body:,} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # -- ASGI ----------------------------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 0

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        client = peer_address(scope)
        try:
            await self._guarded(scope, receive, send_and_note)
        except _Refusal as refusal:
            await self._refuse(send_and_note, refusal)
        finally:
            if self.access is not None:
                ms = (time.perf_counter() - started) * 1e3
                self.access.log(logging.INFO, "%s %s %s %s %.1f ms", scope.get(CLIENT_KEY) or client,
                                scope["method"][:16], printable_path(scope), status or "-", ms)

    async def _guarded(self, scope, receive, send) -> None:
        headers = scope.get("headers") or []
        client = self._client(scope, headers)
        scope[CLIENT_KEY] = client
        has_body, declared = self._declared(scope, headers)
        route = self._route(scope) if has_body else None
        if has_body and route != "body":
            if route == "none":
                raise _Refusal(404, "not_found", "Not Found")
            if route == "method":
                raise _Refusal(405, "method_not_allowed", "Method Not Allowed")
            raise _Refusal(413, "body_too_large", f"{scope['method'][:16]} {printable_path(scope, 80)} takes no "
                                                  "body")
        if declared is not None and declared > self.limits.max_body:
            raise _Refusal(413, "body_too_large", f"body of {declared:,} bytes exceeds {self.limits.max_body:,}")
        self._take_slot(client)
        try:
            body = await self._read_body(receive, declared) if has_body else await self._no_body(receive)
            if body is not None:
                await self._run_app(scope, receive, send, body)
        finally:
            self._release_slot(client)

    @staticmethod
    async def _no_body(receive) -> bytes | None:
        """The (empty) request message of a request without a body: h11 ends such a message with its head."""
        message = await receive()
        return None if message["type"] == "http.disconnect" else b""

    async def _run_app(self, scope, receive, send, body: bytes) -> None:
        """Run the application on the body read; if the client disconnects before the answer is complete (a long poll
        given up, a connection dropped for exceeding its exchange timeout), cancel it, which frees its slot at once."""
        gone = asyncio.Event()
        answered = False
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send_noting_end(message):
            nonlocal answered
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        app = asyncio.ensure_future(self.app(scope, replay, send_noting_end))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({app, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not app.done() and not answered:
                app.cancel()
            try:
                await app
            except asyncio.CancelledError:
                if not gone.is_set():
                    raise  # this request itself is being cancelled (server shutdown), not just its handler
        finally:
            watcher.cancel()
            if not app.done():
                app.cancel()

    @staticmethod
    async def _refuse(send, refusal: _Refusal) -> None:
        body = error_bytes(refusal.status, refusal.code, refusal.message)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
        raw += [(k.lower().encode(), v.encode()) for k, v in refusal.headers.items()]
        await send({"type": "http.response.start", "status": refusal.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------------------------------------------------
# The connection layer: uvicorn's h11 protocol with connection-level bounds
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(eq=False)
class ConnectionTracker:
    """What every connection of one server shares: open connections per peer address, counters, the log throttle."""

    limits: ConnectionLimits
    per_ip: dict[str, int] = field(default_factory=dict)
    open: int = 0
    """Connections open now (refused ones excluded)."""
    refused: int = 0
    """Connections closed at once: over `max_connections` or `max_connections_per_ip`."""
    head_timeouts: int = 0
    idle_closes: int = 0
    """Connections closed by the head timer before their first byte."""
    exchange_timeouts: int = 0
    lingered: int = 0
    log: LogThrottle = field(default_factory=lambda: LogThrottle(http_logger, rate=0.2, burst=5))
    """Connection-level lines: five at once, then one per five seconds."""


class _Transport:
    """The transport as uvicorn's protocol sees it: `close()` goes through `GuardedH11Protocol`, which may linger; a
    lingering connection is closing as far as uvicorn is concerned."""

    __slots__ = ("_raw", "_protocol")

    def __init__(self, raw: asyncio.Transport, protocol: "GuardedH11Protocol"):
        self._raw, self._protocol = raw, protocol

    def close(self) -> None:
        self._protocol._close_transport()

    def is_closing(self) -> bool:
        return self._raw.is_closing() or self._protocol._lingering

    def __getattr__(self, name):
        return getattr(self._raw, name)


TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
               b"content-length: %d\r\n\r\n%s")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the connection-level bounds of the module docstring; created by uvicorn through
    `uvicorn_server` (one `ConnectionTracker` per server)."""

    def __init__(self, config, server_state, app_state, _loop=None, *, tracker: ConnectionTracker):
        super().__init__(config, server_state, app_state, _loop)
        self.tracker, self.limits = tracker, tracker.limits
        self.logger = _ThrottledLogger(self.logger, tracker.log)
        self._raw: asyncio.Transport | None = None
        self._ip = ""
        self._refused = False
        self._lingering = False
        self._linger_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._exchange_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._seen_cycle = None

    # -- open and close ------------------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self._raw = transport
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if peer else "unknown"
        t, lim = self.tracker, self.limits
        if t.open >= lim.max_connections or t.per_ip.get(self._ip, 0) >= lim.max_connections_per_ip:
            self._refused = True
            self.transport = transport
            t.refused += 1
            t.log.log(logging.WARNING, "connection from %s closed at once: %d connections open (limit %d, %d per "
                                       "address); %s refused so far", self._ip, t.open, lim.max_connections,
                      lim.max_connections_per_ip, f"{t.refused:,}")
            transport.close()
            return
        t.per_ip[self._ip] = t.per_ip.get(self._ip, 0) + 1
        t.open += 1
        super().connection_made(_Transport(transport, self))
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        if self._refused:
            return
        t = self.tracker
        t.open -= 1
        left = t.per_ip.get(self._ip, 1) - 1
        if left > 0:
            t.per_ip[self._ip] = left
        else:
            t.per_ip.pop(self._ip, None)
        for timer in (self._head_timer, self._exchange_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._exchange_timer = self._linger_timer = None
        super().connection_lost(exc)

    def _close_transport(self) -> None:
        """uvicorn closing the connection. If the peer is still sending a request body nobody will read (an answer
        sent before the body, e.g. a refusal), half-close instead and discard what still arrives for a while: a
        socket closed with unread data is reset, and the peer would lose the answer."""
        raw = self._raw
        if raw.is_closing() or self._lingering:
            return
        if self.conn.their_state is not h11.SEND_BODY:
            raw.close()
            return
        self._cancel_exchange_timer()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        try:
            if raw.can_write_eof():
                raw.write_eof()
            raw.resume_reading()
        except OSError:  # the peer is already gone (e.g. it reset the connection): nothing to linger for
            raw.abort()
            return
        self._lingering = True
        self.tracker.lingered += 1
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, raw.abort)

    def shutdown(self) -> None:
        if self._lingering:
            self._raw.abort()
            return
        super().shutdown()

    # -- data ----------------------------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._linger_bytes += len(data)
            if self._linger_bytes > LINGER_BYTES:
                self._raw.abort()
            return
        if self._head_timer is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        self._note_head()

    def eof_received(self) -> bool | None:
        if self._lingering:
            self._raw.close()
            return True
        return super().eof_received()

    def on_response_complete(self) -> None:
        self._cancel_exchange_timer()
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()
            self._note_head()  # a pipelined request may have been taken up already

    # -- timers --------------------------------------------------------------------------------------------------------
    def _note_head(self) -> None:
        """A new request cycle means a complete request head: stop its timer, start the exchange's."""
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self._cancel_exchange_timer()
            self._exchange_timer = self.loop.call_later(self.limits.exchange_timeout, self._exchange_expired)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_expired)

    def _cancel_exchange_timer(self) -> None:
        if self._exchange_timer is not None:
            self._exchange_timer.cancel()
            self._exchange_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        raw = self._raw
        if raw.is_closing():
            return
        t = self.tracker
        if self._head_bytes:
            t.head_timeouts += 1
            t.log.log(logging.WARNING, "connection from %s closed: request head not complete within %g s (%s so "
                                       "far)", self._ip, self.limits.header_timeout, f"{t.head_timeouts:,}")
            body = error_bytes(408, "request_timeout", f"request head not received within "
                                                       f"{self.limits.header_timeout:g} s")
            raw.write(TIMEOUT_408 % (len(body), body))
        else:
            t.idle_closes += 1
        raw.close()

    def _exchange_expired(self) -> None:
        """The request was not answered in time (a peer not reading its answer, or a stuck handler): drop the
        connection; uvicorn then ends the request's task, which frees its request slot."""
        self._exchange_timer = None
        t = self.tracker
        t.exchange_timeouts += 1
        t.log.log(logging.WARNING, "connection from %s dropped: request not answered within %g s (%s so far)",
                  self._ip, self.limits.exchange_timeout, f"{t.exchange_timeouts:,}")
        self._raw.abort()


# ----------------------------------------------------------------------------------------------------------------------
# Running it
# ----------------------------------------------------------------------------------------------------------------------

def ensure_fd_headroom(max_connections: int) -> int:
    """Make sure the process may open FD_HEADROOM × `max_connections` files: raise the soft RLIMIT_NOFILE (up to
    the hard limit) if needed; ValueError if even the hard limit is too low. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = FD_HEADROOM * max_connections
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise ValueError(f"max_connections {max_connections} needs an open-file limit of at least {needed}; it is "
                         f"{soft} (hard {hard}): lower max_connections or raise the limit (ulimit -n)")
    return soft


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: a free port), so the caller knows the address before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; without it Nagle's algorithm and delayed ACKs
    # add ~40 ms to every answer written in two parts (headers, body)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


def uvicorn_server(app, *, limits: ConnectionLimits | None = None):
    """A uvicorn server for `app` on `GuardedH11Protocol`, with throttled event-loop error logging. `limits` default to
    the ones `create_app` attached to the app (`app.state.connection_limits`), else `ConnectionLimits()`."""
    import uvicorn

    if limits is None:
        limits = getattr(getattr(app, "state", None), "connection_limits", None) or ConnectionLimits()
    ensure_fd_headroom(limits.max_connections)
    tracker = ConnectionTracker(limits)
    protocol = functools.partial(GuardedH11Protocol, tracker=tracker)
    # ws="none": no WebSocket upgrade path that would bypass these bounds
    config = uvicorn.Config(app, http=protocol, ws="none", log_level="warning",
                            timeout_keep_alive=limits.keep_alive_timeout, lifespan="on",
                            h11_max_incomplete_event_size=limits.max_head_bytes, access_log=False)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            asyncio.get_running_loop().set_exception_handler(tracker.log.loop_exception_handler)
            await super().startup(sockets=sockets)

    server = Server(config)
    server.tracker = tracker
    return server


class ServerThread:
    """Serve an app from a background thread on `host:port` (0: a free port): for tests, the demo and notebooks.

    `start()` returns the base URL once uvicorn accepts connections; `stop()` shuts it down, and `prover` if given."""

    def __init__(self, app, *, host: str = "127.0.0.1", port: int = 0, prover=None):
        self.app, self.host, self.port, self.prover = app, host, port, prover
        self.server = None
        self.thread: threading.Thread | None = None
        self.url = ""

    @property
    def tracker(self) -> ConnectionTracker:
        """The connection counters of the running server."""
        return self.server.tracker

    def start(self, timeout: float = 60.0) -> str:
        self.server = uvicorn_server(self.app)
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name=f"zkref-serve-{self.port}")
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        return self.url

    def stop(self, timeout: float = 30.0) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
        if self.prover is not None:
            self.prover.shutdown()

    def __enter__(self) -> "ServerThread":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

