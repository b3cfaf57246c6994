"""The EZKL backend's cache: SRS files per k and compiled circuits with their keys, safe under concurrent use.

Layout under the cache root (`ZKREF_CACHE`, else `$XDG_CACHE_HOME/zkref`, else `~/.cache/zkref`)::

    ezkl/srs/dev-k{k}.srs                                   development SRS from ezkl.gen_srs (INSECURE)
    ezkl/circuits/{statement id}/{adapter key}/             model.onnx, settings.json, model.compiled, manifest.json
    ezkl/circuits/{statement id}/{adapter key}/keys-{srs}/  vk.key, pk.key, manifest.json

Concurrency rule: an entry is built in a private temporary sibling and renamed into place (rename is atomic), so a
visible entry is always complete; building is serialised by an exclusive `fcntl` lock on `{entry}.lock`, so two
processes preparing the same entry do the work once and never write the same file. Every entry carries a manifest
(size and SHA-256 of each file), checked before use: a corrupted entry is an error naming the file, never a silent
wrong proof.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from backends.kzg import TWO_ADICITY, srs_file_size

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
_DEV_SRS_WARNED = False
_VERIFIED: dict[tuple[str, int, int], str] = {}
"""Files already hashed in this process: (path, size, mtime_ns) → SHA-256, so warm runs do not rehash proving keys."""


class CacheError(RuntimeError):
    """A cache entry is unusable (corrupted, truncated or foreign); the message names it and how to recover."""


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """The cache root: `explicit`, else $ZKREF_CACHE, else $XDG_CACHE_HOME/zkref, else ~/.cache/zkref."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get("ZKREF_CACHE"):
        return Path(os.environ["ZKREF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "zkref"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path`.lock for the duration (blocks until free)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, memoised per process by path, size and modification time."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]


def write_manifest(directory: Path, extra: dict | None = None) -> None:
    """Record size and SHA-256 of every file in `directory` (and `extra` metadata)."""
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps({"files": files, "meta": extra or {}}, sort_keys=True, indent=1))


def check_manifest(directory: Path, required: tuple[str, ...]) -> dict:
    """The manifest's metadata, after checking every listed file's size and hash; CacheError otherwise."""
    path = directory / MANIFEST
    hint = f"delete {directory} to rebuild it"
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise CacheError(f"cache manifest {path} is too large; {hint}")
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(f"cache manifest {path} is unreadable ({exc}); {hint}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not set(required) <= set(files):
        raise CacheError(f"cache manifest {path} does not list {', '.join(required)}; {hint}")
    for name, info in files.items():
        file = directory / name
        if not isinstance(info, dict) or not file.is_file():
            raise CacheError(f"cache file {file} is missing; {hint}")
        if file.stat().st_size != info.get("size") or sha256_file(file) != info.get("sha256"):
            raise CacheError(f"cache file {file} is corrupted (size or SHA-256 differs from its manifest); {hint}")
    meta = manifest.get("meta")
    return meta if isinstance(meta, dict) else {}


def remove_stale(directory: Path, prefix: str) -> None:
    """Delete temporaries named `prefix`… in `directory`: called under the lock of the entry they were building, so
    any found was left by a process that died mid-build (a Rust abort or SIGKILL runs no cleanup)."""
    for stale in directory.glob(f"{glob.escape(prefix)}*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def build_entry(final: Path, required: tuple[str, ...], build: Callable[[Path], dict]) -> tuple[dict, bool]:
    """The checked metadata of the cache entry `final`, building it first if absent: `build(tmpdir)` fills a private
    directory and returns metadata; the directory is renamed to `final` under the entry's lock. The directory is
    removed whatever `build` raises (EZKL's Rust panics are BaseExceptions), and one left by a process that died is
    removed before the next build of the same entry.

    Returns (metadata, built_now).
    """
    if (final / MANIFEST).exists():
        return check_manifest(final, required), False
    with locked(final):
        if (final / MANIFEST).exists():            # another process finished it while we waited
            return check_manifest(final, required), False
        if final.exists():                           # an incomplete entry cannot be visible; a foreign one is moved
            shutil.rmtree(final)
        remove_stale(final.parent, f".{final.name}.tmp-")
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            meta = build(tmp)
            write_manifest(tmp, meta)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return check_manifest(final, required), True


# ----------------------------------------------------------------------------------------------------------------------
# SRS files
# ----------------------------------------------------------------------------------------------------------------------

def srs_header_k(path: Path) -> int:
    """k of a RawBytes SRS file (as ezkl.gen_srs writes it), after checking its exact length; ValueError otherwise."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            header = f.read(4)
    except OSError as exc:
        raise ValueError(f"SRS file {path} cannot be read: {exc}") from None
    if len(header) != 4:
        raise ValueError(f"SRS file {path} is too short to be an SRS")
    k = int.from_bytes(header, "little")
    if not 1 <= k <= TWO_ADICITY:
        raise ValueError(f"SRS file {path} is not an SRS (header k = {k})")
    if size != srs_file_size(k):
        raise ValueError(f"SRS file {path} has {size} bytes; an SRS for k = {k} has {srs_file_size(k)}")
    return k


def warn_dev_srs(stream=None) -> None:
    """Say, once per process and loudly, that a development SRS is in use."""
    global _DEV_SRS_WARNED
    if _DEV_SRS_WARNED:
        return
    _DEV_SRS_WARNED = True
    bar = "!" * 100
    print(f"{bar}\n!! zkref/ezkl: using a DEVELOPMENT SRS made locally by ezkl.gen_srs. Its secret (toxic waste) is "
          f"known to this\n!! machine: proofs made with it prove NOTHING to anyone else. For real proofs pass a "
          f"ceremony SRS\n!! (EzklBackend(srs=PATH), zkref prove --srs FILE).\n{bar}", file=stream or sys.stderr,
          flush=True)


def dev_srs(root: Path, k: int) -> Path:
    """The cached development SRS for 2^k rows, generated (under lock, atomically) if absent. INSECURE."""
    import ezkl

    warn_dev_srs()
    path = root / "srs" / f"dev-k{k}.srs"
    if not path.exists():
        with locked(path):
            if not path.exists():
                remove_stale(path.parent, f".dev-k{k}.")
                fd, tmp = tempfile.mkstemp(prefix=f".dev-k{k}.", suffix=".tmp", dir=path.parent)
                os.close(fd)
                try:
                    ezkl.gen_srs(tmp, k)
                    if srs_header_k(Path(tmp)) != k:
                        raise CacheError(f"ezkl.gen_srs wrote an SRS for another k into {tmp}")
                    os.rename(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
    try:
        found = srs_header_k(path)
    except ValueError as exc:
        raise CacheError(f"{exc}; delete {path} to regenerate it") from None
    if found != k:
        raise CacheError(f"{path} holds an SRS for k = {found}, not {k}; delete it to regenerate it")
    return path
