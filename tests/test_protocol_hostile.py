"""The contributor server under hostile load (issue 14): each denial-of-service hole an adversarial review found, shown
closed. Raw sockets for slow and incomplete requests, httpx for the rest; real localhost servers (ServerThread) with
the zkref mock backend. The soak (benchmarks/soak.py) runs all of it at once, at volume, against `zkref serve`.

1. Slow bodies before auth: a request is authenticated and routed before any body byte is read or any request slot
   is taken; only the call route reads a body, against a deadline that grows with its size and an inactivity timeout.
2. Incomplete request heads time out; open connections are capped overall and per address; event-loop error logging
   is throttled; the open-file limit is checked (and raised) for the connection cap.
3. One client cannot evict another's finished proofs, see its calls, or take the whole proving queue.
4. The access log: one line per request, no secrets, rate-limited, off by default in library use.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_protocol_e2e import GPT2_LORA, GatedProver, status_of
from zkref.cli.main import main
from zkref.models.tiny_model import build_tiny_gpt2, save_random_lora
from zkref.protocol import messages as m
from zkref.protocol.contributor import load_contributor
from zkref.protocol.http import ConnectionLimits, LogThrottle, access_logger, http_logger
from zkref.protocol.provers import ProcessProver
from zkref.protocol.server import ServerConfig, ServerThread, create_app
from zkref.protocol.store import CallStore
from zkref.protocol.tensors import encode_tensors

MODULE = "transformer.h.0.attn.c_attn"
CALLS = f"/v1/modules/{MODULE}/calls"
TOKEN_A, TOKEN_B, TOKEN_C = "alice-token-0001", "bob-token-00002", "carol-token-003"
OCTET = {"content-type": "application/octet-stream"}
OTHER_ADDRESS = "127.0.0.2"
"""Linux routes all of 127.0.0.0/8 to the loopback: a second client address without any setup."""


@pytest.fixture(scope="module")
def contributor(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    base = build_tiny_gpt2(root / "base", seed=0)
    adapter = save_random_lora(base, root / "adapter", seed=1, **GPT2_LORA)
    return load_contributor(base_dir=base, adapter_dir=adapter)


def serve(contributor, *, prover=None, exchange_timeout: float | None = None, **config) -> ServerThread:
    prover = prover or ProcessProver(workers=1)
    app = create_app(contributor, ServerConfig(backend="zkref", **config), prover)
    if exchange_timeout is not None:  # derived from request_timeout + max_wait + a minute otherwise: too long here
        limits = app.state.connection_limits
        app.state.connection_limits = ConnectionLimits(
            max_connections=limits.max_connections, max_connections_per_ip=limits.max_connections_per_ip,
            header_timeout=limits.header_timeout, keep_alive_timeout=limits.keep_alive_timeout,
            exchange_timeout=exchange_timeout)
    server = ServerThread(app, prover=prover)
    server.start()
    return server


def http(server: ServerThread, token: str | None = None, source: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    transport = httpx.HTTPTransport(local_address=source) if source else None
    return httpx.Client(base_url=server.url, headers=headers, transport=transport, timeout=30)


def x_body(tokens: int = 1) -> bytes:
    return encode_tensors({"x_q": np.ones((tokens, 64), np.int8)})


def connect(server: ServerThread, data: bytes = b"", *, source: str | None = None,
            timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    if data:
        sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (b"" if it closed at once or reset), or until the socket's timeout."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        chunks.append(b"<still open>")
    return b"".join(chunks)


def error_of(raw: bytes) -> m.ErrorBody:
    return m.ErrorResponse.model_validate_json(raw.split(b"\r\n\r\n", 1)[1]).error


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ----------------------------------------------------------------------------------------------------------------------
# 1. Slow bodies: routed and authenticated first, bodies only on the call route, with a size-dependent deadline
# ----------------------------------------------------------------------------------------------------------------------

def test_bodies_sent_where_none_is_read_are_answered_at_once_and_hold_no_slot(contributor):
    """32 connections start slow bodies to routes that take none (the review's attack: they used to hold every
    request slot for request_timeout): each is answered at once, 404/405/413 with Connection: close, and the server
    keeps answering — with a 30 s body timeout and 4 slots."""
    s = serve(contributor, max_concurrent_requests=4, request_timeout=30.0)
    heads = [b"POST /nothing HTTP/1.1", b"POST /healthz HTTP/1.1", b"GET /healthz HTTP/1.1",
             b"PUT /v1/manifest HTTP/1.1", b"GET /v1/manifest HTTP/1.1",
             b"POST /v1/calls/00000000000000000000000000000000 HTTP/1.1",
             b"POST /v1/modules/m/anchors/2 HTTP/1.1", b"GET /openapi.json HTTP/1.1"]
    expected = [404, 405, 413, 405, 413, 405, 405, 413]
    try:
        socks = [connect(s, heads[i % 8] + b"\r\nHost: x\r\nContent-Length: 1000\r\n\r\nA", timeout=5)
                 for i in range(32)]
        answers = [read_all(sock) for sock in socks]  # the server closes each after its answer
        for i, raw in enumerate(answers):
            assert status_of(raw) == expected[i % 8], (heads[i % 8], raw[:200])
            assert b"connection: close" in raw.lower() and error_of(raw).status == expected[i % 8]
        with http(s) as c:
            assert c.get("/v1/manifest").status_code == 200
        for sock in socks:
            sock.close()
    finally:
        s.stop()


def test_auth_comes_before_the_body_and_the_slot(contributor):
    """Without a valid token, a call body is never read: 401 at once, even with 1 request slot taken by a slow body
    of an authorised client."""
    s = serve(contributor, tokens=(TOKEN_A,), max_concurrent_requests=1, request_timeout=30.0, body_min_rate=1,
              body_idle_timeout=30.0)
    head = (f"POST {CALLS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: 1000\r\n").encode()
    try:
        holder = connect(s, head + f"Authorization: Bearer {TOKEN_A}\r\n\r\nA".encode())
        assert wait_until(lambda: s.tracker.open == 1)
        time.sleep(0.2)  # the authorised body now holds the only slot
        for auth in (b"", b"Authorization: Bearer wrong-token-123\r\n", f"Authorization: Basic {TOKEN_A}\r\n".encode()):
            raw = read_all(connect(s, head + auth + b"\r\nA", timeout=5))
            assert status_of(raw) == 401 and error_of(raw).code == "unauthorized"
        busy = read_all(connect(s, f"GET /v1/manifest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\r\n"
                                .encode(), timeout=5))
        assert status_of(busy) == 429 and error_of(busy).code == "too_many_requests"
        holder.close()
    finally:
        s.stop()


def test_call_body_deadline_grows_with_its_declared_size(contributor):
    """grace + Content-Length / min_rate, not request_timeout: a 2,000-byte body at 1,000 B/s after 0.5 s grace gets
    2.5 s, however steadily it trickles in."""
    s = serve(contributor, request_timeout=30.0, body_min_rate=1000, body_grace=0.5, body_idle_timeout=5.0)
    try:
        manifest = m.Manifest.model_validate_json(httpx.get(f"{s.url}/v1/manifest").content)
        assert (manifest.limits.body_min_bytes_per_second, manifest.limits.body_grace_seconds,
                manifest.limits.body_idle_timeout_seconds) == (1000, 0.5, 5.0)
        sock = connect(s, (f"POST {CALLS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                           f"Content-Length: 2000\r\n\r\n").encode(), timeout=15)
        answer = []
        reader = threading.Thread(target=lambda: answer.append(read_all(sock)))
        reader.start()
        with pytest.raises(OSError):  # one byte every 0.2 s: never idle 5 s, but far below 1,000 B/s
            for _ in range(100):
                sock.sendall(b"\0")
                time.sleep(0.2)
        reader.join(15)
        assert status_of(answer[0]) == 408
        err = error_of(answer[0])
        assert err.code == "request_timeout" and "within 2.5 s" in err.message and "1,000 bytes/s" in err.message
    finally:
        s.stop()


def test_a_silent_call_body_times_out_after_the_idle_timeout(contributor):
    s = serve(contributor, request_timeout=30.0, body_min_rate=10, body_idle_timeout=1.0)
    try:
        raw = read_all(connect(s, (f"POST {CALLS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                                   f"Content-Length: 200\r\n\r\n").encode() + b"\0" * 10, timeout=10))
        assert status_of(raw) == 408 and "no body bytes for 1 s" in error_of(raw).message
    finally:
        s.stop()


def test_a_refused_upload_still_gets_its_answer(contributor):
    """The server answers before reading a body it will not use, then lingers (discarding) instead of resetting the
    connection: a client that sends its whole body first still reads the answer."""
    s = serve(contributor, tokens=(TOKEN_A,))
    try:
        for path, token, status in (("/nothing", TOKEN_A, 404), (CALLS, "wrong-token-123", 401)):
            with httpx.Client(base_url=s.url, headers={"authorization": f"Bearer {token}"}) as c:
                r = c.post(path, content=b"\0" * (2 << 20), headers=OCTET)
            assert r.status_code == status and r.headers["connection"] == "close"
        assert wait_until(lambda: s.tracker.open == 0)
        assert s.tracker.lingered >= 1
    finally:
        s.stop()


# ----------------------------------------------------------------------------------------------------------------------
# 2. Incomplete heads, idle and capped connections, unanswered exchanges, log volume, open files
# ----------------------------------------------------------------------------------------------------------------------

def test_a_peer_gone_before_the_lingering_close_is_dropped_quietly():
    """Closing with a request body still due: the server half-closes to linger, but if the peer already reset the
    connection (write_eof raises ENOTCONN) it aborts at once instead of raising out of the answer being sent."""
    import asyncio

    import uvicorn
    from uvicorn.server import ServerState

    from zkref.protocol.http import ConnectionTracker, GuardedH11Protocol

    class GoneTransport(asyncio.Transport):
        def __init__(self):
            super().__init__()
            self.aborted = self.closed = False

        def get_extra_info(self, name, default=None):
            return ("127.0.0.1", 5555) if name in ("peername", "sockname") else default

        def is_closing(self):
            return self.aborted or self.closed

        def can_write_eof(self):
            return True

        def write_eof(self):
            raise OSError(107, "Transport endpoint is not connected")

        def write(self, data):
            pass

        def pause_reading(self):
            pass

        def resume_reading(self):
            pass

        def abort(self):
            self.aborted = True

        def close(self):
            self.closed = True

    async def scenario():
        async def app(scope, receive, send):
            await asyncio.sleep(0)

        config = uvicorn.Config(app, lifespan="off", log_level="warning")
        tracker = ConnectionTracker(ConnectionLimits())
        protocol = GuardedH11Protocol(config=config, server_state=ServerState(), app_state={},
                                      _loop=asyncio.get_running_loop(), tracker=tracker)
        transport = GoneTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        protocol.transport.close()  # what uvicorn does after a refusal with Connection: close
        assert transport.aborted and not protocol._lingering and tracker.lingered == 0
        protocol.connection_lost(None)
        assert tracker.open == 0 and not tracker.per_ip

    asyncio.run(scenario())


def test_incomplete_request_heads_time_out(contributor):
    """Half-open requests (part of a head, then nothing; or a head dripping in) are closed at header_timeout — with
    a 408 when some of a head arrived — and a connection that never sends anything is closed too."""
    s = serve(contributor, header_timeout=1.0, keep_alive_timeout=0.5)
    try:
        half = [connect(s, b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\n") for _ in range(20)]
        silent = connect(s)
        dripping = connect(s)
        answer = []
        reader = threading.Thread(target=lambda: answer.append(read_all(dripping)))
        reader.start()
        with pytest.raises(OSError):  # a byte every 0.1 s: the whole head is due within 1 s, however it trickles
            for byte in b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\n" * 10:
                dripping.sendall(bytes([byte]))
                time.sleep(0.1)
        reader.join(10)
        for sock in half:
            raw = read_all(sock)
            assert status_of(raw) == 408 and error_of(raw).code == "request_timeout"
        assert status_of(answer[0]) == 408
        assert read_all(silent) == b""
        assert wait_until(lambda: s.tracker.open == 0)
        assert s.tracker.head_timeouts == 21 and s.tracker.idle_closes == 1
    finally:
        s.stop()


def test_after_an_answer_the_next_head_is_due_in_time_and_idle_connections_close(contributor):
    s = serve(contributor, header_timeout=1.0, keep_alive_timeout=0.5)
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        idle = connect(s, get)
        raw = read_all(idle)  # answered, then closed after 0.5 s of keep-alive idleness
        assert status_of(raw) == 200 and raw.count(b"HTTP/1.1") == 1
        pipelined = read_all(connect(s, get * 3))  # several heads at once: each answered
        assert pipelined.count(b"HTTP/1.1 200") == 3
        slow_next = connect(s, get)
        time.sleep(0.2)
        slow_next.sendall(b"GET /heal")  # starts the next head within keep-alive, never finishes it
        raw = read_all(slow_next)
        assert raw.count(b"HTTP/1.1 200") == 1 and b"HTTP/1.1 408 Request Timeout" in raw
    finally:
        s.stop()


def test_open_connections_are_capped_overall_and_per_address(contributor):
    """Beyond max_connections_per_ip from one address (or max_connections in all) a new connection is closed at once,
    before anything is parsed; another address is still served."""
    s = serve(contributor, max_connections=40, max_connections_per_ip=25, header_timeout=5.0)
    try:
        held = [connect(s, b"GET /v1/manifest HTTP/1.1\r\n") for _ in range(25)]
        assert wait_until(lambda: s.tracker.open == 25)
        extra = [connect(s, timeout=5) for _ in range(10)]
        assert all(read_all(sock) == b"" for sock in extra)  # closed at once, not after the 5 s head timeout
        assert s.tracker.refused == 10
        with http(s, source=OTHER_ADDRESS) as other:
            assert other.get("/healthz").status_code == 200
        assert wait_until(lambda: s.tracker.open == 25)
        more = [connect(s, b"GET /v1/manifest HTTP/1.1\r\n", source=OTHER_ADDRESS) for _ in range(15)]
        assert wait_until(lambda: s.tracker.open == 40)
        third = connect(s, source="127.0.0.3", timeout=5)
        assert read_all(third) == b"" and s.tracker.refused == 11  # the overall cap
        for sock in held + more:
            sock.close()
        assert wait_until(lambda: s.tracker.open == 0)
        with http(s) as c:
            assert c.get("/healthz").status_code == 200
    finally:
        s.stop()


def test_an_unanswered_exchange_loses_its_connection_and_frees_its_slot(contributor):
    """A request whose answer is not complete within exchange_timeout (here a long poll on a proof the prover holds)
    loses its connection, and its request slot is free again for the next request."""
    prover = GatedProver(workers=1)
    s = serve(contributor, prover=prover, max_concurrent_requests=1, exchange_timeout=1.0)
    try:
        with http(s) as c:
            call_id = c.post(CALLS, content=x_body(), headers=OCTET).json()["call_id"]
        sock = connect(s, f"GET /v1/calls/{call_id}?wait=25 HTTP/1.1\r\nHost: x\r\n\r\n".encode(), timeout=10)
        assert read_all(sock) == b""
        assert s.tracker.exchange_timeouts == 1
        prover.gate.set()
        with http(s) as c:
            done = c.get(f"/v1/calls/{call_id}", params={"wait": 10})
        assert done.status_code == 200 and done.json()["status"] == "done"
    finally:
        s.stop()


def test_a_flood_of_connection_errors_logs_a_few_lines(contributor, caplog):
    """500 refused connections and 200 timed-out heads: a handful of log lines, the later ones counting what was
    suppressed — not a line (or a traceback) each."""
    s = serve(contributor, max_connections=300, max_connections_per_ip=200, header_timeout=0.5)
    try:
        with caplog.at_level(logging.WARNING, logger=http_logger.name):
            socks = [connect(s, b"GET / HTTP/1.1\r\n") for _ in range(200)]
            assert wait_until(lambda: s.tracker.open == 200)
            refused = [connect(s) for _ in range(500)]
            assert wait_until(lambda: s.tracker.refused == 500 and s.tracker.head_timeouts == 200)
            for sock in socks + refused:
                sock.close()
        lines = [r for r in caplog.records if r.name == http_logger.name]
        assert 2 <= len(lines) <= 10, len(lines)
    finally:
        s.stop()


def test_event_loop_errors_are_throttled_to_one_line_per_period(caplog):
    throttle = LogThrottle(logging.getLogger("zkref.http.test"), rate=1.0, burst=2)
    with caplog.at_level(logging.ERROR, logger="zkref.http.test"):
        for _ in range(10_000):
            throttle.loop_exception_handler(None, {"message": "socket.accept() out of system resource",
                                                   "exception": OSError(24, "Too many open files")})
        time.sleep(1.1)
        throttle.loop_exception_handler(None, {"message": "socket.accept() out of system resource"})
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and all("out of system resource" in line for line in messages)
    assert "Too many open files" in messages[0] and "Traceback" not in "".join(messages)
    assert "[9,998 similar line(s) suppressed before this one]" in messages[2]


@pytest.mark.parametrize("limits, needed, expected", [
    ((64, 64), 1024, "needs an open-file limit of at least 2048; it is 64 (hard 64)"),
    ((64, 4096), 1024, "soft 2048"),
    ((3000, 4096), 1024, "soft 3000"),
])
def test_the_connection_cap_fits_the_open_file_limit(limits, needed, expected):
    """The soft RLIMIT_NOFILE is raised (up to the hard limit) to twice max_connections; below that, a clear error."""
    code = (f"import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, {limits})\n"
            "from zkref.protocol.http import ensure_fd_headroom\n"
            f"try:\n    ensure_fd_headroom({needed})\nexcept ValueError as e:\n    print(e)\n"
            "else:\n    print('soft', resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert expected in out


# ----------------------------------------------------------------------------------------------------------------------
# 3. Per-client results, visibility and queue shares
# ----------------------------------------------------------------------------------------------------------------------

def finished_call(c: httpx.Client) -> str:
    r = c.post(CALLS, content=x_body(), headers=OCTET)
    assert r.status_code == 200, r.text
    call_id = r.json()["call_id"]
    assert c.get(f"/v1/calls/{call_id}", params={"wait": 10}).json()["status"] == "done"
    return call_id


def test_one_client_cannot_evict_anothers_proofs(contributor):
    """The review's attack: after alice's call, bob makes many calls. Only bob's own oldest results go; alice's
    proof stays until her own quota or the TTL says otherwise."""
    s = serve(contributor, tokens=(TOKEN_A, TOKEN_B), max_queue=2, max_results=8, max_results_per_client=4)
    try:
        with http(s, TOKEN_A) as alice, http(s, TOKEN_B) as bob:
            mine = finished_call(alice)
            floods = [finished_call(bob) for _ in range(12)]
            assert alice.get(f"/v1/calls/{mine}").status_code == 200
            assert [bob.get(f"/v1/calls/{i}").status_code for i in floods] == [404] * 8 + [200] * 4
            health = alice.get("/healthz").json()
            assert health["stored_calls"] == 5 and health["evicted_calls"] == 8
            manifest = m.Manifest.model_validate_json(alice.get("/v1/manifest").content)
            assert (manifest.limits.max_results_per_client, manifest.limits.max_queue_per_client) == (4, 2)
            # her own calls do evict her own oldest
            more = [finished_call(alice) for _ in range(4)]
            assert alice.get(f"/v1/calls/{mine}").status_code == 404
            assert all(alice.get(f"/v1/calls/{i}").status_code == 200 for i in more)
    finally:
        s.stop()


def test_a_call_is_visible_only_to_its_client(contributor):
    s = serve(contributor, tokens=(TOKEN_A, TOKEN_B))
    try:
        with http(s, TOKEN_A) as alice, http(s, TOKEN_B) as bob:
            mine = finished_call(alice)
            theirs = bob.get(f"/v1/calls/{mine}")
            unknown = bob.get(f"/v1/calls/{'0' * 32}")
            assert theirs.status_code == unknown.status_code == 404 and theirs.content == unknown.content
            assert alice.get(f"/v1/calls/{mine}").json()["status"] == "done"
    finally:
        s.stop()


def test_without_auth_a_client_is_its_address(contributor):
    s = serve(contributor, max_queue=2, max_results=8, max_results_per_client=3)
    try:
        with http(s) as here, http(s, source=OTHER_ADDRESS) as there:
            mine = finished_call(here)
            floods = [finished_call(there) for _ in range(6)]
            assert here.get(f"/v1/calls/{mine}").status_code == 200
            assert there.get(f"/v1/calls/{mine}").status_code == 404
            assert [there.get(f"/v1/calls/{i}").status_code for i in floods] == [404] * 3 + [200] * 3
    finally:
        s.stop()


def test_each_client_has_its_share_of_the_queue_and_the_global_bound_holds(contributor):
    prover = GatedProver(workers=1)
    s = serve(contributor, prover=prover, tokens=(TOKEN_A, TOKEN_B, TOKEN_C), max_queue=4, max_queue_per_client=2,
              max_results=16)
    try:
        with http(s, TOKEN_A) as a, http(s, TOKEN_B) as b, http(s, TOKEN_C) as c:
            post = lambda client: client.post(CALLS, content=x_body(), headers=OCTET)  # noqa: E731
            assert [post(a).status_code for _ in range(2)] == [200, 200]
            own = post(a)
            assert own.status_code == 429 and "per client" in own.json()["error"]["message"]
            assert [post(b).status_code for _ in range(2)] == [200, 200]  # a's flood did not starve b
            full = post(c)  # 4 queued in all: the global bound
            assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
            assert "per client" not in full.json()["error"]["message"] and full.headers["retry-after"] == "1"
            prover.gate.set()
            assert wait_until(lambda: a.get("/healthz").json()["queued"] + a.get("/healthz").json()["running"] == 0)
            assert post(c).status_code == 200
    finally:
        s.stop()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["add", "finish"]), st.integers(1, 50)),
                max_size=120))
def test_store_bounds_hold_and_clients_within_their_quota_never_evict_each_other(ops):
    """With the global bounds equal to the sum of the per-client ones (as with a fixed set of tokens), no call of
    one client ever evicts another's result; every bound holds after every step."""
    import asyncio

    class Record:
        def __init__(self, call_id: str, size: int):
            self.call_id, self.size, self.done = call_id, size, asyncio.Event()

    store = CallStore(ttl=1e6, max_results=3 * 5, max_bytes=3 * 100, max_results_per_client=5,
                      max_bytes_per_client=100)
    pending: dict[str, list[Record]] = {"a": [], "b": [], "c": []}
    issued: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    for n, (owner, op, size) in enumerate(ops):
        before = {o: {i for i in issued[o] if store.get(i, owner=o)} for o in issued}
        if op == "add" and len(pending[owner]) < 2:  # the server's per-client queue share (2 < 5)
            record = Record(f"{n:032x}", size)
            store.add(record, owner=owner)
            pending[owner].append(record)
            issued[owner].append(record.call_id)
        elif op == "finish" and pending[owner]:
            store.finish(pending[owner].pop(0))
        else:
            continue
        for other in issued:
            if other != owner:
                assert {i for i in issued[other] if store.get(i, owner=other)} == before[other]
            kept = [i for i in issued[other] if store.get(i, owner=other)]
            assert len(kept) <= 5
            assert all(store.get(i, owner=o) is None for i in kept for o in issued if o != other)
        assert len(store.calls) <= 15 and store.bytes <= 300
        assert all(c.bytes <= 100 for c in store.clients.values())


