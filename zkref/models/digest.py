"""Base-model digest: one Poseidon field element binding every tensor (name, dtype, shape, raw bytes) of a model.

Only `*.safetensors` files are read (their header is parsed here; tensor bytes are streamed), never pickles.
Two formats (specs/commitments.md, "Base-model digest"):

"zkref-model-digest/2" (default): each tensor's raw bytes are hashed with SHA-256, then Poseidon combines the hashes:
    tensor elements = [len(name_utf8), name chunks…, dtype code, ndim, dims…, n_bytes, sha256_hi, sha256_lo]
    sha256_hi/lo    = the 32-byte SHA-256 of the tensor's bytes, first/last 16 bytes read big-endian (< 2^128)
    tensor digest   = poseidon_hash(tensor elements)
    model digest    = poseidon_hash([FORMAT_TAGS[/2], n_tensors, tensor digests… in name order])
  SHA-256 (hashlib → OpenSSL, SHA-NI here: ~1.1–1.4 GB/s per core, and it releases the GIL) runs in threads, one task
  per tensor, largest first, streaming 1 MiB reads: disk-bound on this machine. BLAKE2b measured 0.53 GB/s per core
  (hashlib's portable C), so SHA-256 is both faster here and the hash with standard circuit gadgets.
"zkref-model-digest/1" (the old format, still available): Poseidon over every byte, 31 bytes per field element
  (`tensor elements = [header…, data chunks…]`), in worker processes: ~0.6 MB/s, hours for a multi-GB model.

The result is cached beside the model in `zkref-digest.json` with its format version and a fingerprint of each
safetensors file (/1: the file's SHA-256; /2: size, mtime and the SHA-256 of its header, so a cache hit costs no
full read — a full read is what recomputing /2 costs anyway).
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import multiprocessing as mp
import os
import struct
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from zkref.primitives.field import P
from zkref.primitives.poseidon import CAPACITY_INIT, poseidon_hash_fast, sponge_absorb_fast

__all__ = [
    "FORMAT_V1", "FORMAT_V2", "FORMATS", "FORMAT_VERSION", "FORMAT_TAGS", "CACHE_FILENAME", "BYTES_PER_ELEMENT",
    "DTYPE_CODES", "READ_CHUNK_BYTES",
    "TensorDigest", "ModelDigest", "TensorEntry", "model_digest", "read_safetensors_header", "tensor_entries",
    "bytes_to_elements", "tensor_header_elements", "hash_tensor_bytes", "sha256_elements", "tensor_digest_v2",
    "combine_tensor_digests",
]

FORMAT_V1 = "zkref-model-digest/1"
"""The old format: Poseidon over every 31-byte chunk of every tensor (~0.6 MB/s)."""
FORMAT_V2 = "zkref-model-digest/2"
"""SHA-256 per tensor, Poseidon over names, dtypes, shapes and the hashes (disk-bound)."""
FORMATS = (FORMAT_V1, FORMAT_V2)
FORMAT_VERSION = FORMAT_V2
"""The default format."""
FORMAT_TAGS = {v: int.from_bytes(v.encode("ascii"), "little") for v in FORMATS}
"""First element of the model-level hash: the format version's ASCII bytes read little-endian (< 2^248)."""
CACHE_FILENAME = "zkref-digest.json"
BYTES_PER_ELEMENT = 31
"""/1: 31 bytes = 248 bits < log2(p): every data chunk is a canonical field element, no reduction, no collisions."""
BLOCK_ELEMENTS = 4096
"""/1: elements hashed between reads/progress updates (~0.3 s of work)."""
READ_CHUNK_BYTES = 1 << 20
"""/2: bytes per read into each worker's reused buffer (1 MiB stays in cache between the copy and the hash; 8 MiB
measured no faster). Memory use is workers × this, whatever the model size."""
MAX_HEADER_BYTES = 100 * 1024 * 1024
IN_PROCESS_BELOW = 50_000
"""/1 with workers=None: models under this many elements (~4 s of hashing) skip the process pool (~1 s to start)."""
MAX_WORKERS = 64

