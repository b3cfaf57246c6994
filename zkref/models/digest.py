"""Base-model digest: one Poseidon field element binding every tensor (name, dtype, shape, raw bytes) of a model.

Only `*.safetensors` files are read (their header is parsed here; tensor bytes are streamed), never pickles.
Format "zkref-model-digest/1" (specs/commitments.md):
    tensor elements = [len(name_utf8), name chunks…, dtype code, ndim, dims…, n_bytes, data chunks…]
    chunks          = the bytes cut into 31-byte pieces, each read little-endian (so < 2^248); the last may be short
    tensor digest   = poseidon_hash(tensor elements)
    model digest    = poseidon_hash([FORMAT_TAG, n_tensors, tensor digests… in name order])
Tensors are hashed in parallel (one task per tensor, largest first) with a rich progress bar on stderr, and the result
is cached beside the model in `zkref-digest.json`, keyed by each safetensors file's SHA-256 and the format version.
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
    "FORMAT_VERSION", "FORMAT_TAG", "CACHE_FILENAME", "BYTES_PER_ELEMENT", "DTYPE_CODES",
    "TensorDigest", "ModelDigest", "TensorEntry", "model_digest", "read_safetensors_header", "tensor_entries",
    "bytes_to_elements", "tensor_header_elements", "hash_tensor_bytes", "combine_tensor_digests",
]

FORMAT_VERSION = "zkref-model-digest/1"
FORMAT_TAG = int.from_bytes(FORMAT_VERSION.encode("ascii"), "little")
"""First element of the model-level hash: the format version's ASCII bytes read little-endian (< 2^248)."""
CACHE_FILENAME = "zkref-digest.json"
BYTES_PER_ELEMENT = 31
"""31 bytes = 248 bits < log2(p): every data chunk is a canonical field element, no reduction, no collisions."""
BLOCK_ELEMENTS = 4096
"""Elements hashed between reads/progress updates (~0.3 s of work)."""
MAX_HEADER_BYTES = 100 * 1024 * 1024
IN_PROCESS_BELOW = 50_000
"""With workers=None, models under this many elements (~4 s of hashing) skip the process pool (~1 s to start)."""

DTYPE_CODES: dict[str, tuple[int, int]] = {
    # safetensors dtype: (code hashed into the header, bytes per element)
    "BOOL": (1, 1), "U8": (2, 1), "I8": (3, 1), "F8_E5M2": (4, 1), "F8_E4M3": (5, 1),
    "I16": (6, 2), "U16": (7, 2), "F16": (8, 2), "BF16": (9, 2),
    "I32": (10, 4), "U32": (11, 4), "F32": (12, 4),
    "F64": (13, 8), "I64": (14, 8), "U64": (15, 8),
}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


# ----------------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorDigest:
    """One tensor's identity and Poseidon digest."""
    name: str
    dtype: str
    shape: tuple[int, ...]
    n_bytes: int
    digest: int

    @property
    def n_parameters(self) -> int:
        return math.prod(self.shape)


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
    """(file name, SHA-256 hex) of each safetensors file read, sorted by name (the cache key)."""
    from_cache: bool = field(default=False, compare=False)

    @property
    def hex(self) -> str:
        """The digest as 0x + 64 big-endian hex digits."""
        return f"0x{self.digest:064x}"

    @property
    def n_elements(self) -> int:
        """Field elements absorbed over all tensor sponges (data chunks and headers)."""
        return sum(_n_chunks(t.n_bytes) + len(tensor_header_elements(t.name, t.dtype, t.shape, t.n_bytes))
                   for t in self.tensors)

    def to_json(self) -> dict:
        return {
            "format_version": self.format_version,
            "digest": self.hex,
            "n_tensors": self.n_tensors,
            "n_parameters": self.n_parameters,
            "n_bytes": self.n_bytes,
            "files": {name: sha for name, sha in self.files},
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "n_bytes": t.n_bytes,
                         "digest": f"0x{t.digest:064x}"} for t in self.tensors],
        }

    @classmethod
    def from_json(cls, data: dict, *, from_cache: bool = False) -> ModelDigest:
        """Rebuild from `to_json` output; ValueError unless it is complete and internally consistent."""
        try:
            tensors = tuple(TensorDigest(str(t["name"]), str(t["dtype"]), tuple(int(d) for d in t["shape"]),
                                         int(t["n_bytes"]), _parse_hex_felt(t["digest"])) for t in data["tensors"])
            result = cls(digest=_parse_hex_felt(data["digest"]), format_version=str(data["format_version"]),
                         n_tensors=int(data["n_tensors"]), n_parameters=int(data["n_parameters"]),
                         n_bytes=int(data["n_bytes"]),
                         tensors=tensors, files=tuple(sorted((str(k), str(v)) for k, v in data["files"].items())),
                         from_cache=from_cache)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed model digest record: {e!r}") from e
        if result.format_version != FORMAT_VERSION:
            raise ValueError(f"digest format {result.format_version!r} is not {FORMAT_VERSION!r}")
        names = [t.name for t in tensors]
        if names != sorted(names) or len(set(names)) != len(names):
            raise ValueError("tensor records are not sorted by unique name")
        if (result.n_tensors != len(tensors) or result.n_bytes != sum(t.n_bytes for t in tensors)
                or result.n_parameters != sum(t.n_parameters for t in tensors)):
            raise ValueError("tensor counts do not match the tensor records")
        if any(t.dtype not in DTYPE_CODES or t.n_bytes != t.n_parameters * DTYPE_CODES[t.dtype][1] for t in tensors):
            raise ValueError("a tensor record has an unknown dtype or inconsistent byte count")
        if combine_tensor_digests([t.digest for t in tensors]) != result.digest:
            raise ValueError("model digest does not match its tensor digests")
        return result


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
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path.name}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ValueError(f"{path.name}: header length {n} is implausible for a {size}-byte file")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
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
    return entries