def test_store_over_its_global_bound_evicts_from_the_largest_holder():
    """Clients beyond what the global bound covers (addresses without auth): the client holding the most loses its
    oldest result, not a client holding a small share."""
    import asyncio

    class Record:
        def __init__(self, call_id: str):
            self.call_id, self.size, self.done = call_id, 10, asyncio.Event()

    store = CallStore(ttl=1e6, max_results=6, max_bytes=10_000, max_results_per_client=4, max_bytes_per_client=1000)
    ids = {}
    for owner, count in (("small", 1), ("big", 4), ("new", 1)):
        for k in range(count):
            record = Record(f"{owner}{k}".ljust(32, "0"))
            store.add(record, owner=owner)
            store.finish(record)
            ids.setdefault(owner, []).append(record.call_id)
    late = Record("late".ljust(32, "0"))
    store.add(late, owner="new")  # 7 calls > 6: the largest holder ("big") loses its oldest
    assert store.get(ids["small"][0], owner="small") is not None
    assert store.get(ids["big"][0], owner="big") is None and store.get(ids["big"][1], owner="big") is not None
    assert len(store.calls) == 6 and store.pending("new") == 1


# ----------------------------------------------------------------------------------------------------------------------
# 4. The access log
# ----------------------------------------------------------------------------------------------------------------------