DTYPE_CODES: dict[str, tuple[int, int]] = {
    # safetensors dtype: (code hashed into the header, bytes per element)
    "BOOL": (1, 1), "U8": (2, 1), "I8": (3, 1), "F8_E5M2": (4, 1), "F8_E4M3": (5, 1),
    "I16": (6, 2), "U16": (7, 2), "F16": (8, 2), "BF16": (9, 2),
    "I32": (10, 4), "U32": (11, 4), "F32": (12, 4),
    "F64": (13, 8), "I64": (14, 8), "U64": (15, 8),
}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _check_format(format_version: object) -> str:
    if format_version not in FORMATS:
        raise ValueError(f"unknown digest format {format_version!r} (known: {', '.join(FORMATS)})")
    return format_version  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorDigest:
    """One tensor's identity and Poseidon digest; with /2 also the SHA-256 of its bytes (what the digest opens to)."""
    name: str
    dtype: str
    shape: tuple[int, ...]
    n_bytes: int
    digest: int
    sha256: bytes | None = None
    """/2: the 32-byte SHA-256 of the tensor's raw bytes; None for /1."""

    @property
    def n_parameters(self) -> int:
        return math.prod(self.shape)

    def n_elements(self, format_version: str) -> int:
        """Field elements this tensor's sponge absorbs in the given format."""
        header = len(tensor_header_elements(self.name, self.dtype, self.shape, self.n_bytes))
        return header + (2 if format_version == FORMAT_V2 else _n_chunks(self.n_bytes))


@dataclass(frozen=True)
class ModelDigest:
    """The base-model digest and what it covers. `files` and `from_cache` record provenance and are not compared."""
    digest: int
    format_version: str
    n_tensors: int
    n_parameters: int
    n_bytes: int
    tensors: tuple[TensorDigest, ...]
    files: tuple[tuple[str, str], ...] = field(compare=False)
    """(file name, fingerprint) of each safetensors file read, sorted by name (the cache key): /1 the file's SHA-256
    hex; /2 "size=…;mtime_ns=…;header_sha256=…"."""
    from_cache: bool = field(default=False, compare=False)

    @property
    def hex(self) -> str:
        """The digest as 0x + 64 big-endian hex digits."""
        return f"0x{self.digest:064x}"

    @property
    def n_elements(self) -> int:
        """Field elements absorbed over all tensor sponges (headers, and data chunks (/1) or hash halves (/2))."""
        return sum(t.n_elements(self.format_version) for t in self.tensors)

    def to_json(self) -> dict:
        return {
            "format_version": self.format_version,
            "digest": self.hex,
            "n_tensors": self.n_tensors,
            "n_parameters": self.n_parameters,
            "n_bytes": self.n_bytes,
            "files": {name: sha for name, sha in self.files},
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "n_bytes": t.n_bytes,
                         "digest": f"0x{t.digest:064x}"} | ({} if t.sha256 is None else {"sha256": t.sha256.hex()})
                        for t in self.tensors],
        }

    @classmethod
    def from_json(cls, data: dict, *, from_cache: bool = False) -> ModelDigest:
        """Rebuild from `to_json` output; ValueError unless it is complete and internally consistent.

        Consistency: counts match the records, names sorted and unique, dtypes known, byte counts match the shapes,
        the model digest recomputes from the tensor digests and, for /2, every tensor digest recomputes from its
        name, dtype, shape, n_bytes and SHA-256.
        """
        try:
            version = _check_format(data["format_version"])
            tensors = tuple(TensorDigest(str(t["name"]), str(t["dtype"]), tuple(int(d) for d in t["shape"]),
                                         int(t["n_bytes"]), _parse_hex_felt(t["digest"]),
                                         _parse_sha256(t["sha256"]) if version == FORMAT_V2 else None)
                            for t in data["tensors"])
            if version == FORMAT_V1 and any("sha256" in t for t in data["tensors"]):
                raise ValueError("a /1 record has per-tensor sha256 fields")
            result = cls(digest=_parse_hex_felt(data["digest"]), format_version=version,
                         n_tensors=int(data["n_tensors"]), n_parameters=int(data["n_parameters"]),
                         n_bytes=int(data["n_bytes"]),
                         tensors=tensors, files=tuple(sorted((str(k), str(v)) for k, v in data["files"].items())),
                         from_cache=from_cache)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed model digest record: {e!r}") from e
        names = [t.name for t in tensors]
        if names != sorted(names) or len(set(names)) != len(names):
            raise ValueError("tensor records are not sorted by unique name")
        if (result.n_tensors != len(tensors) or result.n_bytes != sum(t.n_bytes for t in tensors)
                or result.n_parameters != sum(t.n_parameters for t in tensors)):
            raise ValueError("tensor counts do not match the tensor records")
        if any(t.dtype not in DTYPE_CODES or t.n_bytes != t.n_parameters * DTYPE_CODES[t.dtype][1] for t in tensors):
            raise ValueError("a tensor record has an unknown dtype or inconsistent byte count")
        if version == FORMAT_V2 and any(
                tensor_digest_v2(t.name, t.dtype, t.shape, t.n_bytes, t.sha256) != t.digest  # type: ignore[arg-type]
                for t in tensors):
            raise ValueError("a tensor digest does not match its name, dtype, shape, size and SHA-256")
        if combine_tensor_digests([t.digest for t in tensors], version) != result.digest:
            raise ValueError("model digest does not match its tensor digests")
        return result


