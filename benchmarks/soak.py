"""Soak: the contributor server (`zkref serve`) under hostile load while an honest client runs and verifies every call.

    python benchmarks/soak.py [--quick] [--results DIR] [--budget SECONDS]

Localhost only, bounded in count and time. A tiny GPT-2 and a peft LoRA adapter on its c_attn modules are built
locally (random weights, `save_pretrained`); `zkref serve --backend zkref` serves them in a subprocess on a free
port of 127.0.0.1 with three bearer tokens (`--token-file`): the honest client's, the attacker's and a prober's (the
malformed requests, so that they reach the handlers instead of the attacker's full request slots). Then:

1. quiet baseline: the honest client (`BaseModelClient`, its own token, its own source address 127.0.0.2), warmed up
   (anchors pinned), runs a few prompts, every call verified;
2. storm: attacker threads, each kind from its own loopback address, send ≥ 5,000 hostile requests (--quick: a few
   hundred) — slow bodies, half-open and dripping request heads, malformed requests of many kinds (raw bytes and
   malformed call bodies, parameters and ids), an anchor flood (every T of every module), a flood of valid calls
   from the attacker's token overrunning its result quota (with one global eviction rule it would push out the
   honest client's proofs), oversize bodies, bad auth — while the honest client keeps running prompts and verifying
   them;
3. after the storm: the attacker tries to fetch every honest call id (must all be 404), the honest client fetches
   them (all must be stored but what its own quota evicted: its oldest), and the server's open files settle.

Recorded (benchmarks/results/soak.json and soak.md): status counts per attack kind, the number of 5xx (must be 0),
connection errors seen by attackers (refused, reset, closed without an answer), whether the honest client's results
survived the eviction flood and stayed invisible to the attacker, the server's RSS, open file descriptors and result
store before, at peak during and after the storm, the honest client's per-call and per-run latency during the storm
against the quiet baseline (attacker threads share the 2 cores with the server: the slowdown includes that), how
often it was told to retry (429), the server's log volume (access log and connection events are rate-limited), and
whether every honest call verified. Exit code 1 if any 5xx was seen, an honest call did not verify, another client's
calls evicted an honest result, or the attacker could read one.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import secrets
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from harness import RESULTS, Machine, write_results  # noqa: E402

MODULES = ("transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn")
D_IN = 64
MAX_TOKENS = 64
HONEST_ADDRESS = "127.0.0.2"
ATTACKERS = {"slow_body": "127.0.0.3", "half_open": "127.0.0.4", "malformed_raw": "127.0.0.5",
             "malformed_http": "127.0.0.6", "anchor_flood": "127.0.0.7", "evict_flood": "127.0.0.8",
             "oversize": "127.0.0.9", "bad_auth": "127.0.0.10"}
"""Each attack kind comes from its own loopback address (per-address connection caps apply to each)."""
FULL_COUNTS = {"slow_body": 240, "half_open": 400, "malformed_raw": 1200, "malformed_http": 900,
               "anchor_flood": 900, "evict_flood": 1400, "oversize": 300, "bad_auth": 700}
PROBING = ("malformed_raw", "malformed_http")
"""Attack kinds that use a third token (the "prober"), so that the attacker's own per-client request slots, taken
by its slow bodies and floods, do not stop them reaching the handlers."""
SERVER_BOUNDS = {False: {"--header-timeout": "10", "--max-results-per-client": "96"},
                 True: {"--header-timeout": "3", "--max-queue": "8", "--max-queue-per-client": "4",
                        "--max-results": "64", "--max-results-per-client": "16"}}
"""`zkref serve` flags of the full and the --quick soak: per-client result quotas the eviction flood overruns."""
QUICK_DIVISOR = 12
BATCH = 40
"""Requests per attack job: jobs of every kind are interleaved over the attacker threads."""
PROMPTS = ([5, 17, 99, 3], [8, 1, 44, 2, 9], [12, 7, 3], [90, 91, 92, 93])


# ----------------------------------------------------------------------------------------------------------------------
# Outcomes
# ----------------------------------------------------------------------------------------------------------------------

@dataclass
class Tally:
    """What attackers saw: HTTP statuses and connection-level outcomes, per attack kind (thread-safe)."""

    statuses: dict[str, collections.Counter] = field(default_factory=lambda: collections.defaultdict(
        collections.Counter))
    errors: dict[str, collections.Counter] = field(default_factory=lambda: collections.defaultdict(
        collections.Counter))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, outcome: int | str) -> None:
        with self.lock:
            if isinstance(outcome, int):
                self.statuses[kind][outcome] += 1
            else:
                self.errors[kind][outcome] += 1

    def requests(self, kind: str | None = None) -> int:
        kinds = [kind] if kind else set(self.statuses) | set(self.errors)
        return sum(sum(self.statuses[k].values()) + sum(self.errors[k].values()) for k in kinds)


def classify(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, httpx.TimeoutException)):
        return "timeout"
    if isinstance(exc, ConnectionResetError) or "reset" in str(exc).lower():
        return "reset"
    if isinstance(exc, (ConnectionRefusedError, httpx.ConnectError)):
        return "connect_error"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "closed_without_answer"
    return type(exc).__name__


def head_status(buffer: bytes) -> tuple[int | None, bytes]:
    """The status of the first final (non-1xx) answer head in `buffer`, and what follows it (None: not yet)."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None, buffer
        line = buffer[:buffer.find(b"\r\n")]
        parts = line.split(b" ", 2)
        status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        if 100 <= status < 200:
            buffer = buffer[end + 4:]
            continue
        return status, buffer[end + 4:]


