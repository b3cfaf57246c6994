"""JSON from untrusted bytes, bounded in size and nesting before the standard parser sees it.

Python's `json` recurses once per nesting level: a few hundred thousand `[` make it raise RecursionError (or, with a
raised recursion limit, overflow the C stack), and later recursive walks of a parsed object (comparison, dumping)
fail the same way. `parse_json` measures the nesting depth first, vectorised (string contents are removed, then the
running count of brackets is taken with numpy), and refuses anything deeper than a protocol ever needs.
"""
from __future__ import annotations

import json
import re

import numpy as np

MAX_JSON_DEPTH = 64
"""No zkref or EZKL document nests deeper than a dozen levels; 64 leaves room and stays far from any stack limit."""
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(data: bytes) -> int:
    """The deepest nesting of `[`/`{` in JSON text `data` (brackets inside strings do not count)."""
    stripped = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    if not stripped.size:
        return 0
    step = (np.isin(stripped, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(stripped, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(step).max(initial=0))


def parse_json(data: bytes | str, *, what: str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> object:
    """`json.loads(data)` for untrusted `data`: ValueError naming `what` if it exceeds `max_bytes`, nests deeper than
    `max_depth`, or is not UTF-8 JSON (duplicate keys are not checked here; NaN and Infinity are refused)."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise ValueError(f"{what}: {len(raw):,} bytes exceed {max_bytes:,}")
    depth = json_depth(raw)
    if depth > max_depth:
        raise ValueError(f"{what}: JSON nested {depth} levels deep (at most {max_depth})")

    def no_constant(name: str) -> None:
        raise ValueError(f"{what}: {name} is not JSON")

    try:
        return json.loads(raw, parse_constant=no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{what}: not JSON ({exc})") from None