def _parse_sha256(s: object) -> bytes:
    if not isinstance(s, str) or len(s) != 64 or any(c not in "0123456789abcdef" for c in s):
        raise ValueError(f"expected 64 lowercase hex digits of SHA-256, got {s!r}")
    return bytes.fromhex(s)


def _parse_hex_felt(s: object) -> int:
    if not isinstance(s, str) or not s.startswith("0x") or len(s) != 66:
        raise ValueError(f"expected 0x + 64 hex digits, got {s!r}")
    v = int(s, 16)
    if v >= P:
        raise ValueError(f"{s} is not a field element")
    return v


# ----------------------------------------------------------------------------------------------------------------------
# safetensors files: header parsing (no pickle, no framework)
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes live: file, absolute byte offset, length, plus its dtype and shape."""
    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int
    n_bytes: int


def read_safetensors_header(path: str | os.PathLike) -> list[TensorEntry]:
    """Parse a safetensors file's header (8-byte LE length, JSON) and validate every tensor's offsets and size."""
    return _read_header(Path(path))[0]


def _read_header(path: Path) -> tuple[list[TensorEntry], str]:
    """The validated tensor entries and the SHA-256 hex of the file's first 8 + N bytes (length and header)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path.name}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ValueError(f"{path.name}: header length {n} is implausible for a {size}-byte file")
        raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path.name}: header is not UTF-8 JSON: {e}") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path.name}: header is not a JSON object")
    data_start, data_len = 8 + n, size - 8 - n
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue  # free-form strings; not part of the digest
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path.name}: tensor {name!r} has a malformed header entry") from e
        if dtype not in DTYPE_CODES:
            raise ValueError(f"{path.name}: tensor {name!r} has unsupported dtype {dtype!r} "
                             f"(supported: {', '.join(DTYPE_CODES)})")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise ValueError(f"{path.name}: tensor {name!r} has a malformed shape {shape!r}")
        if not all(isinstance(o, int) and not isinstance(o, bool) for o in (begin, end)) \
                or not 0 <= begin <= end <= data_len:
            raise ValueError(f"{path.name}: tensor {name!r} has data offsets {[begin, end]} outside the file")
        expected = math.prod(shape) * DTYPE_CODES[dtype][1]
        if end - begin != expected:
            raise ValueError(f"{path.name}: tensor {name!r} spans {end - begin} bytes, but {dtype}{shape} "
                             f"needs {expected}")
        entries.append(TensorEntry(name, dtype, tuple(shape), path, data_start + begin, end - begin))
    spans = sorted((e.offset, e.offset + e.n_bytes) for e in entries if e.n_bytes)
    if any(a_end > b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])):
        raise ValueError(f"{path.name}: tensor data regions overlap")
    return entries, hashlib.sha256(head + raw).hexdigest()


def _safetensors_files(model_dir: Path) -> list[Path]:
    if model_dir.exists() and not model_dir.is_dir():
        raise NotADirectoryError(f"{model_dir} is not a directory (give the model's directory)")
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    files = sorted(p for p in model_dir.glob("*.safetensors") if p.is_file())
    if not files:
        pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        if pickles:
            raise ValueError(f"{model_dir} holds only pickled weights ({', '.join(pickles)}) and no *.safetensors: "
                             "zkref never unpickles. Re-save the model with safetensors "
                             "(e.g. model.save_pretrained(dir, safe_serialization=True)) from a trusted environment.")
        raise ValueError(f"{model_dir} holds no *.safetensors files")
    return files


def tensor_entries(model_dir: str | os.PathLike) -> list[TensorEntry]:
    """All tensors of all `*.safetensors` files in the directory, sorted by name; duplicate names are an error."""
    return _sorted_entries([e for path in _safetensors_files(Path(model_dir)) for e in read_safetensors_header(path)])