def _safetensors_files(model_dir: Path) -> list[Path]:
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
    entries = [e for path in _safetensors_files(Path(model_dir)) for e in read_safetensors_header(path)]
    entries.sort(key=lambda e: e.name)
    for a, b in zip(entries, entries[1:]):
        if a.name == b.name:
            raise ValueError(f"tensor {a.name!r} appears in both {a.path.name} and {b.path.name}")
    return entries


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
    """Tensor digest from its header elements and raw bytes held in memory (the streaming path gives the same)."""
    return poseidon_hash_fast(header + bytes_to_elements(data))


def combine_tensor_digests(digests: list[int]) -> int:
    """Model digest: poseidon_hash([FORMAT_TAG, n_tensors, digests… in tensor-name order])."""
    return poseidon_hash_fast([FORMAT_TAG, len(digests), *digests])


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


def _hash_all(entries: list[TensorEntry], workers: int, progress: bool) -> list[int]:
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


class _ProgressBar:
    """A rich progress bar on stderr counting hashed field elements (no-op when disabled)."""

    def __init__(self, total: int, enabled: bool):
        self._progress = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._progress = Progress(TextColumn("model digest"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("elements"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=Console(file=sys.stderr), transient=False)
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

def _load_cache(cache_path: Path, files: tuple[tuple[str, str], ...]) -> ModelDigest | None:
    try:
        data = json.loads(cache_path.read_text(encoding="utf-8"))
        cached = ModelDigest.from_json(data, from_cache=True)
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # missing, corrupt or from another format: recompute and rewrite
    return cached if cached.files == files else None


def _write_cache(cache_path: Path, result: ModelDigest) -> None:
    tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, cache_path)
    except OSError as e:  # read-only model directory: the digest is still valid, only not cached
        print(f"zkref: could not write digest cache {cache_path}: {e}", file=sys.stderr)
        tmp.unlink(missing_ok=True)


def model_digest(model_dir: str | os.PathLike, *, progress: bool = True, use_cache: bool = True,
                 workers: int | None = None) -> ModelDigest:
    """Digest every tensor of the `*.safetensors` files in `model_dir` (format "zkref-model-digest/1").

    workers: processes hashing tensors in parallel (None: one per CPU, or in-process for tiny models).
    use_cache: reuse/refresh `zkref-digest.json` beside the model when every file's SHA-256 still matches.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    model_dir = Path(model_dir)
    paths = _safetensors_files(model_dir)
    files = tuple(sorted((p.name, _sha256(p)) for p in paths))
    cache_path = model_dir / CACHE_FILENAME
    if use_cache and (cached := _load_cache(cache_path, files)) is not None:
        return cached
    entries = tensor_entries(model_dir)
    if workers is None:
        total = sum(_n_chunks(e.n_bytes) for e in entries)
        workers = 1 if total < IN_PROCESS_BELOW else os.cpu_count() or 1
    digests = _hash_all(entries, max(1, min(workers, len(entries))), progress)
    tensors = tuple(TensorDigest(e.name, e.dtype, e.shape, e.n_bytes, d) for e, d in zip(entries, digests))
    result = ModelDigest(digest=combine_tensor_digests(digests), format_version=FORMAT_VERSION,
                         n_tensors=len(tensors), n_parameters=sum(t.n_parameters for t in tensors),
                         n_bytes=sum(t.n_bytes for t in tensors), tensors=tensors, files=files)
    if use_cache:
        _write_cache(cache_path, result)
    return result
