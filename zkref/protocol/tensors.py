"""Tensors on the wire: safetensors bytes, encoded deterministically and decoded strictly against a spec.

safetensors is 8 bytes (little-endian header length N), N bytes of a JSON header {name: {dtype, shape,
data_offsets}, optional "__metadata__": {str: str}}, then the raw little-endian tensor bytes. It carries no code,
so decoding it can never run anything (unlike pickle). The decoder here is written out in full rather than
delegated to the `safetensors` package because a server must refuse, with a reason, everything that is not exactly
what the protocol expects — and must do so before allocating anything sized by the request:

- the header is at most `MAX_HEADER_BYTES`, UTF-8 JSON, an object with no duplicate keys and no NaN/Infinity;
- exactly the expected tensor names, each with exactly the keys dtype, shape, data_offsets;
- the expected dtype, and a shape within the spec's bounds (checked before the byte count is computed);
- the data offsets tile the data region exactly: no gap, no overlap, no trailing byte.

`encode_tensors` writes files the `safetensors` package reads, and `decode_tensors` reads what it writes (tests
round-trip both ways; the package orders tensors by alignment, this encoder by name: both are valid).
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MAX_HEADER_BYTES = 64 << 10
"""A protocol message holds a few tensors: its header is a few hundred bytes. Anything longer is refused unread."""
MAX_METADATA_ENTRIES = 16
MAX_METADATA_CHARS = 1024

DTYPES: dict[str, np.dtype] = {
    "I8": np.dtype("<i1"), "I16": np.dtype("<i2"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"),
    "U8": np.dtype("<u1"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
}
_NAMES = {v: k for k, v in DTYPES.items()}


class TensorFormatError(ValueError):
    """The bytes are not the safetensors message the protocol expects; the message says what differs."""


@dataclass(frozen=True)
class Dim:
    """One dimension of an expected shape: exactly `lo` when lo == hi, else any size in [lo, hi]."""

    lo: int
    hi: int

    def __post_init__(self) -> None:
        if not 0 <= self.lo <= self.hi:
            raise ValueError(f"bad dimension bounds [{self.lo}, {self.hi}]")

    @classmethod
    def exactly(cls, n: int) -> "Dim":
        return cls(n, n)

    def accepts(self, n: int) -> bool:
        return self.lo <= n <= self.hi

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}..{self.hi}"


@dataclass(frozen=True)
class TensorSpec:
    """What one named tensor must be: its safetensors dtype name and the bounds of each dimension."""

    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}")

    def describe(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


def encode_tensors(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """safetensors bytes of `tensors` (names sorted, data in that order, header padded with spaces to 8 bytes)."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks, offset = [], 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dtype not in _NAMES:
            raise ValueError(f"tensor {name!r}: dtype {arr.dtype} has no safetensors name here")
        data = np.ascontiguousarray(arr, dtype=dtype).tobytes()
        header[name] = {"dtype": _NAMES[dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise TensorFormatError("header has duplicate keys")
    return dict(pairs)


def _no_constants(token: str) -> object:
    raise TensorFormatError(f"header holds {token}, which is not JSON")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def decode_tensors(data: bytes, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """Decode safetensors `data` holding exactly the tensors of `specs`; TensorFormatError naming what is wrong.

    Returned arrays are native-endian copies (writeable, independent of `data`).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TensorFormatError("tensors must be bytes")
    data = bytes(data)
    if len(data) < 8:
        raise TensorFormatError(f"{len(data)} bytes is too short for a safetensors message (8-byte header length)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise TensorFormatError(f"header length {n} exceeds the {MAX_HEADER_BYTES} allowed")
    if 8 + n > len(data):
        raise TensorFormatError(f"header length {n} runs past the end of the {len(data)}-byte message (truncated?)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates,
                            parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise TensorFormatError(f"header is not UTF-8 JSON ({str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise TensorFormatError("header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None:
        if not isinstance(meta, dict) or len(meta) > MAX_METADATA_ENTRIES or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= MAX_METADATA_CHARS
                for k, v in meta.items()):
            raise TensorFormatError("__metadata__ must be a small object of strings")
    if set(header) != set(specs):
        missing, extra = sorted(set(specs) - set(header)), sorted(set(header) - set(specs))
        raise TensorFormatError(f"expected tensors {sorted(specs)}: missing {missing[:4]}, unexpected "
                                f"{[e[:40] for e in extra[:4]]}")
    region = len(data) - 8 - n
    spans: list[tuple[int, int, str, tuple[int, ...]]] = []
    for name, spec in specs.items():
        entry = header[name]
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise TensorFormatError(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
        if entry["dtype"] != spec.dtype:
            raise TensorFormatError(f"tensor {name!r}: dtype {str(entry['dtype'])[:16]!r}, expected {spec.dtype}")
        shape = entry["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            raise TensorFormatError(f"tensor {name!r}: shape must be a list of integers")
        if len(shape) != len(spec.shape) or not all(d.accepts(s) for d, s in zip(spec.shape, shape)):
            raise TensorFormatError(f"tensor {name!r}: shape {shape[:8]} does not fit {spec.describe()}")
        offsets = entry["data_offsets"]
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
            raise TensorFormatError(f"tensor {name!r}: data_offsets must be two integers")
        begin, end = offsets
        expected = math.prod(shape) * DTYPES[spec.dtype].itemsize
        if not 0 <= begin <= end <= region or end - begin != expected:
            raise TensorFormatError(f"tensor {name!r}: data_offsets {offsets} do not hold {expected} bytes inside "
                                    f"the {region}-byte data region")
        spans.append((begin, end, name, tuple(shape)))
    spans.sort()
    position = 0
    for begin, end, name, _ in spans:
        if begin != position:
            raise TensorFormatError(f"tensor {name!r}: data does not follow the previous tensor's (gap or overlap)")
        position = end
    if position != region:
        raise TensorFormatError(f"{region - position} trailing bytes after the last tensor")
    out: dict[str, np.ndarray] = {}
    for begin, end, name, shape in spans:
        raw = np.frombuffer(data, dtype=DTYPES[specs[name].dtype], count=math.prod(shape), offset=8 + n + begin)
        out[name] = raw.reshape(shape).astype(DTYPES[specs[name].dtype].newbyteorder("="), copy=True)
    return out
