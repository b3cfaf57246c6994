"""Shared timing helper for the benchmark scripts (timings live in benchmarks/results, never in test asserts)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best_of(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """Run fn `repeat` times; return the fastest wall-clock time in seconds and the last result."""
    times, result = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result
