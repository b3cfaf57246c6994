"""The proof bundle: one directory holding a statement, its public values and a backend's proof — or several modules
of one call, proven as one batch proof or one proof per module (specs/proof-bundle.md).

Written atomically (a temporary sibling directory renamed into place; an existing non-empty directory is never
overwritten) and read strictly: every file is size-bounded before it is read, every JSON object has exactly its keys,
and nothing is ever unpickled. The three kinds share one encoding of a proof (`_proof_files` / `_read_proof`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from backends.base import (MAX_PROOF_BYTES, AdapterAnchor, BatchProofResult, Proof, ProofResult, canonical_json,
                           sha256_hex)
from zkref.lora.batch import MAX_MEMBERS, LoRABatch
from zkref.lora.statement import LoRAPublic, LoRAStatement
from zkref.primitives.field import felt_from_str, felt_to_str

FORMAT = "zkref-proof-bundle/1"
"""One statement's proof."""
BATCH_FORMAT = "zkref-batch-bundle/1"
"""Several modules of one call, proven as one `LoRABatch` proof."""
MODULES_FORMAT = "zkref-modules-bundle/1"
"""Several modules of one call, one proof per module: a manifest and one `FORMAT` bundle per module."""
FILES = ("bundle.json", "statement.json", "public.json", "proof.bin", "vk.bin", "settings.json", "anchor.json")
BATCH_FILES = ("bundle.json", "batch.json", "public.json", "proof.bin", "vk.bin", "settings.json", "anchor.json")
MAX_JSON_BYTES = 256 << 20
"""public.json of the largest supported statement (T·d values of a few characters each) stays far below this."""
MAX_MODULES_BUNDLE_BYTES = 1 << 30
"""A per-module bundle's sub-bundles together (checked before each is read): 64 modules of the largest statements
stay far below this."""
MAX_REASON_CHARS = 1000
_PROOF_KEYS = frozenset({"format", "backend", "statement_id", "zero_knowledge", "instances", "vk_hash",
                         "proof_sha256", "commitments", "meta"})