def test_access_log_one_line_per_request_without_secrets(contributor, caplog):
    s = serve(contributor, tokens=(TOKEN_A, TOKEN_B), access_log=True)
    try:
        with caplog.at_level(logging.INFO, logger=access_logger.name):
            with http(s, TOKEN_B) as bob:
                call_id = finished_call(bob)
                bob.get(f"/v1/calls/{call_id}", params={"wait": 0})
                bob.get("/v1/modules/%0aforged%20line/anchors/1")
            httpx.get(f"{s.url}/v1/manifest", headers={"authorization": f"Bearer {TOKEN_A}x"})
            httpx.get(f"{s.url}/healthz")
            # the Guard logs after the answer is sent: wait for the last line
            assert wait_until(lambda: any("/healthz" in r.getMessage() for r in caplog.records))
        lines = [r.getMessage() for r in caplog.records if r.name == access_logger.name]
    finally:
        s.stop()
    assert len(lines) == 6, lines
    post, *gets, forged, refused, health = lines
    assert post.startswith(f"token 2 POST {CALLS} 200 ") and post.endswith(" ms")
    assert all(line.startswith(f"token 2 GET /v1/calls/{call_id} 200 ") for line in gets)
    assert "wait" not in "".join(lines) and TOKEN_A not in "".join(lines) and TOKEN_B not in "".join(lines)
    assert "\n" not in forged and "%0aforged%20line" in forged and " 404 " in forged
    assert refused.startswith("127.0.0.1 GET /v1/manifest 401 ") and health.startswith("127.0.0.1 GET /healthz 200 ")


