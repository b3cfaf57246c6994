"""Calls by id, each owned by the client that made it, with memory bounded per client and overall.

The rule (specs/protocol.md, "Stored results"): a finished call is kept `ttl` seconds. Each client (a bearer token, or
a peer address without auth) holds at most `max_results_per_client` calls and `max_bytes_per_client` bytes of
answers: beyond either, that client's own oldest finished calls are evicted — one client's calls never evict
another's results. Overall at most `max_results` calls and `max_bytes` bytes are held; should the clients together
reach that, the oldest finished call of the client holding the most (calls or bytes, whichever bound is hit) is
evicted, so a client holding no more than an equal share of the global bound is never evicted by others. Calls not
yet finished are never evicted: the server admits at most its queue bound of them, below every result bound.
A call is visible only to its owner: `get` answers None for another client's call id, as for an unknown one.
"""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Protocol


class StoredCall(Protocol):
    """What the store needs of a call: its id, the event set when it finishes, and the bytes its answer holds."""

    call_id: str
    done: asyncio.Event

    @property
    def size(self) -> int: ...


@dataclass(eq=False)
class _Entry:
    record: StoredCall
    owner: str
    finished_at: float | None = None
    size: int = 0


@dataclass(eq=False)
class _Client:
    pending: int = 0
    finished: collections.OrderedDict[str, _Entry] = field(default_factory=collections.OrderedDict)
    bytes: int = 0

    @property
    def count(self) -> int:
        return self.pending + len(self.finished)


class CallStore:
    """Every call by id with its owner, bounded as the module docstring says."""

    def __init__(self, *, ttl: float, max_results: int, max_bytes: int, max_results_per_client: int,
                 max_bytes_per_client: int):
        if not 1 <= max_results_per_client <= max_results or not 1 <= max_bytes_per_client <= max_bytes:
            raise ValueError("per-client result bounds must be positive and at most the global ones")
        self.ttl, self.max_results, self.max_bytes = ttl, max_results, max_bytes
        self.max_results_per_client, self.max_bytes_per_client = max_results_per_client, max_bytes_per_client
        self.calls: dict[str, _Entry] = {}
        self.finished: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        """Finished calls of every client, oldest first (the order they expire in)."""
        self.clients: dict[str, _Client] = {}
        self.bytes = 0
        self.evicted = 0

    # -- the store's interface -----------------------------------------------------------------------------------
    def add(self, record: StoredCall, *, owner: str) -> None:
        """Store a new (unfinished) call of `owner`, first evicting what the bounds require (see the module
        docstring)."""
        self._expire()
        own = self.clients.get(owner)
        while own is not None and own.count + 1 > self.max_results_per_client and own.finished:
            self._evict(next(iter(own.finished.values())))
            own = self.clients.get(owner)
        while len(self.calls) + 1 > self.max_results and self._evict_largest(by_bytes=False):
            pass
        self.calls[record.call_id] = _Entry(record, owner)
        self.clients.setdefault(owner, _Client()).pending += 1

    def get(self, call_id: str, *, owner: str) -> StoredCall | None:
        """`owner`'s call `call_id`; None if unknown, evicted, or another client's."""
        self._expire()
        entry = self.calls.get(call_id)
        return entry.record if entry is not None and entry.owner == owner else None

    def pending(self, owner: str) -> int:
        """How many of `owner`'s calls are not finished (queued or proving)."""
        client = self.clients.get(owner)
        return client.pending if client is not None else 0

    def finish(self, record: StoredCall) -> None:
        """The call's answer is final: count its bytes, wake whoever waits for it, then evict as the bounds require
        (an answer larger than its client's byte bound is evicted at once)."""
        entry = self.calls.get(record.call_id)
        if entry is not None and entry.finished_at is None:
            client = self.clients[entry.owner]
            entry.finished_at, entry.size = time.monotonic(), record.size
            client.pending -= 1
            client.finished[record.call_id] = entry
            client.bytes += entry.size
            self.bytes += entry.size
            self.finished[record.call_id] = entry
            while client.bytes > self.max_bytes_per_client and client.finished:
                self._evict(next(iter(client.finished.values())))
        record.done.set()
        while self.bytes > self.max_bytes and self._evict_largest(by_bytes=True):
            pass
        self._expire()

    # -- eviction --------------------------------------------------------------------------------------------------
    def _expire(self) -> None:
        now = time.monotonic()
        while self.finished:
            entry = next(iter(self.finished.values()))
            if now - entry.finished_at <= self.ttl:
                break
            self._evict(entry)

    def _evict_largest(self, *, by_bytes: bool) -> bool:
        """Evict the oldest finished call of the client holding the most calls (or bytes); False if none is
        finished."""
        holders = [c for c in self.clients.values() if c.finished]
        if not holders:
            return False
        largest = max(holders, key=(lambda c: c.bytes) if by_bytes else (lambda c: c.count))
        self._evict(next(iter(largest.finished.values())))
        return True

    def _evict(self, entry: _Entry) -> None:
        call_id = entry.record.call_id
        client = self.clients[entry.owner]
        del client.finished[call_id]
        client.bytes -= entry.size
        self.bytes -= entry.size
        del self.finished[call_id]
        del self.calls[call_id]
        self.evicted += 1
        if client.count == 0:
            del self.clients[entry.owner]