def raw_exchange(port: int, data: bytes, *, source: str, timeout: float = 15.0) -> int | str:
    """Send raw bytes on a new connection; the answer's status, or how the connection ended without one."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    except OSError as exc:
        return classify(exc)
    with sock:
        buffer = b""
        try:
            if data:
                sock.sendall(data)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    status, _ = head_status(buffer)
                    return status if status is not None else "closed_without_answer"
                buffer += chunk
                status, _ = head_status(buffer)
                if status is not None:
                    return status
        except OSError as exc:
            status, _ = head_status(buffer)
            return status if status is not None else classify(exc)


# ----------------------------------------------------------------------------------------------------------------------
# The attacks
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    port: int
    url: str
    attacker_token: str
    prober_token: str
    max_body: int
    header_timeout: float
    deadline: float
    """time.monotonic() after which attack jobs stop."""

    def auth(self, token: str | None = None) -> bytes:
        return f"Authorization: Bearer {token or self.attacker_token}\r\n".encode()

    def client(self, kind: str, *, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20,
                            transport=httpx.HTTPTransport(local_address=ATTACKERS[kind]))


def x_q_bytes(rng: np.random.Generator, tokens: int) -> bytes:
    from zkref.protocol.tensors import encode_tensors

    return encode_tensors({"x_q": rng.integers(-128, 128, (tokens, D_IN)).astype(np.int8)})


def hold_and_collect(t: Target, kind: str, tally: Tally, socks: list[socket.socket], *, drip: bool,
                     patience: float) -> None:
    """Keep `socks` open (sending one byte every 2 s to each when `drip`) until each gets an answer head or is
    closed, or `patience` seconds pass; tally what each saw."""
    buffers = {s: b"" for s in socks}
    give_up = time.monotonic() + patience
    next_drip = time.monotonic() + 2.0
    while buffers and time.monotonic() < give_up:
        readable, _, _ = select.select(list(buffers), [], [], 0.2)
        for s in readable:
            try:
                chunk = s.recv(65536)
            except OSError as exc:
                status, _ = head_status(buffers.pop(s))
                tally.add(kind, status if status is not None else classify(exc))
                s.close()
                continue
            status, _ = head_status(buffers[s] + chunk)
            if status is not None or not chunk:
                buffers.pop(s)
                tally.add(kind, status if status is not None else "closed_without_answer")
                s.close()
            else:
                buffers[s] += chunk
        if drip and time.monotonic() >= next_drip:
            next_drip += 2.0
            for s in list(buffers):
                with contextlib.suppress(OSError):
                    s.send(b"\0")
    for s in buffers:
        tally.add(kind, "still_open")
        s.close()


def slow_body(t: Target, n: int, tally: Tally, rng: np.random.Generator) -> None:
    """Bodies that trickle in at a byte per 2 s: to paths that take none (answered at once), to the call route
    without a token (401 at once), and with the attacker's token (read against the size-based deadline: 408)."""
    heads = [b"POST /soak-nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
             b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
             f"POST /v1/modules/{MODULES[0]}/calls HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
             f"Content-Length: 2000\r\n\r\n".encode(),
             f"POST /v1/modules/{MODULES[1]}/calls HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
             f"Content-Length: 2000\r\n".encode() + t.auth() + b"\r\n"]
    socks = []
    for i in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", t.port), timeout=10, source_address=(ATTACKERS["slow_body"], 0))
            s.sendall(heads[i % len(heads)] + b"\0")
            socks.append(s)
        except OSError as exc:
            tally.add("slow_body", classify(exc))
    hold_and_collect(t, "slow_body", tally, socks, drip=True, patience=60.0)