_MODULES_KEYS = frozenset({"format", "backend", "batch_id", "proving", "modules", "meta"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, eq=False)
class Bundle:
    """A bundle as read back: what the verifier needs, and the prover's claimed anchor and metadata."""

    statement: LoRAStatement
    public: LoRAPublic
    proof: Proof
    anchor: AdapterAnchor
    meta: dict
    tampered: str | None = None
    """Why proof.bin is not the file bundle.json recorded (its SHA-256 differs), or None: the proof is then invalid,
    not unreadable (a verifier says so, exit 1)."""


@dataclass(frozen=True, eq=False)
class BatchBundle:
    """A batch bundle as read back: the batch, every member's public values (member order), the one proof, the
    prover's claimed batch anchor, why one batch proof was chosen, and the metadata."""

    batch: LoRABatch
    publics: tuple[LoRAPublic, ...]
    proof: Proof
    anchor: AdapterAnchor
    reason: str
    meta: dict
    tampered: str | None = None
    """As `Bundle.tampered`."""


@dataclass(frozen=True, eq=False)
class ModulesBundle:
    """A per-module bundle as read back: the modules (as the batch they were not proven as: names, statements, order),
    each module's own bundle, why one proof per module was chosen, and the metadata."""

    batch: LoRABatch
    backend: str
    modules: tuple[Bundle, ...]
    reason: str
    meta: dict


@dataclass(frozen=True, eq=False)
class ModuleProof:
    """One module proven alone, to be written as one sub-bundle of a per-module bundle."""

    name: str
    statement: LoRAStatement
    result: ProofResult
    anchor: AdapterAnchor
    meta: dict


def module_path(index: int, name: str) -> str:
    """Where module `index` of a per-module bundle lives: derived from its name, never read from the bundle."""
    return f"modules/{index}-{_UNSAFE.sub('_', name)[:100]}"


# ------------------------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------------------------
def _proof_files(fmt: str, statement_id: str, proof: Proof, timings: dict[str, float], anchor: AdapterAnchor,
                 meta: dict, **extra: object) -> dict[str, bytes]:
    """bundle.json (the header: the proof's fields and `extra`), proof.bin, vk.bin, settings.json, anchor.json."""
    header = {"format": fmt, "backend": proof.backend, "statement_id": statement_id,
              "zero_knowledge": proof.zero_knowledge, "instances": [felt_to_str(v) for v in proof.instances],
              "vk_hash": proof.vk_hash, "proof_sha256": sha256_hex(proof.data), "commitments": proof.commitments,
              "meta": meta | {"proof_meta": proof.meta, "timings": timings}} | extra
    return {"bundle.json": canonical_json(header), "proof.bin": proof.data, "vk.bin": proof.vk,
            "settings.json": canonical_json(proof.settings), "anchor.json": canonical_json(anchor.to_json())}


def _single_files(statement: LoRAStatement, result: ProofResult, anchor: AdapterAnchor,
                  meta: dict) -> dict[str, bytes]:
    return _proof_files(FORMAT, statement.id, result.proof, result.timings, anchor, meta) | {
        "statement.json": canonical_json(statement.canonical() | {"id": statement.id}),
        "public.json": canonical_json(result.public.to_json())}


def check_target(directory: str | Path) -> Path:
    """Where a bundle may be written: a directory that does not exist or is empty, in an existing directory (parents
    are never created). ValueError otherwise; checked before proving and again when the bundle is written."""
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{target} exists and is not an empty directory: refusing to overwrite it")
    if not target.parent.is_dir():
        raise ValueError(f"{target.parent} is not an existing directory: create it first (parents are never "
                         "created)")
    return target


def _commit(directory: str | Path, files: Mapping[str, bytes]) -> Path:
    """Stage `files` (relative paths) in a temporary sibling directory and rename it to `directory`."""
    target = check_target(directory)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def write_bundle(directory: str | Path, statement: LoRAStatement, result: ProofResult, anchor: AdapterAnchor,
                 meta: dict) -> Path:
    """Write one statement's bundle to `directory` (which must not exist or be empty); returns its path."""
    return _commit(directory, _single_files(statement, result, anchor, meta))


def write_batch_bundle(directory: str | Path, batch: LoRABatch, result: BatchProofResult, anchor: AdapterAnchor,
                       reason: str, meta: dict) -> Path:
    """Write a batch proof of several modules: the batch, each member's public values, the proof, the batch anchor
    and why one batch proof was chosen."""
    publics = [{"name": n, "public": p.to_json()} for n, p in zip(batch.names, result.publics, strict=True)]
    files = _proof_files(BATCH_FORMAT, batch.id, result.proof, result.timings, anchor, meta,
                         proving={"batch": True, "reason": reason})
    return _commit(directory, files | {"batch.json": canonical_json(batch.canonical() | {"id": batch.id}),
                                       "public.json": canonical_json(publics)})


def write_modules_bundle(directory: str | Path, modules: Sequence[ModuleProof], reason: str, meta: dict) -> Path:
    """Write one proof per module: a manifest (the modules, the proving choice and its reason) and each module's own
    bundle under `module_path`."""
    batch = LoRABatch.of([(m.name, m.statement) for m in modules])
    backends = {m.result.proof.backend for m in modules}
    if len(backends) != 1:
        raise ValueError(f"the modules were proven by different backends: {', '.join(sorted(backends))}")
    manifest = {"format": MODULES_FORMAT, "backend": backends.pop(), "batch_id": batch.id,
                "proving": {"batch": False, "reason": reason}, "meta": meta,
                "modules": [{"name": m.name, "statement_id": m.statement.id, "path": module_path(i, m.name)}
                            for i, m in enumerate(modules)]}
    files = {"bundle.json": canonical_json(manifest)}
    for i, m in enumerate(modules):
        sub = _single_files(m.statement, m.result, m.anchor, m.meta)
        files |= {f"{module_path(i, m.name)}/{name}": data for name, data in sub.items()}
    return _commit(directory, files)


# ------------------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------------------
def _read(directory: Path, name: str, limit: int) -> bytes:
    path = directory / name
    if path.is_symlink():
        raise ValueError(f"{path}: a symbolic link (a bundle's files are read only from inside it)")
    if not path.is_file():
        raise ValueError(f"{directory}: {name} is missing (not a proof bundle?)")
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"{path}: {size:,} bytes is more than the {limit:,} allowed")
    return path.read_bytes()