def test_access_log_is_rate_limited_and_off_by_default(contributor, caplog, monkeypatch):
    monkeypatch.setattr("zkref.protocol.http.ACCESS_LOG_RATE", 2.0)
    monkeypatch.setattr("zkref.protocol.http.ACCESS_LOG_BURST", 20)
    quiet = serve(contributor)
    loud = serve(contributor, access_log=True)
    try:
        with caplog.at_level(logging.INFO, logger=access_logger.name):
            with http(quiet) as c:
                for _ in range(20):
                    c.get("/healthz")
            assert not [r for r in caplog.records if r.name == access_logger.name]
            with http(loud) as c:
                t0 = time.monotonic()
                for _ in range(300):
                    c.get("/nothing-here")
                seconds = time.monotonic() - t0
                time.sleep(0.6)  # the bucket refills (2 lines/s): the next line says how many were suppressed
                c.get("/healthz")
                assert wait_until(lambda: any("/healthz" in r.getMessage() for r in caplog.records))
        lines = [r.getMessage() for r in caplog.records if r.name == access_logger.name]
    finally:
        quiet.stop()
        loud.stop()
    assert 20 <= len(lines) <= 20 + 2.0 * (seconds + 0.6) + 1
    notes = [int(line.split(" [")[1].split(" ")[0].replace(",", "")) for line in lines if " similar line" in line]
    assert "/healthz 200" in lines[-1] and "suppressed" in lines[-1]
    assert sum(notes) == 301 - len(lines)  # every request is either logged or counted in the next logged line