def half_open(t: Target, n: int, tally: Tally, rng: np.random.Generator) -> None:
    """Connections that send part of a request head (or nothing) and never finish it; some drip a byte every 2 s.
    Beyond the per-address cap they are closed at once."""
    partials = [b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\n", b"POST /v1/modules/", b"G", b"",
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4000]
    socks = []
    for i in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", t.port), timeout=10, source_address=(ATTACKERS["half_open"], 0))
            if partials[i % len(partials)]:
                s.sendall(partials[i % len(partials)])
            socks.append(s)
        except OSError as exc:
            tally.add("half_open", classify(exc))
    hold_and_collect(t, "half_open", tally, socks, drip=n % 2 == 1, patience=t.header_timeout + 20.0)


def malformed_requests(t: Target) -> list[bytes]:
    """Raw requests h11, the Guard or the handlers must refuse (or answer) cleanly."""
    call = f"/v1/modules/{MODULES[0]}/calls".encode()
    a = t.auth(t.prober_token)
    good = x_q_bytes(np.random.default_rng(0), 1)
    return [
        b"\x00\x01\x02\xff garbage\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /v1/manifest HTTP/1.1\r\n\r\n", b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n",
        b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\n folded: continuation\r\n\r\n",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n" + a + b"\r\n",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n" + a + b"\r\n",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n" + a + b"\r\n12345",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n" + a + b"\r\n123456",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n" + a + b"\r\n",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + a + b"\r\nzz\r\nabc\r\n",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n" + a + b"\r\n",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n" + a +
        b"\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: "
        b"chunked\r\n" + a + b"\r\n" + f"{len(good):x}".encode() + b"\r\n" + good + b"\r\n0\r\n\r\n",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 50\r\n"
        + a + b"\r\n" + b"\xff" * 50,
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n" + a +
        b"\r\n{}",
        b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n",
        b"GET /v1/calls/" + b"0" * 32 + b"?wait=nan HTTP/1.1\r\nHost: x\r\n" + a + b"\r\n",
        b"GET /v1/calls/%00%ff%fe HTTP/1.1\r\nHost: x\r\n" + a + b"\r\n",
        b"GET /v1/modules/" + b"%2e%2e%2f" * 40 + b"/anchors/1 HTTP/1.1\r\nHost: x\r\n" + a + b"\r\n",
        b"GET http://evil.example/v1/manifest HTTP/1.1\r\nHost: x\r\n" + a + b"\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        b"GET /v1/manifest HTTP/1.0\r\n" + a + b"\r\n",
        b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n" + a + b"\r\n",
        b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\n" + a + b"\r\nGARBAGE AFTER\r\n\r\n",
        b"POST " + call + b" HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 100\r\n" + a + b"\r\n",
        b"DELETE /v1/calls/" + b"a" * 32 + b" HTTP/1.1\r\nHost: x\r\n" + a + b"\r\n",
        b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    ]


def malformed_raw(t: Target, n: int, tally: Tally, rng: np.random.Generator) -> None:
    requests = malformed_requests(t)
    for i in range(n):
        if time.monotonic() > t.deadline:
            return
        tally.add("malformed_raw", raw_exchange(t.port, requests[int(rng.integers(len(requests)))],
                                                source=ATTACKERS["malformed_raw"]))


def malformed_bodies(rng: np.random.Generator) -> list[bytes]:
    from zkref.protocol.tensors import encode_tensors

    valid = x_q_bytes(rng, 2)
    n = struct.unpack("<Q", valid[:8])[0]
    bodies = [valid[:k] for k in range(0, len(valid), 7)]
    bodies += [struct.pack("<Q", lie) + valid[8:] for lie in (0, 1, n - 1, n + 1, 1 << 40, (1 << 64) - 1)]
    bodies += [encode_tensors({"x_q": np.zeros(shape, np.int8)}) for shape in
               ((0, D_IN), (2, D_IN - 1), (MAX_TOKENS + 1, D_IN), (D_IN,), (1, 2, D_IN))]
    bodies += [encode_tensors({"x_q": np.zeros((2, D_IN), dtype)}) for dtype in (np.int16, np.float32, np.uint8)]
    bodies += [encode_tensors({"x": np.zeros((2, D_IN), np.int8)}), b"", b"\0" * 9,
               struct.pack("<Q", 200_000) + b"[" * 100_000]
    return bodies + [rng.integers(0, 256, int(size)).astype(np.uint8).tobytes() for size in rng.integers(1, 3000, 20)]