def _sorted_entries(entries: list[TensorEntry]) -> list[TensorEntry]:
    entries = sorted(entries, key=lambda e: e.name)
    for a, b in zip(entries, entries[1:]):
        if a.name == b.name:
            raise ValueError(f"tensor {a.name!r} appears in both {a.path.name} and {b.path.name}")
    return entries


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------------
# The element encoding and the hashes
# ----------------------------------------------------------------------------------------------------------------------

def _n_chunks(n_bytes: int) -> int:
    return -(-n_bytes // BYTES_PER_ELEMENT)


def bytes_to_elements(data: bytes | memoryview) -> list[int]:
    """Cut bytes into 31-byte chunks, each read little-endian (the last may be shorter): field elements < 2^248."""
    view = memoryview(data)
    return [int.from_bytes(view[i: i + BYTES_PER_ELEMENT], "little") for i in range(0, len(view), BYTES_PER_ELEMENT)]


def tensor_header_elements(name: str, dtype: str, shape: tuple[int, ...], n_bytes: int) -> list[int]:
    """[len(name_utf8), name chunks…, dtype code, ndim, dims…, n_bytes]: self-delimiting, so no two tensors collide."""
    name_bytes = name.encode("utf-8")
    return [len(name_bytes), *bytes_to_elements(name_bytes), DTYPE_CODES[dtype][0], len(shape), *shape, n_bytes]


def hash_tensor_bytes(header: list[int], data: bytes) -> int:
    """/1 tensor digest from its header elements and raw bytes held in memory (the streaming path gives the same)."""
    return poseidon_hash_fast(header + bytes_to_elements(data))


def sha256_elements(sha256: bytes) -> list[int]:
    """/2: a 32-byte SHA-256 as two field elements [first 16 bytes, last 16 bytes], each read big-endian (< 2^128).

    Big-endian halves keep the familiar hex: f"{hi:032x}{lo:032x}" == sha256.hex().
    """
    if len(sha256) != 32:
        raise ValueError(f"a SHA-256 is 32 bytes, got {len(sha256)}")
    return [int.from_bytes(sha256[:16], "big"), int.from_bytes(sha256[16:], "big")]


def tensor_digest_v2(name: str, dtype: str, shape: tuple[int, ...], n_bytes: int, sha256: bytes) -> int:
    """/2 tensor digest: poseidon_hash(header elements + [sha256_hi, sha256_lo])."""
    return poseidon_hash_fast(tensor_header_elements(name, dtype, shape, n_bytes) + sha256_elements(sha256))


def combine_tensor_digests(digests: list[int], format_version: str = FORMAT_VERSION) -> int:
    """Model digest: poseidon_hash([FORMAT_TAGS[format_version], n_tensors, digests… in tensor-name order])."""
    return poseidon_hash_fast([FORMAT_TAGS[_check_format(format_version)], len(digests), *digests])


_progress_counter = None  # a multiprocessing Value in worker processes


def _init_worker(counter) -> None:
    global _progress_counter
    _progress_counter = counter


def _hash_entry(path: str, offset: int, n_bytes: int, header: list[int], report=None) -> int:
    """Stream one tensor's bytes from disk through the sponge, BLOCK_ELEMENTS chunks at a time."""
    state = sponge_absorb_fast((0, CAPACITY_INIT), header)
    block = BLOCK_ELEMENTS * BYTES_PER_ELEMENT
    remaining = n_bytes
    with open(path, "rb") as f:
        f.seek(offset)
        while remaining:
            data = f.read(min(block, remaining))
            if not data:
                raise ValueError(f"{path}: file ended inside a tensor (was it modified while hashing?)")
            remaining -= len(data)
            elements = bytes_to_elements(data)
            state = sponge_absorb_fast(state, elements)
            if report is not None:
                report(len(elements))
            elif _progress_counter is not None:
                with _progress_counter.get_lock():
                    _progress_counter.value += len(elements)
    return state[0]


def _worker_task(args: tuple[str, int, int, list[int]]) -> int:
    return _hash_entry(*args)


def _pool_context():
    """fork where available: workers need no re-import of __main__ (spawn would re-run unguarded user scripts).

    The pool forks all its workers at the first submit, before the progress bar starts its refresh thread.
    """
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _hash_all_v1(entries: list[TensorEntry], workers: int, progress: bool) -> list[int]:
    headers = [tensor_header_elements(e.name, e.dtype, e.shape, e.n_bytes) for e in entries]
    total = sum(_n_chunks(e.n_bytes) for e in entries)
    digests: list[int | None] = [None] * len(entries)
    if workers <= 1:
        bar = _ProgressBar(total, progress)
        try:
            for i, (e, h) in enumerate(zip(entries, headers)):
                digests[i] = _hash_entry(str(e.path), e.offset, e.n_bytes, h, report=bar.advance)
        finally:
            bar.close()
        return [int(d) for d in digests]  # type: ignore[arg-type]
    ctx = _pool_context()
    counter = ctx.Value("q", 0)
    order = sorted(range(len(entries)), key=lambda i: -entries[i].n_bytes)  # largest first balances the load
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(counter,)) as pool:
        futures = {pool.submit(_worker_task, (str(entries[i].path), entries[i].offset, entries[i].n_bytes,
                                              headers[i])): i for i in order}
        bar = _ProgressBar(total, progress)  # only now: no extra thread exists when the pool forks
        pending = set(futures)
        try:
            while pending:
                done, pending = cf.wait(pending, timeout=0.25, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    digests[futures[fut]] = fut.result()
                bar.update(counter.value)
        except BaseException:  # an error or Ctrl-C: drop queued tensors instead of hashing them all first
            for fut in pending:
                fut.cancel()
            raise
        finally:
            bar.close()
    return [int(d) for d in digests]  # type: ignore[arg-type]


def _sha256_span(path: Path, offset: int, n_bytes: int, advance, stop: threading.Event) -> bytes:
    """/2: SHA-256 of n_bytes at offset, read in READ_CHUNK_BYTES pieces into one reused buffer (bounded memory).

    Plain reads, not mmap: a file truncated while it is hashed gives a short read (a ValueError here), where an
    mmap would kill the process with SIGBUS. hashlib releases the GIL while hashing, so threads run in parallel.
    """
    h = hashlib.sha256()
    buf = memoryview(bytearray(min(READ_CHUNK_BYTES, max(n_bytes, 1))))
    remaining = n_bytes
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while remaining:
            if stop.is_set():
                raise cf.CancelledError()
            got = f.readinto(buf[:min(len(buf), remaining)])
            if not got:
                raise ValueError(f"{path}: file ended inside a tensor (was it modified while hashing?)")
            h.update(buf[:got])
            remaining -= got
            advance(got)
    return h.digest()


def _hash_all_v2(entries: list[TensorEntry], workers: int, progress: bool) -> list[bytes]:
    """SHA-256 of every tensor's bytes: one task per tensor, largest first, over `workers` threads."""
    total = sum(e.n_bytes for e in entries)
    hashes: list[bytes | None] = [None] * len(entries)
    stop = threading.Event()
    bar = _ProgressBar(total, progress, unit="bytes")
    order = sorted(range(len(entries)), key=lambda i: -entries[i].n_bytes)  # largest first balances the load
    try:
        with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zkref-digest") as pool:
            futures = {pool.submit(_sha256_span, entries[i].path, entries[i].offset, entries[i].n_bytes,
                                   bar.advance, stop): i for i in order}
            pending = set(futures)
            try:
                while pending:
                    done, pending = cf.wait(pending, timeout=0.25, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        hashes[futures[fut]] = fut.result()
            except BaseException:  # an error or Ctrl-C: stop the running reads, drop the queued ones
                stop.set()
                for fut in pending:
                    fut.cancel()
                raise
    finally:
        bar.close()
    return [bytes(h) for h in hashes]  # type: ignore[arg-type]


class _ProgressBar:
    """A rich progress bar on stderr counting hashed field elements (/1) or bytes (/2); a no-op when disabled.

    advance() may be called from several threads: rich's Progress serialises updates with its own lock.
    """

    def __init__(self, total: int, enabled: bool, unit: str = "elements"):
        self._progress = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)

        counts = ((DownloadColumn(binary_units=False), TransferSpeedColumn()) if unit == "bytes"
                  else (MofNCompleteColumn(), TextColumn("elements")))
        self._progress = Progress(TextColumn("model digest"), BarColumn(), *counts, TimeElapsedColumn(),
                                  TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False)
        self._task = self._progress.add_task("hash", total=total)
        self._progress.start()

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, completed: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


# ----------------------------------------------------------------------------------------------------------------------
# Cache and entry point
# ----------------------------------------------------------------------------------------------------------------------

MAX_CACHE_BYTES = 64 << 20
"""A cache record is ~250 bytes per tensor: 64 MiB covers 250,000 tensors; a larger file is ignored, not read."""


def _load_cache(cache_path: Path, format_version: str, files: tuple[tuple[str, str], ...]) -> ModelDigest | None:
    """The cached record if it is sound, of this format and for exactly these files; otherwise None."""
    try:
        if cache_path.stat().st_size > MAX_CACHE_BYTES:
            return None
        with open(cache_path, "rb") as f:
            data = json.loads(f.read(MAX_CACHE_BYTES + 1).decode("utf-8"))
        cached = ModelDigest.from_json(data, from_cache=True)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None  # missing, corrupt or unreadable: recompute and rewrite
    return cached if cached.format_version == format_version and cached.files == files else None


def _write_cache(cache_path: Path, result: ModelDigest) -> None:
    tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, cache_path)
    except OSError as e:  # read-only model directory: the digest is still valid, only not cached
        print(f"zkref: could not write digest cache {cache_path}: {e}", file=sys.stderr)
        tmp.unlink(missing_ok=True)