def _json(directory: Path, name: str) -> object:
    try:
        return json.loads(_read(directory, name, MAX_JSON_BYTES))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{directory / name}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


def _check_keys(d: Path, header: object, keys: frozenset[str], fmt: str) -> dict:
    if not isinstance(header, dict) or set(header) != keys:
        raise ValueError(f"{d / 'bundle.json'}: expected keys {', '.join(sorted(keys))}")
    if header["format"] != fmt:
        raise ValueError(f"{d}: bundle format {header['format']!r} is not {fmt!r}")
    return header


_Identified = TypeVar("_Identified", LoRAStatement, LoRABatch)


def _with_id(d: Path, name: str, decode: Callable[[object], _Identified], header: dict) -> _Identified:
    """Decode a canonical encoding stored with its id; the id must be the one recomputed and the header's."""
    doc = _json(d, name)
    if not isinstance(doc, dict) or "id" not in doc:
        raise ValueError(f"{d / name}: expected the canonical encoding and its id")
    claimed_id = doc.pop("id")
    value = decode(doc)
    if value.id != claimed_id or header["statement_id"] != claimed_id:
        raise ValueError(f"{d}: statement id {claimed_id!r} does not match the statement ({value.id})")
    return value


def _proving_reason(d: Path, proving: object, batch: bool) -> str:
    if not isinstance(proving, dict) or set(proving) != {"batch", "reason"} or proving["batch"] is not batch \
            or not isinstance(proving["reason"], str) or len(proving["reason"]) > MAX_REASON_CHARS:
        raise ValueError(f"{d / 'bundle.json'}: proving must be {{batch: {str(batch).lower()}, reason: a short "
                         "string}}")
    return proving["reason"]


def _read_proof(d: Path, header: dict) -> tuple[Proof, AdapterAnchor, str | None]:
    """The proof, the prover's anchor, and why the proof's bytes are not the ones bundle.json recorded (None when
    their SHA-256 matches)."""
    if not isinstance(header["instances"], list) or not all(isinstance(v, str) for v in header["instances"]):
        raise ValueError(f"{d / 'bundle.json'}: instances must be a list of felt strings")
    data = _read(d, "proof.bin", MAX_PROOF_BYTES)
    tampered = None if sha256_hex(data) == header["proof_sha256"] else \
        f"{d / 'proof.bin'} was modified: its SHA-256 is not the one recorded in bundle.json"
    settings = _json(d, "settings.json")
    commitments = header["commitments"]
    if not isinstance(settings, dict) or not isinstance(commitments, dict) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in commitments.items()):
        raise ValueError(f"{d}: settings and commitments must be JSON objects (commitments of strings)")
    for name in ("backend", "vk_hash"):
        if header[name] is not None and not isinstance(header[name], str):
            raise ValueError(f"{d / 'bundle.json'}: {name} must be a string")
    try:
        instances = tuple(felt_from_str(v) for v in header["instances"])
    except ValueError as exc:
        raise ValueError(f"{d / 'bundle.json'}: {exc}") from None
    proof = Proof(backend=header["backend"], statement_id=header["statement_id"], instances=instances, data=data,
                  zero_knowledge=bool(header["zero_knowledge"]), vk=_read(d, "vk.bin", MAX_PROOF_BYTES),
                  vk_hash=header["vk_hash"], settings=settings, commitments=commitments,
                  meta=header["meta"] if isinstance(header["meta"], dict) else {})
    return proof, AdapterAnchor.from_json(_json(d, "anchor.json")), tampered


def _decode_single(d: Path, header: object) -> Bundle:
    header = _check_keys(d, header, _PROOF_KEYS, FORMAT)
    statement = _with_id(d, "statement.json", LoRAStatement.from_canonical, header)
    public = LoRAPublic.from_json(statement, _json(d, "public.json"))
    proof, anchor, tampered = _read_proof(d, header)
    return Bundle(statement, public, proof, anchor, proof.meta, tampered)