def malformed_http(t: Target, n: int, tally: Tally, rng: np.random.Generator) -> None:
    bodies = malformed_bodies(rng)
    octet = {"content-type": "application/octet-stream"}
    with t.client("malformed_http", token=t.prober_token) as c:
        for i in range(n):
            if time.monotonic() > t.deadline:
                return
            k = int(rng.integers(8))
            try:
                if k < 4:
                    r = c.post(f"/v1/modules/{MODULES[i % 2]}/calls", content=bodies[int(rng.integers(len(bodies)))],
                               headers=octet)
                elif k == 4:
                    r = c.post(f"/v1/modules/{MODULES[0]}/calls", content=x_q_bytes(rng, 1),
                               headers={"content-type": str(rng.choice(["text/plain", "application/json", ""]))})
                elif k == 5:
                    name = "".join(rng.choice(list("abc._-0%"), int(rng.integers(1, 40))))
                    r = c.get(f"/v1/modules/{name}/anchors/{int(rng.integers(-5, 100))}")
                elif k == 6:
                    r = c.get(f"/v1/calls/{rng.bytes(int(rng.integers(1, 20))).hex()}",
                              params={"wait": str(rng.choice(["-1", "1e9", "nan", "inf", "x", "0"]))})
                else:
                    r = c.request(str(rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS"])), "/v1/manifest")
                tally.add("malformed_http", r.status_code)
            except httpx.HTTPError as exc:
                tally.add("malformed_http", classify(exc))


def anchor_flood(t: Target, n: int, tally: Tally, rng: np.random.Generator) -> None:
    """GET every (module, T) anchor, over and over, some long-polling."""
    with t.client("anchor_flood", token=t.attacker_token) as c:
        for i in range(n):
            if time.monotonic() > t.deadline:
                return
            tokens = i % (MAX_TOKENS + 2)  # 0 and MAX_TOKENS + 1 are out of range: 422
            params = {"wait": 1} if i % 10 == 0 else {}
            try:
                tally.add("anchor_flood", c.get(f"/v1/modules/{MODULES[(i // 7) % 2]}/anchors/{tokens}",
                                                params=params).status_code)
            except httpx.HTTPError as exc:
                tally.add("anchor_flood", classify(exc))


def evict_flood(t: Target, n: int, tally: Tally, rng: np.random.Generator) -> None:
    """Valid calls as fast as the attacker's share of the queue admits them: each accepted call is a stored result
    that, with a global eviction rule, would push out the honest client's oldest proofs."""
    octet = {"content-type": "application/octet-stream"}
    with t.client("evict_flood", token=t.attacker_token) as c:
        for i in range(n):
            if time.monotonic() > t.deadline:
                return
            try:
                r = c.post(f"/v1/modules/{MODULES[i % 2]}/calls", content=x_q_bytes(rng, int(rng.integers(1, 5))),
                           headers=octet)
                tally.add("evict_flood", r.status_code)
            except httpx.HTTPError as exc:
                tally.add("evict_flood", classify(exc))


def oversize(t: Target, n: int, tally: Tally, rng: np.random.Generator) -> None:
    call = f"/v1/modules/{MODULES[0]}/calls"
    octet = {"content-type": "application/octet-stream"}
    with t.client("oversize", token=t.attacker_token) as c, t.client("oversize") as anonymous:
        for i in range(n):
            if time.monotonic() > t.deadline:
                return
            k = i % 5
            try:
                if k == 0:  # declared too large, nothing sent
                    outcome = raw_exchange(t.port, f"POST {call} HTTP/1.1\r\nHost: x\r\nContent-Length: "
                                                   f"{t.max_body + 1}\r\n".encode() + t.auth() + b"\r\n",
                                           source=ATTACKERS["oversize"])
                elif k == 1:  # 1 MiB actually sent
                    outcome = c.post(call, content=b"\0" * (1 << 20), headers=octet).status_code
                elif k == 2:  # chunked, over the bound
                    outcome = c.post(call, content=iter([b"\0" * 4096] * (t.max_body // 4096 + 2)),
                                     headers=octet).status_code
                elif k == 3:  # no token: refused before the size matters
                    outcome = anonymous.post(call, content=b"\0" * (256 << 10), headers=octet).status_code
                else:
                    outcome = raw_exchange(t.port, f"POST {call} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000"
                                                   f"\r\n".encode() + t.auth() + b"\r\n", source=ATTACKERS["oversize"])
            except httpx.HTTPError as exc:
                outcome = classify(exc)
            tally.add("oversize", outcome)


def bad_auth(t: Target, n: int, tally: Tally, rng: np.random.Generator) -> None:
    variants = [None, "Bearer wrong-token-value", f"Basic {t.attacker_token}", f"bearer {t.attacker_token}",
                f"Bearer {t.attacker_token}x", f"Bearer {t.attacker_token[:-1]}", "Bearer"]
    paths = ["/v1/manifest", f"/v1/modules/{MODULES[0]}/anchors/4", f"/v1/calls/{'0' * 32}"]
    with t.client("bad_auth") as c:
        for i in range(n):
            if time.monotonic() > t.deadline:
                return
            try:
                if i % 9 == 8:  # two Authorization headers, one of them right
                    outcome = raw_exchange(t.port, b"GET /v1/manifest HTTP/1.1\r\nHost: x\r\n" + t.auth() +
                                           b"Authorization: Bearer x\r\n\r\n", source=ATTACKERS["bad_auth"])
                else:
                    auth = variants[i % len(variants)]
                    headers = {"authorization": auth} if auth else {}
                    if i % 4 == 3:
                        outcome = c.post(f"/v1/modules/{MODULES[1]}/calls", content=x_q_bytes(rng, 1),
                                         headers=headers | {"content-type": "application/octet-stream"}).status_code
                    else:
                        outcome = c.get(paths[i % len(paths)], headers=headers).status_code
            except httpx.HTTPError as exc:
                outcome = classify(exc)
            tally.add("bad_auth", outcome)


ATTACKS = {"slow_body": slow_body, "half_open": half_open, "malformed_raw": malformed_raw,
           "malformed_http": malformed_http, "anchor_flood": anchor_flood, "evict_flood": evict_flood,
           "oversize": oversize, "bad_auth": bad_auth}


# ----------------------------------------------------------------------------------------------------------------------
# The server, its resources, the honest client
# ----------------------------------------------------------------------------------------------------------------------

def build_model(root: Path) -> tuple[Path, Path]:
    from zkref.models.tiny_model import build_tiny_gpt2, save_random_lora

    base = build_tiny_gpt2(root / "base", seed=0)
    adapter = save_random_lora(base, root / "adapter", seed=1, r=4, lora_alpha=8, target_modules=["c_attn"],
                               fan_in_fan_out=True, lora_dropout=0.0)
    return base, adapter


def server_command(base: Path, adapter: Path, token_file: Path, bounds: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "zkref.cli.main", "serve", "--base", str(base), "--adapter", str(adapter),
            "--backend", "zkref", "--host", "127.0.0.1", "--port", "0", "--workers", "1", "--token-file",
            str(token_file), "--max-tokens", str(MAX_TOKENS), *[x for kv in bounds.items() for x in kv]]


def start_server(cmd: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log.open("wb"), text=True, cwd=str(ROOT), env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "listening on " in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining stdout
            return proc, line.strip().rsplit(" ", 1)[-1]
    proc.kill()
    raise RuntimeError(f"zkref serve did not start: {log.read_text()[-2000:]}")


def server_resources(pid: int, url: str) -> dict:
    """The server process's RSS and open file descriptors, its prover workers' RSS, and its result store."""
    import psutil

    proc = psutil.Process(pid)
    children = proc.children(recursive=True)
    with httpx.Client(timeout=20, transport=httpx.HTTPTransport(local_address=HONEST_ADDRESS)) as c:
        health = c.get(f"{url}/healthz").json()
    return {"rss_mib": round(proc.memory_info().rss / 2**20, 1), "open_fds": proc.num_fds(),
            "connections": len(proc.net_connections(kind="tcp")),
            "workers_rss_mib": round(sum(c.memory_info().rss for c in children) / 2**20, 1),
            "stored_calls": health["stored_calls"], "stored_bytes": health["stored_bytes"],
            "evicted_calls": health["evicted_calls"], "queued": health["queued"]}


class Sampler(threading.Thread):
    """Peak RSS and open fds of the server process while the storm runs (every 0.25 s)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.peak_rss = 0.0
        self.peak_fds = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            with contextlib.suppress(Exception):
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss / 2**20)
                self.peak_fds = max(self.peak_fds, self.proc.num_fds())


class TimedTransport(httpx.HTTPTransport):
    """The honest client's transport: from its own source address, noting each request's status and seconds."""

    def __init__(self):
        super().__init__(local_address=HONEST_ADDRESS)
        self.log: list[tuple[str, str, int, float]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        t0 = time.perf_counter()
        response = super().handle_request(request)
        response.read()
        self.log.append((request.method, request.url.path, response.status_code, time.perf_counter() - t0))
        return response


def honest_runs(client, transport: TimedTransport, *, until, min_runs: int) -> dict:
    """Run prompts until `until()` is true (at least `min_runs`); per-call and per-run latency, verification."""
    from zkref.protocol.client import ContributorError

    start = len(transport.log)
    runs, failures, call_ids = [], [], []
    i = 0
    while i < min_runs or not until():
        prompt = PROMPTS[i % len(PROMPTS)]
        t0 = time.perf_counter()
        try:
            result = client.run(prompt)
            runs.append(time.perf_counter() - t0)
            call_ids += [c.call_id for c in result.calls]
            failures += [f"{c.label}: {c.reason}" for c in result.calls if not c.verified]
            if not result.calls:
                failures.append("a run made no call")
        except (ContributorError, ValueError) as exc:
            runs.append(time.perf_counter() - t0)
            failures.append(f"run {i} raised {type(exc).__name__}: {exc}"[:300])
        i += 1
    requests = transport.log[start:]
    posts = [s for method, path, status, s in requests if method == "POST" and status == 200]
    statuses = collections.Counter(status for _, _, status, _ in requests)
    return {"runs": len(runs), "calls": len(call_ids), "verified": not failures and bool(call_ids),
            "failures": failures[:20], "call_ids": call_ids,
            "call_ms": summary([1e3 * s for s in posts]), "run_s": summary(runs),
            "statuses": {str(k): v for k, v in sorted(statuses.items())}, "retries_429": statuses.get(429, 0)}


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "median": round(statistics.median(ordered), 3),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3), "max": round(ordered[-1], 3)}


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------

def soak(*, quick: bool, budget: float, work: Path) -> dict:
    from zkref.protocol.client import BaseModelClient, Endpoint

    counts = {k: max(8, v // QUICK_DIVISOR) if quick else v for k, v in FULL_COUNTS.items()}
    bounds = SERVER_BOUNDS[quick]
    header_timeout = float(bounds["--header-timeout"])
    honest_token, attacker_token, prober_token = (secrets.token_hex(16) for _ in range(3))
    token_file = work / "tokens"
    token_file.write_text(f"{honest_token}\n{attacker_token}\n{prober_token}\n")
    base, adapter = build_model(work / "models")
    log = work / "serve.log"
    load0 = os.getloadavg()[0]
    t_start = time.perf_counter()
    proc, url = start_server(server_command(base, adapter, token_file, bounds), log)
    try:
        port = int(url.rsplit(":", 1)[1])
        transport = TimedTransport()
        client = BaseModelClient(base_dir=base, contributors=[Endpoint(url=url, token=honest_token)],
                                 transport=transport, timeout=60.0, proof_timeout=120.0)
        client.connect()
        manifest = client.sessions[0].manifest
        for prompt in PROMPTS:  # warm-up, not measured: anchors pinned for every prompt length
            client.run(prompt)
        warm_ids = [c.call_id for c in client.run(PROMPTS[0]).calls]
        before = server_resources(proc.pid, url)
        baseline = honest_runs(client, transport, until=lambda: True, min_runs=4 if quick else 12)

        tally = Tally()
        target = Target(port=port, url=url, attacker_token=attacker_token, prober_token=prober_token,
                        max_body=manifest.limits.max_body_bytes,
                        header_timeout=header_timeout, deadline=time.monotonic() + budget)
        jobs = [(kind, min(BATCH, counts[kind] - k)) for kind in counts for k in range(0, counts[kind], BATCH)]
        order = np.random.default_rng(7).permutation(len(jobs))
        sampler = Sampler(proc.pid)
        sampler.start()
        t_storm = time.perf_counter()
        with ThreadPoolExecutor(max_workers=16, thread_name_prefix="attacker") as pool:
            futures = [pool.submit(ATTACKS[jobs[j][0]], target, jobs[j][1], tally, np.random.default_rng(int(j)))
                       for j in order]
            storm = honest_runs(client, transport, until=lambda: all(f.done() for f in futures),
                                min_runs=4 if quick else 12)
            crashed = [repr(f.exception()) for f in futures if f.exception() is not None]
        storm_seconds = time.perf_counter() - t_storm
        sampler.stop.set()
        during = {"peak_rss_mib": round(sampler.peak_rss, 1), "peak_open_fds": sampler.peak_fds}
        after = server_resources(proc.pid, url)

        honest_ids = warm_ids + baseline["call_ids"] + storm["call_ids"]
        with target.client("evict_flood", token=attacker_token) as attacker:
            attacker_sees = sum(attacker.get(f"/v1/calls/{i}").status_code == 200 for i in honest_ids)
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {honest_token}"},
                          transport=httpx.HTTPTransport(local_address=HONEST_ADDRESS), timeout=30) as own:
            stored = [own.get(f"/v1/calls/{i}").status_code == 200 for i in honest_ids]
        # the honest client's own quota keeps its newest calls; nothing else may have evicted any of them
        quota = manifest.limits.max_results_per_client
        kept_as_its_quota_says = stored == [k >= len(honest_ids) - quota for k in range(len(honest_ids))]
        time.sleep(header_timeout + 3.0)  # idle keep-alive and half-open connections close; lingering ends
        settled = server_resources(proc.pid, url)
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log_text = log.read_text(errors="replace")
    log_lines = log_text.splitlines()
    statuses = collections.Counter()
    for counter in tally.statuses.values():
        statuses.update(counter)
    errors = collections.Counter()
    for counter in tally.errors.values():
        errors.update(counter)
    honest_5xx = sum(v for k, v in collections.Counter(s for _, _, s, _ in transport.log).items() if k >= 500)
    return {
        "machine": asdict(Machine.here()), "quick": quick, "load_average": [round(load0, 2),
                                                                           round(os.getloadavg()[0], 2)],
        "seconds": round(time.perf_counter() - t_start, 1), "storm_seconds": round(storm_seconds, 1),
        "server": {"command": "zkref serve --backend zkref --workers 1 --token-file (3 tokens: honest, attacker, "
                              "prober) " + " ".join(f"{k} {v}" for k, v in bounds.items()),
                   "limits": manifest.limits.model_dump()},
        "attack": {"requests": tally.requests(), "planned": sum(counts.values()),
                   "statuses": {str(k): v for k, v in sorted(statuses.items())},
                   "status_5xx": sum(v for k, v in statuses.items() if k >= 500),
                   "connection_errors": dict(errors), "connection_errors_total": sum(errors.values()),
                   "by_kind": {kind: {"requests": tally.requests(kind), "address": ATTACKERS[kind],
                                      "token": "prober" if kind in PROBING else "attacker",
                                      "statuses": {str(k): v for k, v in sorted(tally.statuses[kind].items())},
                                      "connection_errors": dict(tally.errors[kind])} for kind in counts},
                   "attack_jobs_crashed": crashed},
        "honest": {"address": HONEST_ADDRESS, "baseline": {k: v for k, v in baseline.items() if k != "call_ids"},
                   "storm": {k: v for k, v in storm.items() if k != "call_ids"},
                   "all_verified": baseline["verified"] and storm["verified"], "status_5xx": honest_5xx,
                   "calls_total": len(honest_ids), "still_stored_after_storm": sum(stored),
                   "evicted_by_its_own_quota": len(honest_ids) - sum(stored),
                   "results_per_client": quota, "kept_as_its_own_quota_says": kept_as_its_quota_says,
                   "visible_to_attacker": attacker_sees},
        "resources": {"before": before, "during": during, "after_storm": after, "after_settling": settled},
        "log": {"bytes": len(log_text.encode()), "lines": len(log_lines),
                "access_lines": sum(" zkref.access " in line for line in log_lines),
                "connection_event_lines": sum(" zkref.http " in line for line in log_lines),
                "suppressed_notes": sum("suppressed before this one" in line for line in log_lines),
                "tracebacks": log_text.count("Traceback"), "traceback_endings": traceback_endings(log_lines)},
    }


def traceback_endings(lines: list[str], limit: int = 10) -> list[str]:
    """The line each traceback in the server's log ends with (its exception), with the log line before it."""
    endings = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            j = i + 1
            while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
                j += 1
            context = lines[i - 1] if i else ""
            endings.append(f"{context[:200]} → {lines[j][:300] if j < len(lines) else '?'}")
    return endings[:limit]


def ratio(storm: dict, baseline: dict, key: str) -> str:
    if not storm.get(key) or not baseline.get(key) or not baseline[key]:
        return "–"
    return f"{storm[key] / baseline[key]:.2f}×"


def markdown(d: dict) -> str:
    a, h, r, lg = d["attack"], d["honest"], d["resources"], d["log"]
    b, s = h["baseline"], h["storm"]
    lines = [
        "# Soak: the contributor server under hostile load", "",
        f"`benchmarks/soak.py{' --quick' if d['quick'] else ''}`: {d['server']['command']}, on "
        f"{d['machine']['cores']} cores (load average {d['load_average'][0]} → {d['load_average'][1]}); "
        f"{a['requests']:,} hostile requests in {d['storm_seconds']} s from {len(a['by_kind'])} attack kinds, each "
        "from its own loopback address, while the honest client (its own token, from "
        f"{h['address']}) ran prompts. The attacker threads run on the same 2 cores as the server.", "",
        f"**{a['status_5xx']} answers with a 5xx status** (attackers) and {h['status_5xx']} (honest client); "
        f"**every honest call verified: {'yes' if h['all_verified'] else 'NO'}** ({h['calls_total']} calls); "
        f"after the storm {h['still_stored_after_storm']} of {h['calls_total']} honest results were still stored "
        f"({'exactly' if h['kept_as_its_own_quota_says'] else 'NOT'} what its own quota of {h['results_per_client']} "
        "keeps: its newest), while the store evicted "
        f"{r['after_settling']['evicted_calls'] - h['evicted_by_its_own_quota']:,} of the attacker's and prober's "
        f"results by their own quotas; {h['visible_to_attacker']} honest results were visible to the attacker's "
        "token.", "",
        "## What the attackers saw", "",
        "| attack | address, token | requests | statuses | connection ended without an answer |",
        "|---|---|---:|---|---|"]
    for kind, k in a["by_kind"].items():
        statuses = ", ".join(f"{code}: {n:,}" for code, n in k["statuses"].items()) or "–"
        errors = ", ".join(f"{name}: {n:,}" for name, n in k["connection_errors"].items()) or "–"
        lines.append(f"| {kind} | {k['address']}, {k['token']} | {k['requests']:,} | {statuses} | {errors} |")
    lines += [f"| **all** | | **{a['requests']:,}** | "
              + ", ".join(f"{code}: {n:,}" for code, n in a["statuses"].items())
              + f" | {a['connection_errors_total']:,} |", "",
              "Without an answer: `closed_without_answer` (the server closed a connection over the per-address cap at "
              "once, or a silent half-open one at the head timeout), `reset` (the same when the peer had sent bytes "
              "the server did not read, or an upload still running after the lingering close), `timeout` (no answer "
              "within the attacker's 15 s), `still_open` (open when the attacker gave up). 429: the attacker's own "
              "share of request slots or of the proving queue was full.", "",
              "## The honest client", "",
              "| phase | runs | calls | call latency ms, median / p90 / max | run seconds, median / max "
              "| 429 retries |",
              "|---|---:|---:|---|---|---:|"]
    for name, p in (("quiet baseline", b), ("during the storm", s)):
        c, rr = p["call_ms"], p["run_s"]
        call = f"{c['median']} / {c['p90']} / {c['max']}" if c.get("n") else "–"
        run = f"{rr['median']} / {rr['max']}" if rr.get("n") else "–"
        lines.append(f"| {name} | {p['runs']} | {p['calls']} | {call} | {run} | {p['retries_429']} |")
    lines += ["", f"Storm ÷ baseline, medians: call latency {ratio(s['call_ms'], b['call_ms'], 'median')}, run time "
                  f"{ratio(s['run_s'], b['run_s'], 'median')}. A run is one prompt: anchors pinned, one call per "
                  "c_attn module, every proof fetched and verified.", ""]
    if s["failures"] or b["failures"]:
        lines += ["Honest failures: " + "; ".join(b["failures"] + s["failures"]), ""]
    lines += ["## The server", "", "| | RSS MiB | open fds | TCP connections | stored calls | stored bytes | evicted |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, key in (("before", "before"), ("after the storm", "after_storm"),
                      ("after settling", "after_settling")):
        x = r[key]
        lines.append(f"| {name} | {x['rss_mib']} | {x['open_fds']} | {x['connections']} | {x['stored_calls']} | "
                     f"{x['stored_bytes']:,} | {x['evicted_calls']} |")
    lines += [f"| peak during the storm | {r['during']['peak_rss_mib']} | {r['during']['peak_open_fds']} | | | | |", "",
              f"Server log: {lg['lines']:,} lines, {lg['bytes']:,} bytes ({lg['access_lines']:,} access-log lines, "
              f"{lg['connection_event_lines']:,} connection-event lines, {lg['suppressed_notes']:,} of them noting "
              f"suppressed lines; {lg['tracebacks']} tracebacks{': ' if lg['tracebacks'] else ''}"
              + "; ".join(f"`{t}`" for t in lg["traceback_endings"]) + ").", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few hundred requests (a test), shorter timeouts")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--budget", type=float, default=None, help="seconds after which attack jobs stop (default: 60 "
                                                               "with --quick, 600)")
    args = ap.parse_args(argv)
    budget = args.budget if args.budget is not None else (60.0 if args.quick else 600.0)
    with tempfile.TemporaryDirectory(prefix="zkref-soak-") as tmp:
        data = soak(quick=args.quick, budget=budget, work=Path(tmp))
    write_results(args.results, "soak", data, markdown(data))
    print(markdown(data))
    h = data["honest"]
    ok = (data["attack"]["status_5xx"] == 0 and h["status_5xx"] == 0 and h["all_verified"]
          and h["kept_as_its_own_quota_says"] and h["visible_to_attacker"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