def _fingerprints(paths: list[Path], format_version: str) -> tuple[tuple[tuple[str, str], ...], list[TensorEntry]]:
    """(file name, fingerprint) pairs sorted by name — the cache key — and every file's validated tensor entries.

    /1: the whole file's SHA-256 (negligible beside hashing every byte with Poseidon).
    /2: "size=…;mtime_ns=…;header_sha256=…": a cache hit reads only the headers. A full-file SHA-256 would cost a
    full read, which is what recomputing the /2 digest costs anyway.
    """
    files, entries = [], []
    for path in paths:
        file_entries, header_sha = _read_header(path)
        entries.extend(file_entries)
        if format_version == FORMAT_V1:
            files.append((path.name, _sha256(path)))
        else:
            size, mtime_ns = _stat_key(path)
            files.append((path.name, f"size={size};mtime_ns={mtime_ns};header_sha256={header_sha}"))
    return tuple(sorted(files)), _sorted_entries(entries)


def model_digest(model_dir: str | os.PathLike, *, progress: bool = True, use_cache: bool = True,
                 workers: int | None = None, format_version: str = FORMAT_VERSION) -> ModelDigest:
    """Digest every tensor of the `*.safetensors` files in `model_dir` (default format "zkref-model-digest/2").

    format_version: "zkref-model-digest/2" (SHA-256 per tensor, Poseidon over the hashes) or the old
    "zkref-model-digest/1" (Poseidon over every byte).
    workers: /2 threads / /1 processes hashing tensors in parallel (None: one per CPU; /1 in-process for tiny models).
    use_cache: reuse/refresh `zkref-digest.json` beside the model when it holds this format and every file's
    fingerprint still matches.
    progress: a rich progress bar on stderr (bytes for /2, field elements for /1).
    """
    _check_format(format_version)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 1 <= workers <= MAX_WORKERS):
        raise ValueError(f"workers must be an int in 1..{MAX_WORKERS} or None, got {workers!r}")
    model_dir = Path(model_dir)
    paths = _safetensors_files(model_dir)
    before = {p: _stat_key(p) for p in paths}
    files, entries = _fingerprints(paths, format_version)
    cache_path = model_dir / CACHE_FILENAME
    if use_cache and (cached := _load_cache(cache_path, format_version, files)) is not None:
        return cached
    n_workers = workers if workers is not None else min(os.cpu_count() or 1, MAX_WORKERS)
    if format_version == FORMAT_V2:
        hashes = _hash_all_v2(entries, max(1, min(n_workers, len(entries))), progress)
        tensors = tuple(TensorDigest(e.name, e.dtype, e.shape, e.n_bytes,
                                     tensor_digest_v2(e.name, e.dtype, e.shape, e.n_bytes, h), h)
                        for e, h in zip(entries, hashes))
    else:
        if workers is None and sum(_n_chunks(e.n_bytes) for e in entries) < IN_PROCESS_BELOW:
            n_workers = 1
        digests = _hash_all_v1(entries, max(1, min(n_workers, len(entries))), progress)
        tensors = tuple(TensorDigest(e.name, e.dtype, e.shape, e.n_bytes, d) for e, d in zip(entries, digests))
    changed = [p.name for p in paths if _stat_key(p) != before[p]]
    if changed:
        raise ValueError(f"{', '.join(changed)} changed while being hashed; the digest would be of no single version")
    result = ModelDigest(digest=combine_tensor_digests([t.digest for t in tensors], format_version),
                         format_version=format_version, n_tensors=len(tensors),
                         n_parameters=sum(t.n_parameters for t in tensors),
                         n_bytes=sum(t.n_bytes for t in tensors), tensors=tensors, files=files)
    if use_cache:
        _write_cache(cache_path, result)
    return result