# ----------------------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------------------

def test_serve_flag_defaults_are_the_configs():
    from zkref.cli.main import build_parser

    args = build_parser().parse_args(["serve", "--base", "b", "--adapter", "a"])
    config = ServerConfig()
    for flag, field_name in (("max_connections", "max_connections"),
                             ("max_connections_per_ip", "max_connections_per_ip"),
                             ("header_timeout", "header_timeout"), ("min_body_rate", "body_min_rate"),
                             ("max_queue_per_client", "max_queue_per_client"),
                             ("max_results_per_client", "max_results_per_client"), ("max_queue", "max_queue"),
                             ("max_concurrent", "max_concurrent_requests"), ("max_results", "max_results")):
        assert getattr(args, flag) == getattr(config, field_name), flag
    assert not args.quiet


def test_token_file(tmp_path, capsys):
    from zkref.cli.serve import read_token_file

    good = tmp_path / "tokens"
    good.write_text(f"# clients\n{TOKEN_A}\n\n  {TOKEN_B}  \n")
    assert read_token_file(str(good)) == (TOKEN_A, TOKEN_B)
    config = ServerConfig(token=TOKEN_C, tokens=read_token_file(str(good)))
    assert config.tokens == (TOKEN_C, TOKEN_A, TOKEN_B)
    assert dataclasses.replace(config, max_queue=8).tokens == config.tokens
    cases = [("missing", None, "no such file"), ("empty", "# nothing\n\n", "no token"),
             ("short", "abc\n", "at least 8 printable"), ("twice", f"{TOKEN_A}\n{TOKEN_A}\n", "must differ"),
             ("binary", b"\xff\xfe\n", "not UTF-8")]
    for name, content, message in cases:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        code = main(["serve", "--backend", "zkref", "--base", "b", "--adapter", "a", "--token-file", str(path)])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("zkref serve:")]
        assert code == 2 and len(errors) == 1 and message in errors[0], err