def _decode_batch(d: Path, header: object) -> BatchBundle:
    header = _check_keys(d, header, _PROOF_KEYS | {"proving"}, BATCH_FORMAT)
    reason = _proving_reason(d, header["proving"], True)
    batch = _with_id(d, "batch.json", LoRABatch.from_canonical, header)
    doc = _json(d, "public.json")
    if not isinstance(doc, list) or len(doc) != len(batch.members) \
            or not all(isinstance(e, dict) and set(e) == {"name", "public"} for e in doc):
        raise ValueError(f"{d / 'public.json'}: expected one {{name, public}} object per batch member, in order")
    publics = []
    for entry, name, statement in zip(doc, batch.names, batch.members):
        if entry["name"] != name:
            raise ValueError(f"{d / 'public.json'}: member {str(entry['name'])[:60]!r} where the batch has {name!r}")
        try:
            publics.append(LoRAPublic.from_json(statement, entry["public"]))
        except ValueError as exc:
            raise ValueError(f"{d / 'public.json'}: member {name}: {exc}") from None
    proof, anchor, tampered = _read_proof(d, header)
    return BatchBundle(batch, tuple(publics), proof, anchor, reason, proof.meta, tampered)


def _decode_modules(d: Path, header: object) -> ModulesBundle:
    header = _check_keys(d, header, _MODULES_KEYS, MODULES_FORMAT)
    reason = _proving_reason(d, header["proving"], False)
    entries = header["modules"]
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_MEMBERS or not all(
            isinstance(e, dict) and set(e) == {"name", "statement_id", "path"} and isinstance(e["name"], str)
            for e in entries):
        raise ValueError(f"{d / 'bundle.json'}: modules must be 1..{MAX_MEMBERS} objects with name, statement_id, "
                         "path")
    if not isinstance(header["backend"], str) or not isinstance(header["meta"], dict):
        raise ValueError(f"{d / 'bundle.json'}: backend must be a string and meta an object")
    modules, total = [], 0
    for i, entry in enumerate(entries):
        path = module_path(i, entry["name"])
        if entry["path"] != path:
            raise ValueError(f"{d / 'bundle.json'}: module {i} must be at {path!r}, not {str(entry['path'])[:80]!r}")
        if (d / path).is_symlink() or (d / "modules").is_symlink():
            raise ValueError(f"{d / path}: a symbolic link (a bundle's files are read only from inside it)")
        total += sum(f.stat().st_size for f in (d / path).iterdir() if f.name in FILES and f.is_file()) \
            if (d / path).is_dir() else 0
        if total > MAX_MODULES_BUNDLE_BYTES:
            raise ValueError(f"{d}: the module bundles hold more than {MAX_MODULES_BUNDLE_BYTES:,} bytes")
        sub = read_bundle(d / path)
        if sub.statement.id != entry["statement_id"] or sub.proof.backend != header["backend"]:
            raise ValueError(f"{d / path}: its statement or backend is not the one the manifest names")
        modules.append(sub)
    batch = LoRABatch(tuple(e["name"] for e in entries), tuple(m.statement for m in modules))
    if batch.id != header["batch_id"]:
        raise ValueError(f"{d / 'bundle.json'}: batch id {str(header['batch_id'])[:40]!r} does not match the "
                         f"modules ({batch.id})")
    return ModulesBundle(batch, header["backend"], tuple(modules), reason, header["meta"])


_DECODERS: dict[str, Callable[[Path, object], Bundle | BatchBundle | ModulesBundle]] = {
    FORMAT: _decode_single, BATCH_FORMAT: _decode_batch, MODULES_FORMAT: _decode_modules}


def _directory(directory: str | Path) -> Path:
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"{d}: no such bundle directory")
    return d


def read_bundle(directory: str | Path) -> Bundle:
    """Read and validate one statement's bundle; ValueError with the reason if anything is malformed."""
    d = _directory(directory)
    return _decode_single(d, _json(d, "bundle.json"))


def read_any_bundle(directory: str | Path) -> Bundle | BatchBundle | ModulesBundle:
    """Read and validate a bundle of any kind (by its format); ValueError with the reason if anything is malformed."""
    d = _directory(directory)
    header = _json(d, "bundle.json")
    fmt = header.get("format") if isinstance(header, dict) else None
    if not isinstance(fmt, str):
        return _decode_single(d, header)                       # says which keys a bundle.json must have
    if fmt not in _DECODERS:
        raise ValueError(f"{d}: bundle format {fmt[:60]!r} is not one of {', '.join(_DECODERS)}")
    return _DECODERS[fmt](d, header)