def test_config_bounds_are_checked():
    with pytest.raises(ValueError, match="max_results_per_client must exceed"):
        ServerConfig(max_queue_per_client=8, max_results_per_client=8)
    with pytest.raises(ValueError, match="body_min_rate"):
        ServerConfig(body_min_rate=0)
    clamped = ServerConfig(max_queue=4, max_concurrent_requests=2, max_results=8)
    assert (clamped.max_queue_per_client, clamped.max_concurrent_per_client,
            clamped.max_results_per_client) == (4, 2, 8)
    assert ServerConfig(header_timeout=1.0, keep_alive_timeout=2.0).keep_alive_timeout == 1.0


def test_soak_quick(tmp_path):
    """benchmarks/soak.py --quick against `zkref serve`: a few hundred hostile requests of every kind while an honest
    client runs; no 5xx, every honest call verified, its results evicted only by its own quota and never readable
    by the attacker."""
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "benchmarks/soak.py", "--quick", "--results", str(out)],
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "soak.json").read_text())
    assert data["attack"]["requests"] >= 300
    assert data["attack"]["status_5xx"] == 0 and data["honest"]["all_verified"]
    assert data["honest"]["kept_as_its_own_quota_says"] and data["honest"]["visible_to_attacker"] == 0
    assert data["honest"]["storm"]["calls"] >= 4
    assert (out / "soak.md").read_text().startswith("# Soak")
